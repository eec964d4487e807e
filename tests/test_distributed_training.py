"""Data-parallel training under torchrun: two CPU processes (gloo) take the same steps as
one process with the same global batch, write one set of files, and resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from mlpot.models.checkpoint import load_model

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _config(data: str, output, *, epochs: int, model: dict) -> dict:
    return {
        "data": {"train": data, "validation_fraction": 0.2},
        "model": model,
        # 48 training structures in batches of 5: shards of 3 and 2 structures of 31 or 32
        # atoms (the loss must divide by the global counts), and a last batch of 3.
        "training": {
            "epochs": epochs,
            "batch_size": 5,
            "progress": False,
            "dtype": "float64",
            "learning_rate": 0.003,
        },
        "fisher": {"structures": 0},
        "output": str(output),
    }


def _write(tmp_path, name: str, config: dict):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(command: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _mlpot(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlpot.cli.main", *args]


def _torchrun(*args: str) -> list[str]:
    mlpot = shutil.which("mlpot")
    if mlpot is None:
        pytest.skip("the mlpot command is not on PATH")
    return [*TORCHRUN, "--no-python", mlpot, *args]


def _assert_same_parameters(a, b) -> None:
    one, two = load_model(a).state_dict(), load_model(b).state_dict()
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-9, atol=1e-11, msg=key)


@pytest.mark.parametrize(
    "model",
    [
        {"name": "bpnn", "cutoff": 4.0, "hidden": [8]},
        {"name": "mpnn", "cutoff": 4.0, "channels": 8, "layers": 2},
    ],
    ids=["bpnn", "mpnn"],
)
def test_two_processes_take_the_one_process_steps(emt_copper_xyz, tmp_path, model):
    single = _config(emt_copper_xyz, tmp_path / "single", epochs=3, model=model)
    _run(_mlpot("train", str(_write(tmp_path, "single", single))), tmp_path)
    parallel = _config(emt_copper_xyz, tmp_path / "parallel", epochs=3, model=model)
    result = _run(_torchrun("train", str(_write(tmp_path, "parallel", parallel))), tmp_path)
    _assert_same_parameters(tmp_path / "single" / "model.pt", tmp_path / "parallel" / "model.pt")
    # one writer: one history line per epoch, the summary printed once
    history = (tmp_path / "parallel" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2, 3]
    assert result.stdout.count("stopped after 3 epochs") == 1
    one = [
        json.loads(line)
        for line in (tmp_path / "single" / "history.jsonl").read_text().splitlines()
    ]
    two = [json.loads(line) for line in history]
    for a, b in zip(one, two, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-9)


def test_parallel_run_resumes(emt_copper_xyz, tmp_path):
    model = {"name": "bpnn", "cutoff": 4.0, "hidden": [8]}
    straight = _config(emt_copper_xyz, tmp_path / "straight", epochs=4, model=model)
    _run(_mlpot("train", str(_write(tmp_path, "straight", straight))), tmp_path)
    first = _config(emt_copper_xyz, tmp_path / "resumed", epochs=2, model=model)
    _run(_torchrun("train", str(_write(tmp_path, "first", first))), tmp_path)
    more = _config(emt_copper_xyz, tmp_path / "resumed", epochs=4, model=model)
    _run(_torchrun("train", str(_write(tmp_path, "more", more)), "--resume"), tmp_path)
    _assert_same_parameters(tmp_path / "straight" / "model.pt", tmp_path / "resumed" / "model.pt")
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and np.isfinite(metrics["validation"]["forces"]["rmse"])
