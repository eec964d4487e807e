"""The command line: train, then eval, as a user would run them."""

import json

import yaml
from typer.testing import CliRunner

from mlpot.cli.main import app
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

    result = runner.invoke(app, ["eval", str(model), emt_copper_xyz, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    expected = evaluate_files(model, [emt_copper_xyz])
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
