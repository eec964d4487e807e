"""``mlpot export``: the metatomic model equals the eager model (energy, forces, stress,
uncertainty) on molecules, periodic and sheared cells, in batches, for every model kind
that exports; the kinds that do not are refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

pytest.importorskip("metatomic.torch")
pytest.importorskip("metatomic_ase")

from metatensor.torch import Labels  # noqa: E402
from metatomic.torch import ModelOutput  # noqa: E402
from metatomic_ase import MetatomicCalculator  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from mlpot.calculators.ase_calculator import load_calculator  # noqa: E402
from mlpot.cli.main import app  # noqa: E402
from mlpot.errors import MlpotInputError  # noqa: E402
from mlpot.export.check import compare_export  # noqa: E402
from mlpot.export.export import export_model, interaction_range  # noqa: E402
from mlpot.models.checkpoint import save_model  # noqa: E402
from mlpot.models.registry import build_model  # noqa: E402
from mlpot.physics import outputs  # noqa: E402

HCO = [1, 6, 8]
MPNN = {"name": "mpnn", "elements": HCO, "cutoff": 3.5, "channels": 8, "layers": 2}
BPNN = {"name": "bpnn", "elements": HCO, "cutoff": 3.5, "hidden": [8]}

SPECS = {
    "mpnn": MPNN,
    "mpnn vectors tanh": {**MPNN, "vector_channels": 4, "radial_activation": "tanh"},
    "bpnn": BPNN,
    "committee": {"name": "committee", "members": [MPNN, MPNN]},
    "mpnn_shallow": {**MPNN, "name": "mpnn_shallow", "heads": 3},
    "bpnn_shallow": {**BPNN, "name": "bpnn_shallow", "heads": 3},
    "llpr": {"name": "llpr", "model": MPNN, "members": 4},
    "sum": {
        "name": "sum",
        "terms": [
            {"name": "offsets", "elements": HCO, "energies": [-13.6, -1030.0, -2040.0]},
            MPNN,
            {"name": "zbl", "elements": HCO, "cutoff": 1.5},
            {"name": "lj", "elements": HCO, "sigma": 1.2, "epsilon": 0.01, "cutoff": 3.0},
        ],
    },
}


def structures() -> dict[str, Atoms]:
    """A molecule, one missing an element, isolated atoms (no edges), a periodic box
    smaller than two cutoffs (images interact) and the same box sheared."""
    ethanol = molecule("CH3CH2OH")
    apart = Atoms("HOH", positions=[[0, 0, 0], [5, 0, 0], [0, 6, 0]])
    box = molecule("CH3CH2OH")
    box.set_cell([5.0, 5.5, 6.0])
    box.pbc = True
    box.center()
    box.rattle(0.05, seed=3)
    sheared = box.copy()
    sheared.set_cell([[5.0, 0.0, 0.0], [1.7, 5.5, 0.0], [-0.8, 1.1, 6.0]], scale_atoms=True)
    return {
        "ethanol": ethanol,
        "methane": molecule("CH4"),
        "isolated atoms": apart,
        "periodic": box,
        "sheared": sheared,
    }


def _checkpoint(tmp_path, spec, *, dtype=torch.float64, calibration=None):
    torch.manual_seed(7)
    model = build_model(spec).to(dtype)
    if model.name == "llpr":
        n = model.model.n_last_layer_features
        model.set_posterior(1e-3 * torch.eye(n, dtype=dtype), 1e-2)
    path = tmp_path / "model.pt"
    save_model(path, model, calibration=calibration)
    return path


@pytest.mark.parametrize("kind", SPECS)
def test_exported_model_equals_the_eager_one(tmp_path, kind):
    spec = SPECS[kind]
    calibration = {"energy_scale": 1.7}
    path = _checkpoint(tmp_path, spec, calibration=calibration)
    exported = tmp_path / "exported.pt"
    export_model(path, exported)
    eager = load_calculator(path, domain_scores=False)
    calc = MetatomicCalculator(str(exported), uncertainty_threshold=None)
    differences = compare_export(eager, calc, structures())
    quantities = {d.quantity for d in differences}
    assert {"energy", "forces", "stress", "batched energy"} <= quantities
    if eager.model.n_members:
        assert "energy_uncertainty" in quantities
    worst = max(differences, key=lambda d: d.relative)
    assert worst.relative < 1e-6, worst


def test_float32_export_and_its_tolerance(tmp_path):
    path = _checkpoint(tmp_path, MPNN, dtype=torch.float32)
    differences = export_model(path, tmp_path / "exported.pt")
    calc = MetatomicCalculator(str(tmp_path / "exported.pt"))
    assert calc.model().capabilities().dtype == "float32"
    assert max(d.relative for d in differences) < 1e-4


def test_exported_forces_are_the_gradient_of_the_exported_energy(tmp_path):
    path = _checkpoint(tmp_path, MPNN)
    export_model(path, tmp_path / "exported.pt")
    atoms = structures()["sheared"]
    atoms.calc = MetatomicCalculator(str(tmp_path / "exported.pt"))
    forces = atoms.get_forces()
    h = 1e-4
    for index, axis in [(0, 0), (3, 1), (8, 2)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[index, axis] += sign * h
            energies.append(moved.get_potential_energy())
        numeric = -(energies[0] - energies[1]) / (2 * h)  # O(h²) error, relative to |F|
        assert forces[index, axis] == pytest.approx(numeric, rel=1e-6, abs=1e-6)


def test_ensemble_outputs_per_atom_and_selected_atoms(tmp_path):
    path = _checkpoint(tmp_path, SPECS["committee"], calibration={"energy_scale": 2.0})
    export_model(path, tmp_path / "exported.pt")
    calc = MetatomicCalculator(str(tmp_path / "exported.pt"), uncertainty_threshold=None)
    atoms = structures()["periodic"]
    capabilities = calc.model().capabilities()
    assert set(capabilities.outputs) >= {"energy", "energy_uncertainty", "energy_ensemble"}
    assert capabilities.interaction_range == pytest.approx(2 * MPNN["cutoff"])

    def run(sample_kind, selected=None):
        requested = {
            name: ModelOutput(quantity="", unit="eV", sample_kind=sample_kind)
            for name in ("energy", "energy_uncertainty", "energy_ensemble")
        }
        out = calc.run_model(atoms, requested, selected_atoms=selected)
        return {name: out[name].block().values.detach().numpy() for name in requested}

    per_system, per_atom = run("system"), run("atom")
    eager = load_calculator(path)
    atoms_eager = atoms.copy()
    atoms_eager.calc = eager
    assert per_system["energy"][0, 0] == pytest.approx(atoms_eager.get_potential_energy(), abs=1e-9)
    assert per_atom["energy"][:, 0] == pytest.approx(atoms_eager.get_potential_energies(), abs=1e-9)
    # The ensemble's members are spread by the calibrated scale: their std is the uncertainty.
    members = per_system["energy_ensemble"][0]
    assert members.shape == (2,)
    assert members.std(ddof=1) == pytest.approx(per_system["energy_uncertainty"][0, 0], rel=1e-9)
    assert per_system["energy_uncertainty"][0, 0] == pytest.approx(
        eager.get_property(outputs.ENERGY_STD, atoms_eager), rel=1e-9
    )
    assert members.mean() == pytest.approx(per_system["energy"][0, 0], abs=1e-9)
    assert per_atom["energy_ensemble"].sum(0) == pytest.approx(members, abs=1e-9)
    # Domain decomposition: only the selected atoms' energies count.
    chosen = [0, 2, 5]
    selected = Labels(["system", "atom"], torch.tensor([[0, k] for k in chosen], dtype=torch.int32))
    partial = run("system", selected)
    assert partial["energy"][0, 0] == pytest.approx(per_atom["energy"][chosen, 0].sum(), abs=1e-9)
    assert run("atom", selected)["energy"].shape == (3, 1)


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (
            {
                "name": "sum",
                "terms": [
                    MPNN,
                    {"name": "coulomb", "elements": HCO, "charges": [0.4, -0.2, -0.6]},
                ],
            },
            "model",
            "coulomb",
        ),
        ({**BPNN, "descriptor": "soap"}, "model", "SOAP"),
    ],
)
def test_models_that_do_not_export_are_refused_with_the_reason(tmp_path, spec, field, words):
    if spec.get("descriptor") == "soap":
        pytest.importorskip("featomic.torch")
    path = _checkpoint(tmp_path, spec)
    with pytest.raises(MlpotInputError, match=words) as err:
        export_model(path, tmp_path / "exported.pt")
    assert err.value.field == field
    assert not (tmp_path / "exported.pt").exists()


def test_delta_learned_model_is_refused(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "delta.pt"
    save_model(path, build_model(MPNN).double(), baseline={"name": "emt", "params": {}})
    with pytest.raises(MlpotInputError, match="baseline") as err:
        export_model(path, tmp_path / "exported.pt")
    assert err.value.field == "baseline"


def test_interaction_range_is_cutoff_times_layers():
    model = build_model(SPECS["sum"])
    assert interaction_range(model) == pytest.approx(2 * MPNN["cutoff"])
    assert interaction_range(build_model(BPNN)) == pytest.approx(BPNN["cutoff"])


def test_cli_export_writes_a_model_ase_runs(tmp_path):
    path = _checkpoint(tmp_path, MPNN)
    result = CliRunner().invoke(app, ["export", str(path)])
    assert result.exit_code == 0, result.output
    exported = tmp_path / "model-exported.pt"
    assert "wrote" in result.output and exported.exists()
    atoms = molecule("H2O")
    atoms.calc = MetatomicCalculator(str(exported))
    assert np.isfinite(atoms.get_forces()).all()
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "missing.pt")])
    assert missing.exit_code == 2
    assert "missing.pt" in missing.output and "Traceback" not in missing.output


def test_exported_model_names_an_unknown_element(tmp_path):
    path = _checkpoint(tmp_path, MPNN)
    export_model(path, tmp_path / "exported.pt")
    atoms = molecule("CH3CH2OH")
    atoms.numbers[0] = 7  # nitrogen: not an element of the model
    atoms.calc = MetatomicCalculator(str(tmp_path / "exported.pt"))
    # metatomic checks the declared atomic types and names the one that is missing
    with pytest.raises(Exception, match="does not support the atomic type '7'"):
        atoms.get_potential_energy()
