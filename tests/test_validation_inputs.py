"""Bad input to the validation gets a clear MlpotInputError (exit status 2 on the command
line); the command itself runs end to end on a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.lj import LennardJones as AseLennardJones
from typer.testing import CliRunner

from mlpot.cli.main import app
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import save_model
from mlpot.models.registry import build_model
from mlpot.validation import run_validation

LJ_MODEL = {"name": "lj", "elements": [29], "sigma": 2.338, "epsilon": 0.409, "cutoff": 6.0}
LJ_ORACLE = {"sigma": 2.338, "epsilon": 0.409, "rc": 6.0, "smooth": True}
TINY = {  # runs every check in a few seconds; the figures are not the point here
    "equilibration_steps": 0,
    "md_steps": 20,
    "nve_steps": 20,
    "sample_interval": 10,
    "neb_images": 1,
    "neb_steps": 20,
    "dimer_points": 10,
    "eos_points": 5,
}
ORACLE_ARGS = [f"--oracle-param={k}={v}" for k, v in LJ_ORACLE.items()]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lj(**changes):
    return build_model({**LJ_MODEL, "smooth": True, **changes})


class NoStressLJ(AseLennardJones):
    """ASE's Lennard-Jones that does not offer stress (like a molecular code)."""

    implemented_properties = ["energy", "energies", "free_energy", "forces"]


def run(model=None, **kwargs):
    args = {"oracle": "lj", "oracle_params": LJ_ORACLE, "settings": TINY, "progress": False}
    return run_validation(model if model is not None else lj(), **{**args, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"system": "cu-bcc"}, "unknown system 'cu-bcc'"),
        (
            {"system": "no/such/file.xyz"},
            "not a built-in (cu-fcc, cu-vacancy, ethanol, methanol, water)",
        ),
        ({"system": "ethanol"}, "element(s) H, C, O the model does not know"),
        ({"oracle": "dft-magic", "oracle_params": {}}, "unknown oracle 'dft-magic'"),
        ({"oracle": 42}, "oracle must be a name, a dict or an ASE calculator"),
        ({"oracle": {"sigma": 2.0}}, "an oracle dict needs a 'name'"),
        ({"model": "missing.pt"}, "checkpoint file not found"),
        ({"checks": ["errors", "phonons"]}, "unknown check(s) ['phonons']"),
        ({"settings": {"md_step": 10}}, "settings"),
        ({"settings": {"timestep_fs": -1.0}}, "settings.timestep_fs"),
        ({"tolerances": {"barrier": 0}}, "tolerances.barrier"),
        ({"temperature": -5.0}, "positive number of K"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    model = kwargs.pop("model", None)
    with pytest.raises(MlpotInputError) as info:
        run(model, **kwargs)
    assert message in str(info.value)


def test_unreadable_structure_file_names_the_file(tmp_path):
    path = tmp_path / "broken.xyz"
    path.write_text("3\nnot really\nCu 0 0\n")
    with pytest.raises(MlpotInputError) as info:
        run(system=str(path))
    assert "broken.xyz" in str(info.value) and "cannot read a structure" in str(info.value)


def test_bad_checkpoint_is_named(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(MlpotInputError, match="model.pt"):
        run(model=str(path))


def test_oracle_without_stress_explicit_check_is_an_error():
    with pytest.raises(MlpotInputError) as info:
        run(oracle=NoStressLJ(**LJ_ORACLE), oracle_params=None, checks=["eos", "elastic"])
    assert "'elastic' needs the oracle's stress" in str(info.value)
    assert "NoStressLJ" in str(info.value)


def test_oracle_without_stress_skips_with_the_reason():
    report = run(oracle=NoStressLJ(**LJ_ORACLE), oracle_params=None)
    elastic = report.check("elastic")
    assert elastic.status == "skip" and "cannot compute stress" in elastic.reason
    errors = report.check("errors")
    assert "stress_kT" not in errors.figures and "has no stress" in errors.details["note"]
    assert report.check("eos").status == "pass"  # energies only
    assert report.oracle["stress"] is False


def test_structure_file_and_atoms_are_systems(tmp_path):
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    path = tmp_path / "cu.xyz"
    crystal.write(path)
    from_file = run(system=str(path), checks=["eos"])
    from_atoms = run(system=crystal, checks=["eos"])
    assert from_file.system["kind"] == "crystal" and from_file.system["n_atoms"] == 32
    b_file = from_file.check("eos").figures["bulk_modulus_model_GPa"]
    assert b_file == pytest.approx(from_atoms.check("eos").figures["bulk_modulus_model_GPa"])


def test_caller_model_is_not_modified():
    model = lj().float()
    run(model, checks=["eos"])
    assert model.config()["epsilon"] == 0.409 and next(iter(model.buffers()), None) is None
    assert model.training  # not switched to eval mode behind the caller's back


def test_cli_validate_writes_report_and_exit_status(tmp_path):
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    save_model(good, lj())
    save_model(bad, lj(epsilon=0.5))
    config = tmp_path / "validation.yaml"
    config.write_text(yaml.safe_dump({"settings": TINY, "tolerances": {"barrier": 0.1}}))
    runner = CliRunner()
    common = ["--oracle", "lj", *ORACLE_ARGS, "--system", "cu-fcc", "--config", str(config)]
    result = runner.invoke(
        app, ["validate", str(good), *common, "--checks", "errors,eos", "--output", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "eos" in result.output and "2 passed, 0 failed" in result.output
    assert (tmp_path / "report.html").exists()
    figures = json.loads((tmp_path / "report.json").read_text())
    assert [c["status"] for c in figures["checks"]] == ["pass", "pass"]
    assert figures["settings"]["settings"]["md_steps"] == TINY["md_steps"]
    assert figures["settings"]["tolerances"]["barrier"] == 0.1

    args = ["validate", str(bad), *common, "--checks", "eos", "--output", str(tmp_path / "b")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.output)
    assert summary["passed"] is False
    assert summary["checks"][0]["failed"] == ["bulk_modulus_relative_error"]


def test_cli_bad_input_exits_2(tmp_path):
    model = tmp_path / "model.pt"
    save_model(model, lj())
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(model), "--oracle", "lj", "--system", "nacl"])
    assert result.exit_code == 2
    assert "unknown system 'nacl'" in result.output
    result = runner.invoke(
        app, ["validate", str(model), "--oracle", "lj", "--system", "cu-fcc", "--oracle-param", "x"]
    )
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    config = tmp_path / "bad.yaml"
    config.write_text("settings: {md_steps: 5}\nplots: yes\n")
    result = runner.invoke(
        app,
        ["validate", str(model), "--oracle", "lj", "--system", "cu-fcc", "--config", str(config)],
    )
    assert result.exit_code == 2 and "unknown section(s) ['plots']" in result.output


def test_one_atom_cell_skips_what_needs_more_atoms():
    report = run(system=bulk("Cu", "fcc", a=3.61))  # primitive cell, 1 atom
    status = {c.name: c.status for c in report.checks}
    assert status == {
        **{name: "skip" for name in ("errors", "nvt", "nve", "rdf", "defects", "neb")},
        "vibrations": "skip",
        "infrared": "skip",
        "elastic": "pass",
        "eos": "pass",
        "dimers": "pass",
    }
    assert "needs at least 8 atoms" in report.check("defects").reason
