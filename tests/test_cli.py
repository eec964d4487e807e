"""The command line: train, then eval, as a user would run them; help, options, exit codes."""

import importlib
import importlib.metadata
import json

import pytest
import torch
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from mlpot.cli.main import app
from mlpot.cli.options import parse_key_values, use_resources
from mlpot.config_io import format_validation_error
from mlpot.errors import MlpotInputError
from mlpot.training.evaluation import evaluate_files


def test_train_then_eval(emt_copper_xyz, tmp_path):
    config = {
        "data": {"train": emt_copper_xyz, "validation_fraction": 0.2},
        "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [16]},
        "training": {"epochs": 3, "batch_size": 8, "progress": False},
        "output": "run",
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output
    assert "stopped after 3 epochs" in result.output
    model = tmp_path / "run" / "model.pt"  # output is relative to the config file
    assert model.exists()

    result = runner.invoke(app, ["eval", str(model), emt_copper_xyz, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    expected = evaluate_files(model, [emt_copper_xyz], device="cpu")
    for quantity in ("energy_per_atom", "forces", "stress"):
        assert (
            report[emt_copper_xyz][quantity]["rmse"] == expected[emt_copper_xyz][quantity]["rmse"]
        )
    assert report[emt_copper_xyz]["n_structures"] == 60

    table = runner.invoke(app, ["eval", str(model), emt_copper_xyz])
    assert "forces" in table.output and "meV/Å" in table.output


def test_invalid_config_exits_cleanly(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {train: x.xyz}\nmodel: {name: bpnn, hiden: [8]}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    assert "hiden" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------- help and options

COMMANDS = [
    "learn",
    "train",
    "eval",
    "validate",
    "calibrate",
    "llpr",
    "probe",
    "fisher",
    "export",
    "response",
    "spectrum",
    "free-energy",
    "pimd",
    "growth",
    "qmml",
    "diabatic",
    "nac",
    "boyle",
    "torsion-fit",
]
# Commands that may build an oracle named in a file, a config or an option (export and
# spectrum refuse a delta-learned checkpoint instead of running its baseline).
RUN_ORACLES = [
    c for c in COMMANDS if c not in ("export", "response", "spectrum", "diabatic", "nac")
]


def test_bare_mlpot_prints_help_and_version_exists():
    runner = CliRunner()
    bare = runner.invoke(app, [], prog_name="mlpot")
    assert bare.exit_code == 0
    assert "Usage: mlpot [OPTIONS] COMMAND" in bare.output and "Commands:" in bare.output
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0
    assert version.output.strip() == f"mlpot {importlib.metadata.version('mlpot')}"


def test_command_summaries_are_whole_sentences():
    """One line per command in ``mlpot --help``, each a sentence of its own."""
    output = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}).output
    lines = output.split("Commands:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in lines] == COMMANDS
    for line in lines:
        assert line.endswith(".") and not line.endswith("..."), line


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_flags_as_flags_and_threads_everywhere(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert "--threads N" in result.output
    assert ("--trust-code " in result.output) == (command in RUN_ORACLES)


def test_calibrate_output_options_say_what_they_write():
    output = CliRunner().invoke(app, ["calibrate", "--help"]).output
    assert "--output-model FILE" in output and "--output-plot FILE" in output
    assert "--out " not in output and "-o," not in output


def test_key_value_pairs_are_read_as_yaml():
    assert parse_key_values(["sigma=2.3", " smooth =true", "name=a=b"]) == {
        "sigma": 2.3,
        "smooth": True,
        "name": "a=b",
    }
    assert parse_key_values(None) == {}
    for bad in ("sigma", "=2", "x=[1"):
        with pytest.raises(MlpotInputError, match="--oracle-param"):
            parse_key_values([bad])


def test_bad_option_values_exit_2_without_a_traceback(tmp_path):
    runner = CliRunner()
    config = tmp_path / "config.yaml"
    config.write_text("data: {train: x.xyz}\n")
    result = runner.invoke(app, ["train", str(config), "--device", "nonsense"])
    assert result.exit_code == 2 and "not a torch device" in result.output
    result = runner.invoke(app, ["train", str(config), "--threads", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    args = ["validate", "m.pt", "--oracle", "lj", "--system", "cu-fcc", "--oracle-param", "x"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output


# ------------------------------------------------------------------------------------ --device

#: Each command that evaluates a model, with arguments that reach its library call (the
#: files need not exist: the library call is replaced, or the device is refused first).
EVALUATING = {
    "eval": (["eval", "m.pt", "d.xyz"], "mlpot.training.evaluation.evaluate_files"),
    "fisher": (["fisher", "m.pt", "d.xyz"], "mlpot.training.finetune.store_fisher_from_files"),
    "calibrate": (["calibrate", "m.pt", "d.xyz"], "mlpot.uncertainty.assess.calibrate_files"),
    "llpr": (
        ["llpr", "m.pt", "d.xyz", "--output-model", "o.pt"],
        "mlpot.uncertainty.llpr.llpr_checkpoint",
    ),
    "probe": (
        ["probe", "m.pt", "s.xyz", "--oracle", "emt"],
        "mlpot.uncertainty.assess.load_with_statistics",
    ),
    "validate": (
        ["validate", "m.pt", "--oracle", "emt", "--system", "cu-fcc"],
        "mlpot.validation.run_validation",
    ),
}


@pytest.mark.parametrize("command", list(EVALUATING))
def test_bad_or_unavailable_device_exits_2_on_every_evaluating_command(command):
    args, _ = EVALUATING[command]
    runner = CliRunner()
    help_text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "100"}).output
    assert "--device DEVICE" in help_text
    result = runner.invoke(app, [*args, "--device", "nonsense"])
    assert result.exit_code == 2, result.output
    assert "not a torch device: 'nonsense'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        result = runner.invoke(app, [*args, "--device", "cuda"])
        assert result.exit_code == 2 and "is not available here" in result.output


@pytest.mark.parametrize("command", list(EVALUATING))
def test_device_reaches_the_library_call(command, monkeypatch):
    """``--device`` is handed to the library function (default cpu); it stops there."""
    args, target = EVALUATING[command]
    module, name = target.rsplit(".", 1)
    seen = []

    def fake(*_args, **kwargs):
        seen.append(kwargs.get("device"))
        raise MlpotInputError("stopped here")

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    runner = CliRunner()
    for extra, expected in (([], "cpu"), (["--device", "cpu:0"], "cpu:0")):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2 and "stopped here" in result.output, result.output
        assert seen.pop() == expected


def test_probe_passes_the_device_to_the_probe(monkeypatch, tmp_path):
    from ase.build import bulk

    from mlpot.uncertainty.assess import LoadedModel

    structure = tmp_path / "s.xyz"
    bulk("Cu", cubic=True).write(structure)
    loaded = LoadedModel(model=None, calibration=None, domain=object())
    monkeypatch.setattr("mlpot.uncertainty.assess.load_with_statistics", lambda *a, **k: loaded)
    seen = []

    def fake_probe(*_args, **kwargs):
        seen.append(kwargs.get("device"))
        raise MlpotInputError("stopped here")

    monkeypatch.setattr("mlpot.uncertainty.probe.probe", fake_probe)
    args = ["probe", "m.pt", str(structure), "--oracle", "emt", "--device", "cpu:0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "stopped here" in result.output, result.output
    assert seen == ["cpu:0"]


def test_threads_are_set():
    previous = torch.get_num_threads()
    try:
        use_resources(1, "cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_pydantic_errors_are_formatted_in_one_place():
    from pydantic import BaseModel

    class Section(BaseModel):
        epochs: int
        rate: float

    with pytest.raises(ValidationError) as info:
        Section(epochs="many", rate="fast")
    assert format_validation_error(info.value, prefix="training") == (
        "training.epochs: Input should be a valid integer, unable to parse string as an "
        "integer; training.rate: Input should be a valid number, unable to parse string as a "
        "number"
    )
