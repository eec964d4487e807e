"""Oracle test of the whole graph -> energy -> autograd pipeline: mlpot's Lennard-Jones
equals ``ase.calculators.lj.LennardJones`` term for term (energy, per-atom energies,
forces, stress) in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron

from mlpot.data.graph import atoms_to_graph, collate
from mlpot.models.registry import build_model
from mlpot.physics.derivatives import predict

SIGMA, EPSILON = 3.4, 0.0104  # argon, Å and eV
A_FCC = 5.26
RTOL = 1e-10


@pytest.fixture(scope="module", autouse=True)
def _single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _sheared(atoms: Atoms, seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    deformation = np.eye(3) + rng.uniform(-0.06, 0.06, (3, 3))
    atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    atoms.positions += rng.normal(scale=0.12, size=atoms.positions.shape)
    return atoms


def structures() -> dict[str, Atoms]:
    rng = np.random.default_rng(3)
    cluster = Icosahedron("Ar", noshells=2, latticeconstant=A_FCC)  # 13 atoms
    cluster.positions += rng.normal(scale=0.1, size=cluster.positions.shape)
    cluster.pbc = False
    return {
        # 32 atoms, cell ~10.5 Å < 2 r_c: rc exceeds half the cell
        "bulk": _sheared(bulk("Ar", "fcc", a=A_FCC, cubic=True).repeat(2), seed=1),
        # 4 atoms, cell ~5.3 Å < r_c: many images of every atom
        "small": _sheared(bulk("Ar", "fcc", a=A_FCC, cubic=True), seed=2),
        # 1 atom in a primitive cell (only self-images)
        "primitive": _sheared(bulk("Ar", "fcc", a=A_FCC), seed=4),
        # compressed: several pairs inside the repulsive wall
        "dense": _sheared(bulk("Ar", "fcc", a=0.93 * A_FCC, cubic=True).repeat((2, 1, 1)), 5),
        "cluster": cluster,
    }


PARAMETERS = [
    pytest.param(dict(rc=8.0, ro=None, smooth=False), id="shifted"),
    pytest.param(dict(rc=8.0, ro=None, smooth=True), id="smooth-default-onset"),
    pytest.param(dict(rc=7.5, ro=6.0, smooth=True), id="smooth-onset-6"),
    pytest.param(dict(rc=None, ro=None, smooth=False), id="default-cutoff"),
]


def ase_and_mlpot(parameters):
    rc, ro, smooth = parameters["rc"], parameters["ro"], parameters["smooth"]
    ase_kwargs = dict(sigma=SIGMA, epsilon=EPSILON, smooth=smooth)
    spec = {"name": "lj", "elements": [18], "sigma": SIGMA, "epsilon": EPSILON, "smooth": smooth}
    if rc is not None:
        ase_kwargs["rc"], spec["cutoff"] = rc, rc
    if ro is not None:
        ase_kwargs["ro"], spec["onset"] = ro, ro
    return LennardJones(**ase_kwargs), build_model(spec).double()


@pytest.mark.parametrize("parameters", PARAMETERS)
@pytest.mark.parametrize("name", ["bulk", "small", "primitive", "dense", "cluster"])
def test_lennard_jones_equals_ase(parameters, name):
    atoms = structures()[name]
    calc, model = ase_and_mlpot(parameters)
    periodic = atoms.pbc.all()

    graph = atoms_to_graph(atoms, model.cutoff)
    out = predict(model, graph, forces=True, stress=bool(periodic))
    atoms.calc = calc
    e_ref = atoms.get_potential_energy()
    f_ref = atoms.get_forces()

    assert abs(e_ref) > 1e-3, "trivial structure"
    if len(atoms) > 1:  # (a lone atom in a cell feels no force by symmetry)
        assert np.abs(f_ref).max() > 1e-3, "trivial structure"
    energy = float(out["energy"].detach()[0])
    assert energy == pytest.approx(e_ref, rel=RTOL, abs=1e-12)
    np.testing.assert_allclose(
        out["local_energies"].detach().numpy(),
        atoms.get_potential_energies(),
        rtol=0,
        atol=RTOL * np.abs(atoms.get_potential_energies()).max(),
    )
    np.testing.assert_allclose(
        out["forces"].detach().numpy(), f_ref, rtol=0, atol=RTOL * max(np.abs(f_ref).max(), 1e-3)
    )
    if periodic:
        s_ref = atoms.get_stress(voigt=False)
        assert np.abs(s_ref).max() > 1e-7
        np.testing.assert_allclose(
            out["stress"].detach().numpy()[0], s_ref, rtol=0, atol=RTOL * np.abs(s_ref).max()
        )


@pytest.mark.parametrize("smooth", [False, True])
def test_lennard_jones_batch_equals_ase(smooth):
    """All structures in one batch: each one still equals ASE."""
    calc, model = ase_and_mlpot(dict(rc=8.0, ro=None, smooth=smooth))
    frames = list(structures().values())
    batch = collate([atoms_to_graph(atoms, model.cutoff) for atoms in frames])
    out = predict(model, batch, forces=True, stress=True)
    energies = out["energy"].detach().numpy()
    forces = out["forces"].detach().numpy()
    stress = out["stress"].detach().numpy()
    start = 0
    for k, atoms in enumerate(frames):
        atoms.calc = calc
        assert energies[k] == pytest.approx(atoms.get_potential_energy(), rel=RTOL)
        f_ref = atoms.get_forces()
        np.testing.assert_allclose(
            forces[start : start + len(atoms)],
            f_ref,
            rtol=0,
            atol=RTOL * max(np.abs(f_ref).max(), 1e-3),
        )
        start += len(atoms)
        if atoms.pbc.all():
            s_ref = atoms.get_stress(voigt=False)
            np.testing.assert_allclose(stress[k], s_ref, rtol=0, atol=RTOL * np.abs(s_ref).max())
        else:
            assert np.all(stress[k] == 0.0)


@pytest.mark.parametrize("smooth", [False, True])
def test_lennard_jones_dimer_curve_equals_ase(smooth):
    """A dimer scanned through the onset and across the cutoff, against ASE."""
    calc, model = ase_and_mlpot(dict(rc=8.0, ro=None, smooth=smooth))
    for r in np.concatenate([np.linspace(3.0, 7.99, 41), [8.0 - 1e-9, 8.0 + 1e-9, 9.0]]):
        atoms = Atoms("Ar2", positions=[[0.0, 0.0, 0.0], [r * 0.6, r * 0.8, 0.0]])
        out = predict(model, atoms_to_graph(atoms, model.cutoff))
        atoms.calc = calc
        e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
        assert float(out["energy"].detach()[0]) == pytest.approx(e_ref, rel=RTOL, abs=1e-15)
        np.testing.assert_allclose(out["forces"].detach().numpy(), f_ref, rtol=RTOL, atol=1e-15)
