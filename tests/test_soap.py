"""SOAP descriptors (featomic) for the Behler–Parrinello network: physics, layout, config,
checkpoints, training gradients and domain features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc111, molecule
from test_conformance_models import fitted

from mlpot.data.graph import atoms_to_graph, collate
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_model, save_model
from mlpot.models.registry import build_model
from mlpot.physics.derivatives import predict
from mlpot.testing import PhysicsConformance
from mlpot.uncertainty.domain import fit_domain

pytest.importorskip("featomic.torch")

from mlpot.nn.soap import SOAP  # noqa: E402

CU, AG = 29, 47
SOAP_SPEC = {
    "name": "bpnn",
    "elements": [CU, AG],
    "cutoff": 4.5,
    "hidden": [16, 16],
    "descriptor": "soap",
    "soap": {"max_radial": 2, "max_angular": 3},
}


class TestBehlerParrinelloSoap(PhysicsConformance):
    """The whole conformance suite, periodic cells (bulk, a cell smaller than the cutoff,
    a slab periodic in two directions) included: forces and stress are exact gradients
    through featomic's descriptor derivatives."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(0)
        model = build_model(SOAP_SPEC).double()
        return fitted(model, self.make_structures(model), seed=1)


def test_feature_layout_keeps_one_triangle_of_same_species_pairs():
    """Columns: pairs (H,H), (H,C), ..., (O,O); a same-species pair keeps n₁ ≤ n₂ of the
    symmetric power spectrum, a cross pair every (n₁, n₂); columns of neighbour species
    absent around an atom are zero."""
    soap = SOAP([1, 6, 8], 4.0, max_radial=2, max_angular=1)
    widths = {(1, 1): 12, (1, 6): 18, (1, 8): 18, (6, 6): 12, (6, 8): 18, (8, 8): 12}
    assert soap.pairs == list(widths) and soap.pair_widths == list(widths.values())
    assert soap.n_features == 90
    water = molecule("H2O")
    features = soap(atoms_to_graph(water, 4.0))  # (3, 90)
    starts = np.cumsum([0, *widths.values()])
    present = {(1, 1), (1, 8), (8, 8)}  # only H and O in water
    for k, pair in enumerate(widths):
        block = features[:, starts[k] : starts[k + 1]]
        assert bool((block != 0).any()) == (pair in present), pair


def test_batched_structures_and_partly_periodic_cells():
    """A batch equals its structures one by one; a slab periodic along a and b only has the
    features of the same slab in a fully periodic cell with a vacuum wider than the
    cutoff."""
    soap = SOAP([CU], 4.0)
    slab = fcc111("Cu", size=(2, 2, 3), a=3.6, vacuum=3.0, periodic=False)
    slab.pbc = (True, True, False)
    slab.rattle(0.05, seed=1)
    boxed = slab.copy()
    boxed.cell[2] = [0.0, 0.0, 40.0]
    boxed.pbc = True
    cluster = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]])
    graphs = [atoms_to_graph(a, 4.0) for a in (slab, boxed, cluster)]
    single = [soap(g) for g in graphs]
    torch.testing.assert_close(single[0], single[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(soap(collate(graphs)), torch.cat(single), rtol=0, atol=1e-12)


def test_soap_config_is_validated_and_acsf_config_unchanged():
    acsf = build_model({"name": "bpnn", "elements": [CU], "cutoff": 4.0})
    assert "descriptor" not in acsf.config() and "soap" not in acsf.config()
    soap = build_model({"name": "bpnn", "elements": [CU], "cutoff": 4.0, "descriptor": "soap"})
    assert soap.config()["soap"]["max_radial"] == 3 and soap.n_features == 40
    bad = [
        {"descriptor": "soap", "soap": {"max_radial": -1}},
        {"descriptor": "soap", "soap": {"max_radials": 4}},
        {"descriptor": "soap", "soap": {"smoothing_width": 9.0}},
        {"descriptor": "mace"},
        {"soap": {"max_radial": 2}},
    ]
    for extra in bad:
        with pytest.raises(MlpotInputError):
            build_model({"name": "bpnn", "elements": [CU], "cutoff": 4.0, **extra})


def test_soap_model_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(2)
    model = build_model(SOAP_SPEC).double()
    atoms = fcc111("Cu", size=(2, 2, 2), a=3.7, vacuum=4.0, periodic=True)
    atoms.numbers[::3] = AG
    atoms.rattle(0.05, seed=4)
    graph = atoms_to_graph(atoms, model.cutoff)
    model.fit_statistics([graph])
    save_model(tmp_path / "soap.pt", model)
    loaded = load_model(tmp_path / "soap.pt")
    assert loaded.config() == model.config()
    expected = predict(model, graph, forces=True, stress=True)
    again = predict(loaded, graph, forces=True, stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(again[key], expected[key], rtol=0, atol=1e-12)


def test_force_and_stress_loss_gradients_match_finite_differences():
    """Training differentiates a loss on forces and stress with respect to the weights:
    featomic's backward of the descriptor gradients (double backward) must be exact."""
    torch.manual_seed(0)
    model = build_model({**SOAP_SPEC, "elements": [CU], "hidden": [8]}).double()
    atoms = fcc111("Cu", size=(2, 2, 2), a=3.7, vacuum=4.0, periodic=True)
    atoms.rattle(0.1, seed=2)
    graph = atoms_to_graph(atoms, model.cutoff)
    target = torch.randn(len(atoms), 3, dtype=torch.float64, generator=torch.Generator())

    def loss():
        out = predict(model, graph, forces=True, stress=True, create_graph=True)
        return ((out["forces"] - target) ** 2).sum() + 100 * (out["stress"] ** 2).sum()

    weight = model.networks[0][0].weight
    (grad,) = torch.autograd.grad(loss(), weight)
    step = 1e-6
    for index in [(0, 0), (3, 5), (7, 20)]:
        losses = []
        for shift in (step, -2 * step, step):
            with torch.no_grad():
                weight[index] += shift
            losses.append(float(loss()))
        up, down = losses[:2]
        assert float(grad[index]) == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-8)


def test_domain_statistics_use_the_soap_features():
    torch.manual_seed(0)
    model = build_model({**SOAP_SPEC, "elements": [1, 6, 8], "cutoff": 4.0}).double()
    graphs = []
    for seed in range(12):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=seed)
        graphs.append(atoms_to_graph(atoms, model.cutoff))
    model.fit_statistics(graphs)
    domain = fit_domain(model, graphs, hull_dims=3)
    assert domain.n_features == model.n_features == model.descriptor.n_features
    assert domain.hull_basis.shape == (3, model.n_features, 3)


def test_shallow_ensemble_on_soap_has_exact_member_forces():
    """``bpnn_shallow`` takes every ``bpnn`` argument, the SOAP descriptor included; its
    heads' forces (batched autograd through featomic) are the heads' energy gradients."""
    from mlpot.physics.ensemble import predict_members

    torch.manual_seed(3)
    model = build_model({**SOAP_SPEC, "name": "bpnn_shallow", "heads": 3}).double().eval()
    atoms = fcc111("Cu", size=(2, 2, 2), a=3.7, vacuum=4.0, periodic=True)
    atoms.numbers[::3] = AG
    atoms.rattle(0.05, seed=5)
    model.fit_statistics([atoms_to_graph(atoms, model.cutoff)])
    graph = atoms_to_graph(atoms, model.cutoff)
    assert model.member_gradients(graph) is None  # no explicit SOAP gradients: autograd
    out = predict_members(model, graph)
    forces = out["member_forces"]  # (K, N, 3)
    assert forces.shape == (3, len(atoms), 3)
    assert not torch.allclose(forces[0], forces[1])
    step = 1e-5
    for atom, axis in [(0, 0), (3, 2), (5, 1)]:
        energies = []
        for shift in (step, -step):
            moved = atoms.copy()
            moved.positions[atom, axis] += shift
            energies.append(
                predict_members(model, atoms_to_graph(moved, model.cutoff))["member_energy"][:, 0]
            )
        numeric = -(energies[0] - energies[1]) / (2 * step)
        torch.testing.assert_close(forces[:, atom, axis], numeric, rtol=1e-5, atol=1e-7)


def test_hessian_of_a_soap_model_differentiates_its_exact_forces():
    """featomic has no second derivatives in the positions: an autograd Hessian would miss
    terms (featomic only warns), so the SOAP model's Hessian is the central difference of
    its exact forces; it is symmetric and equals an independent finite difference."""
    from mlpot.validation.hessian import has_second_derivatives, model_hessian

    spec = {"name": "bpnn", "elements": [1, 6, 8], "cutoff": 4.0, "hidden": [16]}
    torch.manual_seed(0)
    model = build_model({**spec, "descriptor": "soap"}).double()
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=3)
    model = fitted(model, {"methanol": atoms}, seed=2)
    assert not has_second_derivatives(model)
    assert has_second_derivatives(build_model(spec))
    hessian = model_hessian(model, atoms)

    def forces(moved: Atoms) -> np.ndarray:
        graph = atoms_to_graph(moved, model.cutoff, dtype=torch.float64, elements=model.elements)
        return predict(model, graph, forces=True)["forces"].detach().numpy().reshape(-1)

    h, j = 2e-4, 4  # one column by a different step
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[j // 3, j % 3] += h
    minus.positions[j // 3, j % 3] -= h
    column = -(forces(plus) - forces(minus)) / (2 * h)
    assert np.abs(hessian[:, j]).max() > 1e-2  # eV/Å²: a real curvature
    np.testing.assert_allclose(hessian[:, j], column, atol=1e-4 * np.abs(column).max())  # O(δ²)
    np.testing.assert_allclose(hessian, hessian.T, atol=0)
