"""Checkpoints: self-describing, versioned, loadable without pickled code."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.lj import LennardJones as AseLJ

from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_model
from mlpot.models.registry import build_model

FIXTURES = Path(__file__).parent / "fixtures"


def _argon():
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.mark.parametrize("version", range(1, FORMAT_VERSION + 1))
def test_every_past_format_still_loads(version):
    """Frozen fixture of each format: offsets (-0.25 eV per Ar) + ASE-equivalent LJ."""
    from mlpot.calculators import MlpotCalculator

    model = load_model(FIXTURES / f"checkpoint_v{version}.pt")
    atoms = _argon()
    atoms.calc = MlpotCalculator(model)
    energy = atoms.get_potential_energy()
    reference = _argon()
    reference.calc = AseLJ(sigma=3.4, epsilon=0.0104, rc=8.0)
    assert energy == pytest.approx(reference.get_potential_energy() - 0.25 * len(atoms), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-10)


def test_round_trip_is_self_describing(tmp_path):
    model = build_model({"name": "bpnn", "elements": [29, 47], "cutoff": 4.0, "hidden": [8]})
    model = model.double()
    path = tmp_path / "model.pt"
    save_model(path, model, training={"epochs": 3})
    payload = torch.load(path, weights_only=True)
    for key in (
        "format",
        "format_version",
        "mlpot_version",
        "model",
        "state_dict",
        "elements",
        "cutoff",
        "dtype",
        "units",
        "reference_energies",
        "calibration",
        "training",
    ):
        assert key in payload
    assert payload["elements"] == [29, 47] and payload["cutoff"] == 4.0
    assert payload["units"]["energy"] == "eV"
    loaded = load_model(path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_newer_format_fails_clearly(tmp_path):
    payload = load_checkpoint(FIXTURES / "checkpoint_v1.pt")
    payload["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    with pytest.raises(MlpotInputError, match="newer than this mlpot"):
        load_model(path)


def test_foreign_file_fails_clearly(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(MlpotInputError, match="not an mlpot model checkpoint") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_weights_that_do_not_fit_fail_clearly(tmp_path):
    payload = load_checkpoint(FIXTURES / "checkpoint_v1.pt")
    payload["state_dict"]["terms.0.energies"] = torch.zeros(3, dtype=torch.float64)
    path = tmp_path / "broken.pt"
    torch.save(payload, path)
    with pytest.raises(MlpotInputError, match="state_dict"):
        load_model(path)


def test_files_written_before_element_mixing_load_as_written(tmp_path):
    """Model files store the full config; one written before ``element_mixing`` existed
    lacks the key and must load as the shared-mixing mpnn it holds, also nested (a
    committee's members), while a config without the key gets today's default."""
    from mlpot.calculators import MlpotCalculator

    atoms = _argon()
    spec = {"name": "mpnn", "elements": [18], "cutoff": 4.0, "channels": 4}
    old_spec = {**spec, "element_mixing": False}
    assert build_model(spec).interactions[0].mixing.dim() == 4  # today: one mixing per element
    torch.manual_seed(0)
    shared = build_model(old_spec).double()
    committee = build_model({"name": "committee", "members": [old_spec, old_spec]}).double()
    for name, model in (("single", shared), ("committee", committee)):
        path = tmp_path / f"{name}.pt"
        save_model(path, model)
        payload = torch.load(path, weights_only=True)
        for member in payload["model"].get("members", [payload["model"]]):
            assert member.pop("element_mixing") is False  # as a file from before it existed
        torch.save(payload, path)
        loaded = load_model(path)
        for (key, a), b in zip(
            model.state_dict().items(), loaded.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), key
        atoms.calc = MlpotCalculator(loaded)
        energy = atoms.get_potential_energy()
        atoms.calc = MlpotCalculator(model)
        assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
