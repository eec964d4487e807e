"""QM/ML hybrid with a C² switch: the switch is C², forces are the exact gradient (switch
derivatives, a moving centre, link atoms and periodic images included), the limits are
pure QM and pure ML, no energy jumps where groups cross the radii, NVE drift no worse than
the ML potential's, GFN2-xTB in the core, and clear errors for bad input.

"QM" is EMT (or GFN2-xTB); "ML" is EMT plus a smooth pair term (a smooth error, as
a learned potential has), or an mlpot model."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces
from ase.cluster import Octahedron
from scipy.spatial.transform import Rotation

from mlpot.apps.qmml import QMMLCalculator, evaluate, load_qmml_calculator, switch
from mlpot.apps.qmml_diagnostics import diagnose, energy_jumps, force_mismatch, nve_drift
from mlpot.errors import MlpotInputError


class PerturbedEMT(EMT):
    """A stand-in learned potential: EMT plus a smooth error, the pair term
    ``A (1 − (r/r_c)²)³`` for ``r < r_c`` (C² at ``r_c``; minimum images)."""

    def __init__(self, amplitude: float = 0.3, cutoff: float = 3.2) -> None:
        super().__init__()
        self.amplitude, self.cutoff = amplitude, cutoff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        vectors = self.atoms.get_all_distances(mic=True, vector=True)  # (n, n, 3), r_j - r_i
        r = np.linalg.norm(vectors, axis=2)
        x2 = np.where((r > 0) & (r < self.cutoff), (r / self.cutoff) ** 2, 1.0)
        pair = self.amplitude * (1.0 - x2) ** 3  # (n, n), eV
        slope = -6.0 * self.amplitude * (1.0 - x2) ** 2 / self.cutoff**2  # dE/dr / r
        self.results["energy"] += 0.5 * pair.sum()
        self.results["free_energy"] = self.results["energy"]
        self.results["energies"] = self.results["energies"] + 0.5 * pair.sum(axis=1)
        self.results["forces"] = self.results["forces"] + np.einsum("ij,ijk->ik", slope, vectors)
        self.results.pop("stress", None)


def _ml() -> PerturbedEMT:
    return PerturbedEMT()


def _copper() -> tuple[Atoms, int]:
    """A rattled 38-atom Cu octahedron and the index of its most central atom."""
    atoms = Atoms(Octahedron("Cu", 4, cutoff=1))
    atoms.rattle(0.05, seed=1)
    centre = int(np.argmin(np.linalg.norm(atoms.positions - atoms.positions.mean(0), axis=1)))
    return atoms, centre


def _copper_hybrid(centre: int, **options) -> QMMLCalculator:
    settings = {"r_core": 2.2, "r_buffer": 3.4, "groups": "atoms", "capping": False}
    return QMMLCalculator(EMT(), _ml(), qm_atoms=[centre], **{**settings, **options})


def _xtb_pair():
    """GFN2-xTB as the QM part, GFN1-xTB as a stand-in ML part (~20 eV off per water),
    tight SCF for finite differences."""
    from tblite.ase import TBLite

    return tuple(TBLite(method=m, verbosity=0, accuracy=0.01) for m in ("GFN2-xTB", "GFN1-xTB"))


def _solvated(name: str, n_water: int, *, seed: int) -> Atoms:
    """Molecule ``name`` with ``n_water`` randomly placed waters 2.9-4.6 Å from its
    centre of mass (heavy atoms at least 1.9 Å from any other atom)."""
    rng = np.random.default_rng(seed)
    atoms = molecule(name)
    atoms.positions -= atoms.get_center_of_mass()
    while len(atoms) < len(molecule(name)) + 3 * n_water:
        water = molecule("H2O")
        turn = Rotation.random(random_state=int(rng.integers(1 << 30)))
        water.positions = turn.apply(water.positions - water.get_center_of_mass())
        direction = rng.normal(size=3)
        water.positions += direction / np.linalg.norm(direction) * rng.uniform(2.9, 4.6)
        gaps = np.linalg.norm(atoms.positions[:, None] - water.positions[None], axis=2)
        if gaps.min() > 1.9:
            atoms += water
    return atoms


def _assert_gradient(atoms: Atoms, calc, indices, *, atol: float, eps: float = 1e-5) -> None:
    atoms = atoms.copy()
    atoms.calc = calc
    analytic = atoms.get_forces()
    numeric = calculate_numerical_forces(atoms, eps=eps, iatoms=list(indices))
    np.testing.assert_allclose(analytic[list(indices)], numeric, atol=atol, rtol=0)


def test_switch_is_c2_and_its_derivatives_are_exact():
    r_core, r_buffer = 2.0, 3.5
    s = switch(np.array([0.0, r_core, r_buffer, 9.0]), r_core, r_buffer)
    np.testing.assert_array_equal(s.value, [1.0, 1.0, 0.0, 0.0])
    for radius in (r_core, r_buffer):  # value, first and second derivatives continuous
        inside = switch(radius - 1e-7, r_core, r_buffer)
        outside = switch(radius + 1e-7, r_core, r_buffer)
        for a, b in zip(inside, outside, strict=True):
            assert abs(float(a) - float(b)) < 1e-5
        assert abs(float(switch(radius, r_core, r_buffer).second)) < 1e-12
    r = np.linspace(r_core + 0.01, r_buffer - 0.01, 50)
    h = 1e-6
    plus, minus = switch(r + h, r_core, r_buffer), switch(r - h, r_core, r_buffer)
    s = switch(r, r_core, r_buffer)
    np.testing.assert_allclose((plus.value - minus.value) / (2 * h), s.first, atol=1e-8)
    np.testing.assert_allclose((plus.first - minus.first) / (2 * h), s.second, atol=1e-6)
    assert np.all(np.diff(s.value) < 0)


@pytest.mark.parametrize("body_order", [2, 3])
def test_forces_are_the_exact_gradient_across_the_interface(body_order):
    atoms, centre = _copper()
    calc = _copper_hybrid(centre, body_order=body_order)
    part = calc.partition(atoms)
    interface = part.interface_atoms()
    assert len(interface) >= 6
    outside = np.flatnonzero(part.weights == 0.0)[:1]
    _assert_gradient(atoms, calc, [centre, *interface[:4], *outside], atol=2e-7)


def test_forces_with_link_atoms_and_a_moving_centre():
    """Ethanol's CH2OH end is the core (the C-C bond is capped by a link atom), the QM
    centre is the centroid of its O and H; the methyl group and waters are switched.
    GFN2-xTB is the QM part, GFN1-xTB a stand-in for the learned potential."""
    atoms = _solvated("CH3CH2OH", 4, seed=1)
    calc = QMMLCalculator(
        *_xtb_pair(), qm_atoms=[1, 2, 3, 4, 5], centre=[2, 3], r_core=2.0, r_buffer=4.0
    )
    part = calc.partition(atoms)
    assert [0, 6, 7, 8] in [g.tolist() for g in part.groups]
    assert calc.cluster(atoms, []).links.tolist() == [[1, 0]]  # the C-C bond
    interface = part.interface_atoms()
    assert len(part.active_groups()) >= 3 and len(interface) >= 4
    water = [i for i in interface if i > 8][:2]
    _assert_gradient(atoms, calc, [0, 1, 2, 3, 6, *water], atol=2e-4, eps=1e-4)


def test_forces_in_a_periodic_cell_use_minimum_images():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=2)
    calc = _copper_hybrid(0, r_core=2.0, r_buffer=3.2)
    part = calc.partition(atoms)
    assert len(part.active_groups()) == 12  # first shell, most across the cell's faces
    _assert_gradient(atoms, calc, [0, *part.interface_atoms()[:3], 20], atol=2e-7)


def test_limits_pure_qm_and_pure_ml():
    atoms, centre = _copper()
    qm, ml = EMT(), _ml()
    e_qm, f_qm, _ = evaluate(qm, atoms, role="QM")
    e_ml, f_ml, local_ml = evaluate(ml, atoms, role="ML", energies=True)
    everything = QMMLCalculator(qm, ml, qm_atoms=range(len(atoms)), r_core=1.0, r_buffer=2.0)
    e, f, _ = evaluate(everything, atoms, role="hybrid")
    assert e == pytest.approx(e_qm, abs=1e-10)
    np.testing.assert_allclose(f, f_qm, atol=1e-10)
    far = QMMLCalculator(qm, ml, qm_atoms=[], centre_point=[50.0, 0, 0], r_core=1, r_buffer=2)
    e, f, local = evaluate(far, atoms, role="hybrid", energies=True)
    assert e == pytest.approx(e_ml, abs=1e-12)
    np.testing.assert_allclose(f, f_ml, atol=1e-12)
    np.testing.assert_allclose(local, local_ml, atol=1e-12)
    # a water dimer whose second molecule is inside r_core: all QM
    dimer = _solvated("H2O", 1, seed=0)
    inside = QMMLCalculator(qm, ml, qm_atoms=[0, 1, 2], r_core=5.0, r_buffer=6.0)
    e, f, _ = evaluate(inside, dimer, role="hybrid")
    e_ref, f_ref, _ = evaluate(qm, dimer, role="QM")
    assert e == pytest.approx(e_ref, abs=1e-10)
    np.testing.assert_allclose(f, f_ref, atol=1e-10)


@pytest.mark.parametrize("body_order", [2, 3])
def test_per_atom_energies_add_up_and_are_ml_outside(body_order):
    atoms, centre = _copper()
    calc = _copper_hybrid(centre, body_order=body_order)
    e, _, local = evaluate(calc, atoms, role="hybrid", energies=True)
    _, _, local_ml = evaluate(_ml(), atoms, role="ML", energies=True)
    assert local.sum() == pytest.approx(e, abs=1e-10)
    outside = calc.partition(atoms).weights == 0.0
    np.testing.assert_allclose(local[outside], local_ml[outside], atol=1e-12)


@pytest.mark.parametrize("body_order", [2, 3])
def test_no_energy_jumps_where_groups_cross_the_radii(body_order):
    atoms, centre = _copper()
    calc = _copper_hybrid(centre, body_order=body_order)
    report = diagnose(calc, atoms)
    assert report.energy_jump_max < 1e-9  # eV: round-off
    assert report.energy_jumps.largest_change > 1e-5  # the path does change the energy
    assert report.n_interface_atoms > 0 and 0 < report.force_mismatch_rms < 1.0

    class HardCluster(QMMLCalculator):
        """The conventional buffered cluster: every group inside r_buffer is QM."""

        def calculate(self, atoms=None, properties=None, system_changes=()):
            super(QMMLCalculator, self).calculate(atoms, properties, system_changes)
            part = self.partition(self.atoms)
            groups = [part.groups[k] for k in part.active_groups()]
            energy, forces, _ = evaluate(self.ml, self.atoms, role="ML")
            delta, delta_forces = self.delta(self.atoms, groups)
            self.results = {"energy": energy + delta, "forces": forces + delta_forces}

    hard = HardCluster(
        EMT(), _ml(), qm_atoms=[centre], r_core=2.2, r_buffer=3.4, groups="atoms", capping=False
    )
    atom = int(calc.partition(atoms).interface_atoms()[0])
    assert energy_jumps(hard, atoms, atom).max_jump > 1e-3  # the diagnostic sees a jump


def test_three_body_correction_is_exact_for_a_core_and_two_groups():
    """A water trimer with every molecule inside r_core: at three bodies the hybrid is the
    QM energy and forces; at two bodies it misses the QM − ML three-body term, which the
    expansion's terms give exactly."""
    trimer = _solvated("H2O", 2, seed=3)
    qm, ml = _xtb_pair()
    settings = {"qm_atoms": [0, 1, 2], "r_core": 6.0, "r_buffer": 7.0}
    e_qm, f_qm, _ = evaluate(qm, trimer, role="QM")
    e3, f3, _ = evaluate(QMMLCalculator(qm, ml, body_order=3, **settings), trimer, role="b3")
    e2, _, _ = evaluate(QMMLCalculator(qm, ml, body_order=2, **settings), trimer, role="b2")
    assert e3 == pytest.approx(e_qm, abs=1e-8)
    np.testing.assert_allclose(f3, f_qm, atol=1e-6)
    calc = QMMLCalculator(qm, ml, body_order=2, **settings)
    water = [np.arange(3), np.arange(3, 6), np.arange(6, 9)]

    def delta(groups):
        return calc.delta(trimer, [water[g] for g in groups])[0]

    three_body = delta([1, 2]) - delta([1]) - delta([2]) + delta([])
    assert abs(three_body) > 1e-4  # eV: the term two bodies leave out is not negligible
    assert e3 - e2 == pytest.approx(three_body, abs=1e-8)


def test_force_mismatch_is_zero_when_ml_equals_qm():
    atoms, centre = _copper()
    same = QMMLCalculator(
        EMT(), EMT(), qm_atoms=[centre], r_core=2.2, r_buffer=3.4, groups="atoms", capping=False
    )
    mismatch = force_mismatch(same, atoms, full_qm=True)
    assert mismatch.n_atoms > 0 and mismatch.max < 1e-12
    assert force_mismatch(_copper_hybrid(centre), atoms).rms > 1e-3


def test_nve_drift_is_no_worse_than_the_ml_potentials():
    atoms, centre = _copper()
    calc = _copper_hybrid(centre, r_core=2.0, r_buffer=3.0)
    settings = {"steps": 40, "timestep_fs": 5.0, "temperature_K": 600.0, "seed": 1}
    hybrid, ml = nve_drift(atoms, calc, **settings), nve_drift(atoms, _ml(), **settings)
    kinetic = 1.5 * 600.0 * 8.617e-2  # meV/atom, the scale of the energy exchanged
    assert hybrid.max_deviation < 0.02 * kinetic
    assert hybrid.max_deviation < 3.0 * ml.max_deviation + 0.002 * kinetic


def test_gfn2_xtb_in_the_core():
    """A water trimer, GFN2-xTB for the core molecule and the switched waters: the energy
    with everything inside r_core is the oracle's, and forces match finite differences."""
    trimer = _solvated("H2O", 2, seed=3)
    qm, ml = _xtb_pair()
    calc = QMMLCalculator(qm, ml, qm_atoms=[0, 1, 2], r_core=2.5, r_buffer=5.5)
    assert len(calc.partition(trimer).interface_atoms()) == 6
    _assert_gradient(trimer, calc, range(len(trimer)), atol=2e-4, eps=1e-4)
    whole = QMMLCalculator(qm, ml, qm_atoms=range(9), r_core=1.0, r_buffer=2.0)
    e_hybrid, _, _ = evaluate(whole, trimer, role="hybrid")
    assert e_hybrid == pytest.approx(evaluate(qm, trimer, role="QM")[0], abs=1e-8)


def test_an_mlpot_model_as_the_ml_part(tmp_path):
    from mlpot.models.checkpoint import save_model
    from mlpot.models.registry import build_model

    model = build_model({"name": "bpnn", "elements": [29], "cutoff": 4.0, "hidden": [8]})
    save_model(tmp_path / "cu.pt", model.double())
    atoms, centre = _copper()
    calc = load_qmml_calculator(
        tmp_path / "cu.pt",
        oracle="emt",
        qm_atoms=[centre],
        r_core=2.2,
        r_buffer=3.4,
        groups="atoms",
        capping=False,
    )
    e, _, local = evaluate(calc, atoms, role="hybrid", energies=True)
    assert local.sum() == pytest.approx(e, abs=1e-8)
    _assert_gradient(atoms, calc, calc.partition(atoms).interface_atoms()[:1], atol=1e-6)
    alloy = atoms.copy()
    alloy.numbers[5] = 47
    with pytest.raises(MlpotInputError, match=r"\[47\] are not covered by the ML model"):
        evaluate(calc, alloy, role="hybrid")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"r_core": 3.0, "r_buffer": 2.0}, "r_core < r_buffer"),
        ({"r_core": -1.0, "r_buffer": 2.0}, "r_core < r_buffer"),
        ({"centre": 99}, "out of range"),
        ({"qm_atoms": [0, 40]}, "out of range"),
        ({"qm_atoms": [0, 0]}, "repeated"),
        ({"groups": [[0, 1]]}, "contains a qm_atoms"),
        ({"groups": "residues"}, "groups must be"),
        ({"centre": 0, "centre_point": [0, 0, 0]}, "not both"),
        ({"qm_atoms": []}, "needs a centre"),
        ({"ml_elements": [1, 8]}, r"\[29\] are not covered"),
        ({"body_order": 4}, "body_order must be 2 or 3"),
    ],
)
def test_bad_input_is_a_clear_error(options, words):
    atoms, _ = _copper()
    settings = {"qm_atoms": [0], "r_core": 2.0, "r_buffer": 3.0, "groups": "atoms", **options}
    with pytest.raises(MlpotInputError, match=words):
        calc = QMMLCalculator(EMT(), _ml(), **settings)
        evaluate(calc, atoms, role="hybrid")


def test_periodic_cell_too_small_for_the_buffer():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    calc = _copper_hybrid(0, r_core=2.0, r_buffer=4.0)
    with pytest.raises(MlpotInputError, match="half the cell"):
        evaluate(calc, atoms, role="hybrid")


def test_the_command_line_reports_the_diagnostics(tmp_path):
    import ase.io
    import typer
    from typer.testing import CliRunner

    from mlpot.cli.qmml import parse_indices, qmml
    from mlpot.models.checkpoint import save_model
    from mlpot.models.registry import build_model

    assert parse_indices("0, 2-4") == [0, 2, 3, 4]
    save_model(tmp_path / "cu.pt", build_model({"name": "bpnn", "elements": [29], "cutoff": 4.0}))
    atoms, centre = _copper()
    ase.io.write(tmp_path / "cu.xyz", atoms)
    app = typer.Typer()
    app.command()(qmml)
    app.command("unused")(lambda: None)  # two commands: typer keeps the name
    arguments = [str(tmp_path / "cu.pt"), str(tmp_path / "cu.xyz"), "--qm-atoms", str(centre)]
    options = ["--r-core", "2.2", "--r-buffer", "3.4", "--groups", "atoms", "--no-capping"]
    result = CliRunner().invoke(app, ["qmml", *arguments, *options, "--oracle", "emt"])
    assert result.exit_code == 0, result.output
    assert "12 inside r_buffer" in result.output and "ΔE_max" in result.output
    bad = CliRunner().invoke(app, ["qmml", *arguments, "--r-core", "4", "--r-buffer", "3"])
    assert bad.exit_code == 2 and "r_core < r_buffer" in bad.output
    bad = CliRunner().invoke(app, ["qmml", *arguments, "--body-order", "5"])
    assert bad.exit_code == 2 and "body_order must be 2 or 3" in bad.output
