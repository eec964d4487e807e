"""Physics conformance tests shipped as a mixin: every energy model must pass them.

A model's test class inherits :class:`PhysicsConformance` and implements
:meth:`~PhysicsConformance.make_model` (returning a float64 model); it may override
:meth:`~PhysicsConformance.make_structures` or the class attributes that shape the default
structures (``lattice_constant``, ``rattle``). Example::

    class TestMyModel(PhysicsConformance):
        lattice_constant = 3.7

        def make_model(self):
            return build_model({"name": "bpnn", "elements": [29, 47]}).double()

The default structures, built from the model's elements and cutoff, are:

``bulk``
    a rattled, sheared (triclinic) fcc supercell of 32 atoms with (up to) two elements;
``small_cell``
    a rattled, sheared two-atom cell whose three cell vectors are all shorter than the
    cutoff (every atom sees several images of itself and of the other atom);
``slab``
    a rattled fcc(111) slab, periodic along ``a`` and ``b`` only (pbc ``True, True, False``);
``molecule``
    a rattled free cluster of 14 atoms (no cell, no periodicity).

Everything is checked in float64 with tight tolerances: symmetries to round-off, derivatives
against ASE's :class:`~ase.calculators.fd.FiniteDifferenceCalculator`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.fd import FiniteDifferenceCalculator
from ase.neighborlist import neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress

from mlpot.data.graph import atoms_to_graph, collate
from mlpot.physics.derivatives import predict

STRUCTURES = ("bulk", "small_cell", "slab", "molecule")
PERIODIC = ("bulk", "small_cell", "slab")

#: Tolerance of exact identities (symmetries, batching, extensivity), relative to the scale.
EXACT = 1e-10
#: Tolerance of analytic versus central finite-difference derivatives, relative.
FD_RTOL = 1e-6
FD_EPS_DISP = 1e-5
FD_EPS_STRAIN = 1e-5


# --------------------------------------------------------------------------- helpers


def evaluate(model, atoms: Atoms, *, stress: bool | None = None) -> dict[str, np.ndarray]:
    """Energy (float), forces ``(N, 3)``, local energies ``(N,)`` and stress ``(3, 3)``.

    Stress is computed by default for structures with a three-dimensional cell.
    """
    if stress is None:
        stress = atoms.cell.rank == 3
    graph = atoms_to_graph(atoms, model.cutoff, dtype=torch.float64, elements=model.elements)
    out = predict(model, graph, forces=True, stress=stress)
    result = {
        "energy": float(out["energy"].detach()[0]),
        "forces": out["forces"].detach().numpy(),
        "local_energies": out["local_energies"].detach().numpy(),
    }
    if stress:
        result["stress"] = out["stress"].detach().numpy()[0]
    return result


class MlpotAseCalculator(Calculator):
    """Minimal ASE adapter around :func:`predict`, for ASE's finite-difference wrapper."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        graph = atoms_to_graph(self.atoms, self.model.cutoff, dtype=torch.float64)
        out = predict(self.model, graph, forces="forces" in properties, stress=want_stress)
        energy = float(out["energy"].detach()[0])
        self.results = {"energy": energy, "free_energy": energy}
        if "forces" in out:
            self.results["forces"] = out["forces"].detach().numpy().copy()
        if want_stress:
            stress = out["stress"].detach().numpy()[0]
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)


def random_orthogonal(seed: int, proper: bool) -> np.ndarray:
    """A random 3x3 orthogonal matrix with determinant +1 (proper) or -1 (improper)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    assert abs(abs(np.linalg.det(q)) - 1.0) < 1e-12
    # never (close to) the identity or a trivial axis permutation
    assert np.abs(np.abs(q) - np.eye(3)).max() > 0.1
    return q


def transformed(atoms: Atoms, rotation: np.ndarray) -> Atoms:
    """``atoms`` with positions and cell vectors rotated by ``rotation`` (x -> R x)."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    out.positions = atoms.positions @ rotation.T
    return out


def assert_close(actual, expected, *, rtol: float, what: str, scale: float | None = None):
    """``max|actual - expected| <= rtol * max(scale, 1e-3)``, scale defaulting to max|expected|."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if scale is None:
        scale = float(np.abs(expected).max()) if expected.size else 0.0
    tolerance = rtol * max(scale, 1e-3)
    error = float(np.abs(actual - expected).max()) if expected.size else 0.0
    assert error <= tolerance, f"{what}: max abs error {error:.3e} > {tolerance:.3e}"


def dimer(za: int, zb: int, distance: float, direction: np.ndarray) -> Atoms:
    direction = direction / np.linalg.norm(direction)
    origin = np.array([0.3, -0.2, 0.1])
    return Atoms([za, zb], positions=[origin, origin + distance * direction], pbc=False)


# --------------------------------------------------------------------------- the mixin


class PhysicsConformance:
    """Physical-consistency tests every energy model must pass (inherit and implement).

    Subclasses implement :meth:`make_model`. Class attributes:

    ``lattice_constant``
        fcc lattice constant (Å) of the generated structures; choose a physically
        reasonable nearest-neighbour distance for the model's elements.
    ``rattle``
        standard deviation (Å) of the random displacements.
    ``cutoff_margin``
        minimum distance (Å) of every pair distance from the cutoff in the structures.
    ``inner_cutoffs``
        further radii (Å) where interactions switch off (e.g. an angular cutoff): the
        smoothness test crosses them too.
    ``continuous_forces``
        False for a model whose force jumps at the cutoff by design; that test then checks
        that the energy is continuous and that the jump is there.
    """

    lattice_constant: float = 3.7
    rattle: float = 0.1
    seed: int = 7
    #: keep every interatomic distance at least this far (Å) from the cutoff: set it for a
    #: model whose force is discontinuous there, so finite differences do not straddle it.
    cutoff_margin: float = 0.0
    #: further radii (Å) where the model switches interactions off, e.g. an angular cutoff
    inner_cutoffs: tuple[float, ...] = ()
    #: False for a model whose forces jump at the cutoff by design (shifted potentials)
    continuous_forces: bool = True

    # ---- to implement / override

    def make_model(self):
        """Return the model under test, in float64 and eval mode."""
        raise NotImplementedError

    def make_structures(self, model) -> dict[str, Atoms]:
        """The structures to test, keyed by the names in :data:`STRUCTURES`."""
        elements = list(model.elements[:2])
        a = self.lattice_constant
        rng = np.random.default_rng(self.seed)

        def decorate(atoms: Atoms) -> Atoms:
            numbers = np.array([elements[k % len(elements)] for k in range(len(atoms))])
            atoms.numbers = rng.permutation(numbers)
            ideal = atoms.positions.copy()
            for _ in range(100):
                atoms.positions = ideal + rng.normal(scale=self.rattle, size=ideal.shape)
                distances = neighbor_list("d", atoms, model.cutoff + self.cutoff_margin)
                if np.all(np.abs(distances - model.cutoff) >= self.cutoff_margin):
                    return atoms
            raise AssertionError("could not keep all distances clear of the cutoff")

        shear = np.eye(3) + np.array([[0.02, 0.05, -0.03], [0.0, -0.01, 0.04], [0.0, 0.0, 0.03]])

        crystal = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
        crystal.set_cell(crystal.cell.array @ shear, scale_atoms=True)

        edge = a * np.sqrt(2.0 / 3.0)  # CsCl-type cell with the fcc nearest-neighbour distance
        small = Atoms(
            "Cu2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=edge * shear, pbc=True
        )
        assert np.linalg.norm(small.cell.array, axis=1).max() < model.cutoff, (
            "small_cell must be smaller than the cutoff; lower lattice_constant"
        )

        slab = fcc111("Cu", size=(2, 2, 3), a=a, vacuum=0.6 * a, periodic=False)
        slab.pbc = (True, True, False)

        corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)])
        faces = np.array(
            [
                [0.5, 0.5, 0],
                [0.5, 0.5, 1],
                [0.5, 0, 0.5],
                [0.5, 1, 0.5],
                [0, 0.5, 0.5],
                [1, 0.5, 0.5],
            ]
        )
        molecule = Atoms("Cu14", positions=a * np.concatenate([corners, faces]), pbc=False)

        structures = {
            "bulk": decorate(crystal),
            "small_cell": decorate(small),
            "slab": decorate(slab),
            "molecule": decorate(molecule),
        }
        if len(elements) > 1:
            for atoms in structures.values():
                assert set(atoms.numbers) == set(elements)
        return structures

    # ---- fixtures

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _single_torch_thread(cls):
        """Small systems: one thread is faster, and immune to a busy machine's contention."""
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(previous)

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        model = cls().make_model()
        model.eval()
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                assert tensor.dtype == torch.float64, "conformance runs in float64"
        return model

    @pytest.fixture(scope="class")
    @classmethod
    def structures(cls, model) -> dict[str, Atoms]:
        structures = cls().make_structures(model)
        assert set(STRUCTURES) <= set(structures)
        return structures

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, model, structures) -> dict[str, dict[str, np.ndarray]]:
        return {name: evaluate(model, atoms) for name, atoms in structures.items()}

    @pytest.fixture(scope="class")
    @classmethod
    def isolated(cls, model) -> dict[int, float]:
        """Energy of each element as a lone atom in vacuum."""
        out = {}
        for z in model.elements:
            result = evaluate(model, Atoms([z], positions=[[0.0, 0.0, 0.0]]))
            out[z] = result["energy"]
        return out

    # ---- symmetries

    def _check_rotation(self, model, atoms, reference, seed, proper):
        rotation = random_orthogonal(seed, proper)
        result = evaluate(model, transformed(atoms, rotation))
        e_scale = max(abs(reference["energy"]), len(atoms) * 1e-3)
        assert_close(
            result["energy"], reference["energy"], rtol=EXACT, scale=e_scale, what="energy"
        )
        assert_close(result["forces"], reference["forces"] @ rotation.T, rtol=EXACT, what="forces")
        assert_close(
            result["local_energies"],
            reference["local_energies"],
            rtol=EXACT,
            scale=e_scale,
            what="local energies",
        )
        if "stress" in reference:
            assert_close(
                result["stress"],
                rotation @ reference["stress"] @ rotation.T,
                rtol=EXACT,
                what="stress",
            )

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_rotation(self, model, structures, reference, name):
        """E(Rx) = E(x), F(Rx) = R F(x), σ(Rx) = R σ R^T for a random proper rotation."""
        for seed in (1, 2):
            self._check_rotation(model, structures[name], reference[name], seed, proper=True)

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_reflection(self, model, structures, reference, name):
        """The same for an improper rotation (a rotation times inversion)."""
        self._check_rotation(model, structures[name], reference[name], 3, proper=False)

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_translation(self, model, structures, reference, name):
        """Rigid translation (and, for periodic cells, wrapping back into the cell)."""
        atoms, ref = structures[name], reference[name]
        e_scale = max(abs(ref["energy"]), len(atoms) * 1e-3)
        moved = atoms.copy()
        moved.positions += np.array([1.37, -2.91, 0.53])
        variants = [moved]
        if atoms.pbc.any():
            wrapped = moved.copy()
            wrapped.wrap()
            assert np.abs(wrapped.positions - moved.positions).max() > 0.1
            variants.append(wrapped)
        for variant in variants:
            result = evaluate(model, variant)
            assert_close(result["energy"], ref["energy"], rtol=EXACT, scale=e_scale, what="energy")
            assert_close(result["forces"], ref["forces"], rtol=EXACT, what="forces")
            if "stress" in ref:
                assert_close(result["stress"], ref["stress"], rtol=EXACT, what="stress")

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_permutation(self, model, structures, reference, name):
        """Relabelling atoms leaves the energy unchanged and permutes the forces."""
        atoms, ref = structures[name], reference[name]
        perm = np.random.default_rng(11).permutation(len(atoms))
        if len(atoms) > 1:
            assert (perm != np.arange(len(atoms))).any()
        result = evaluate(model, atoms[perm])
        e_scale = max(abs(ref["energy"]), len(atoms) * 1e-3)
        assert_close(result["energy"], ref["energy"], rtol=EXACT, scale=e_scale, what="energy")
        assert_close(result["forces"], ref["forces"][perm], rtol=EXACT, what="forces")
        assert_close(
            result["local_energies"],
            ref["local_energies"][perm],
            rtol=EXACT,
            scale=e_scale,
            what="local energies",
        )
        if "stress" in ref:
            assert_close(result["stress"], ref["stress"], rtol=EXACT, what="stress")

    # ---- derivatives

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_forces_finite_difference(self, model, structures, reference, name):
        """Analytic forces equal central finite differences of the energy (ASE)."""
        atoms = structures[name].copy()
        atoms.calc = FiniteDifferenceCalculator(
            MlpotAseCalculator(model), eps_disp=FD_EPS_DISP, eps_strain=None
        )
        numeric = atoms.get_forces()
        analytic = reference[name]["forces"]
        assert np.abs(analytic).max() > 1e-4, "forces too small for a meaningful check"
        assert_close(analytic, numeric, rtol=FD_RTOL, what="forces vs finite differences")

    @pytest.mark.parametrize("name", PERIODIC)
    def test_stress_finite_difference(self, model, structures, reference, name):
        """Analytic stress equals finite differences of the energy under strain (ASE)."""
        atoms = structures[name].copy()
        atoms.calc = FiniteDifferenceCalculator(
            MlpotAseCalculator(model), eps_disp=None, eps_strain=FD_EPS_STRAIN
        )
        numeric = atoms.get_stress(voigt=False)
        analytic = reference[name]["stress"]
        assert np.abs(analytic).max() > 1e-6, "stress too small for a meaningful check"
        assert_close(analytic, numeric, rtol=FD_RTOL, what="stress vs finite differences")

    def test_stress_of_free_molecule_is_zero(self, model, structures):
        result = evaluate(model, structures["molecule"], stress=True)
        assert np.all(result["stress"] == 0.0)

    @pytest.mark.parametrize("name", STRUCTURES)
    def test_momentum_conservation(self, model, structures, reference, name):
        """Σ F_i = 0 (translation invariance); Σ r_i x F_i = 0 for a free molecule."""
        atoms, forces = structures[name], reference[name]["forces"]
        scale = np.abs(forces).max()
        assert_close(forces.sum(0), np.zeros(3), rtol=EXACT, scale=scale, what="net force")
        if not atoms.pbc.any():
            centred = atoms.positions - atoms.positions.mean(0)
            torque = np.cross(centred, forces).sum(0)
            assert_close(
                torque,
                np.zeros(3),
                rtol=EXACT,
                scale=scale * np.abs(centred).max(),
                what="net torque",
            )

    # ---- batching and extensivity

    def test_batched_equals_single(self, model, structures, reference):
        """A batch of different structures gives each structure's own predictions."""
        names = list(STRUCTURES) + ["bulk"]  # a structure twice in a batch too
        graphs = [atoms_to_graph(structures[n], model.cutoff) for n in names]
        out = predict(model, collate(graphs), forces=True, stress=True)
        energies = out["energy"].detach().numpy()
        forces = np.split(
            out["forces"].detach().numpy(), np.cumsum([len(structures[n]) for n in names])[:-1]
        )
        stress = out["stress"].detach().numpy()
        assert energies.shape == (len(names),)
        for k, name in enumerate(names):
            ref = reference[name]
            e_scale = max(abs(ref["energy"]), len(structures[name]) * 1e-3)
            assert_close(
                energies[k], ref["energy"], rtol=EXACT, scale=e_scale, what=f"{name} energy"
            )
            assert_close(forces[k], ref["forces"], rtol=EXACT, what=f"{name} forces")
            expected_stress = ref.get("stress", np.zeros((3, 3)))
            assert_close(stress[k], expected_stress, rtol=EXACT, what=f"{name} stress")

    @pytest.mark.parametrize("name", PERIODIC)
    def test_supercell_extensivity(self, model, structures, reference, name):
        """E(2x2x2 supercell) = 8 E, same stress, forces repeated (2x2x1 for a slab)."""
        atoms, ref = structures[name], reference[name]
        repeat = tuple(2 if p else 1 for p in atoms.pbc)
        copies = int(np.prod(repeat))
        result = evaluate(model, atoms.repeat(repeat))
        e_scale = copies * max(abs(ref["energy"]), len(atoms) * 1e-3)
        assert_close(
            result["energy"], copies * ref["energy"], rtol=EXACT, scale=e_scale, what="energy"
        )
        assert_close(
            result["forces"], np.tile(ref["forces"], (copies, 1)), rtol=EXACT, what="forces"
        )
        assert_close(result["stress"], ref["stress"], rtol=EXACT, what="stress")

    # ---- locality: cutoff and isolated atoms

    def test_isolated_atom(self, model, isolated):
        """A lone atom has a constant energy per element and no force, anywhere."""
        box = 2.5 * model.cutoff  # a periodic box bigger than the cutoff: no neighbours
        for z, energy in isolated.items():
            assert np.isfinite(energy)
            for atoms in (
                Atoms([z], positions=[[1.3, -4.2, 7.7]]),
                Atoms([z], positions=[[0.4, 0.9, 0.2]], cell=[box, box * 1.1, box * 0.9], pbc=True),
            ):
                result = evaluate(model, atoms)
                assert result["energy"] == pytest.approx(energy, rel=1e-13, abs=1e-13)
                assert np.all(result["forces"] == 0.0)
                if "stress" in result:
                    assert np.all(result["stress"] == 0.0)

    def test_separated_atoms_are_additive(self, model, isolated):
        """Atoms farther apart than the cutoff: E = Σ isolated-atom energies, F = 0."""
        elements = list(model.elements[:2])
        direction = np.array([0.3, -0.5, 0.8])
        for za in elements:
            for zb in elements:
                for distance in (model.cutoff * 1.0001, 2.0 * model.cutoff):
                    result = evaluate(model, dimer(za, zb, distance, direction))
                    expected = isolated[za] + isolated[zb]
                    assert result["energy"] == pytest.approx(expected, rel=1e-13, abs=1e-13)
                    assert np.all(result["forces"] == 0.0)
                    expected_local = [isolated[za], isolated[zb]]
                    np.testing.assert_allclose(
                        result["local_energies"], expected_local, rtol=1e-13, atol=1e-13
                    )
        # a free molecule of well separated atoms of every element
        spread = Atoms(
            elements * 2,
            positions=1.5 * model.cutoff * np.arange(2 * len(elements))[:, None] * np.ones(3),
        )
        result = evaluate(model, spread)
        expected = sum(isolated[z] for z in spread.numbers)
        assert result["energy"] == pytest.approx(expected, rel=1e-13, abs=1e-13)

    def test_cutoff_smoothness(self, model, isolated):
        """Moving a dimer across the cutoff: energy and force continuous, and reaching the
        isolated-atom values (energy within O(δ²), force within O(δ) of them at r_c - δ).
        """
        elements = list(model.elements[:2])
        rc = model.cutoff
        direction = np.array([0.6, 0.2, -0.4])
        unit = direction / np.linalg.norm(direction)
        tail = np.linspace(rc - 1.0, rc - 1e-3, 60)
        for za in elements:
            for zb in elements:
                e_iso = isolated[za] + isolated[zb]

                def energy_force(r, za=za, zb=zb):
                    result = evaluate(model, dimer(za, zb, r, direction))
                    # force on atom b along the bond
                    return result["energy"], float(result["forces"][1] @ unit)

                samples = np.array([energy_force(r) for r in tail])
                e_scale = np.abs(samples[:, 0] - e_iso).max()
                f_scale = np.abs(samples[:, 1]).max()
                assert e_scale > 1e-8 and f_scale > 1e-8, "no interaction inside the cutoff"
                # no jumps along the tail: consecutive samples differ by a small step
                assert np.abs(np.diff(samples[:, 0])).max() < 0.2 * e_scale
                for delta in (1e-4, 1e-6):
                    energy_in, force_in = energy_force(rc - delta)
                    energy_out, force_out = energy_force(rc + delta)
                    assert energy_out == pytest.approx(e_iso, rel=1e-13, abs=1e-13)
                    assert force_out == 0.0
                    assert abs(energy_in - e_iso) <= 10 * delta * e_scale, (
                        f"energy jumps at the cutoff ({za}-{zb}): {energy_in - e_iso:.3e}"
                    )
                    assert abs(force_in) <= 10 * delta * f_scale, (
                        f"force jumps at the cutoff ({za}-{zb}): {force_in:.3e}"
                    )

    def test_cutoff_smoothness_in_environment(self, model):
        """A third atom crossing each cutoff of the model (``cutoff`` and any
        ``inner_cutoffs``, e.g. an angular one) next to a bonded pair: the energy and all
        forces are continuous (three-body terms switch off smoothly too).
        """
        elements = list(model.elements[:2])
        numbers = [elements[0], elements[-1], elements[0]]
        bond = 0.7 * self.lattice_constant  # the fcc nearest-neighbour distance
        u = np.array([0.48, 0.64, 0.6])
        w = np.cross(u, [0.0, 0.0, 1.0])
        u, w = u / np.linalg.norm(u), w / np.linalg.norm(w)
        # atom 1 at 120 degrees from the moving atom 2, both seen from atom 0
        second = bond * (np.cos(2 * np.pi / 3) * u + np.sin(2 * np.pi / 3) * w)

        def energy_forces(r):
            atoms = Atoms(numbers, positions=[np.zeros(3), second, r * u])
            result = evaluate(model, atoms)
            return result["energy"], result["forces"]

        for rx in (model.cutoff, *self.inner_cutoffs):
            # only the distance 0-2 crosses rx; the distance 1-2 stays clear of every cutoff
            for r in (rx - 1e-3, rx + 1e-3):
                d12 = np.linalg.norm(r * u - second)
                for other in (model.cutoff, *self.inner_cutoffs):
                    assert abs(d12 - other) > 0.1, "choose another geometry"
            tail = [energy_forces(r) for r in np.linspace(rx - 0.5, rx + 0.5, 41)]
            energies = np.array([e for e, _ in tail])
            forces = np.array([f for _, f in tail])
            e_scale = np.ptp(energies)
            f_scale = np.abs(forces[:, 2]).max()
            assert e_scale > 1e-8 and f_scale > 1e-8, f"no interaction at {rx} Å"
            for delta in (1e-4, 1e-6):
                energy_in, forces_in = energy_forces(rx - delta)
                energy_out, forces_out = energy_forces(rx + delta)
                assert abs(energy_in - energy_out) <= 10 * delta * e_scale, (
                    f"energy jumps at {rx} Å: {energy_in - energy_out:.3e}"
                )
                jump = np.abs(forces_in - forces_out).max()
                if self.continuous_forces:
                    assert jump <= 10 * delta * f_scale, f"force jumps at {rx} Å: {jump:.3e}"
                else:
                    assert jump > 1e-3 * f_scale, "expected the documented force jump"
