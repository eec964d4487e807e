"""The active-learning loop end to end with EMT: plain, failing oracle, Dask, kill/resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlpot.active import learn, parse_learn_config
from mlpot.active.store import Store
from mlpot.errors import MlpotInputError

SUPPORT = str(Path(__file__).parent)  # makes `support.oracles` importable in workers


def _raw(output, **overrides):
    raw = {
        "system": "cu-vacancy",
        "oracle": {"name": "emt"},
        "relax": False,
        "initial": {"method": "rattle", "count": 8, "stdev": 0.06, "strain": 0.01},
        "test": {
            "temperature": 500,
            "frames": 6,
            "stride": 5,
            "equilibration": 10,
            "timestep_fs": 2.0,
        },
        "explore": {
            "temperatures": [400, 700],
            "steps": 60,
            "timestep_fs": 2.0,
            "check_interval": 4,
        },
        # stop_force_std well above what a 6-epoch committee shows at the start: trajectories
        # that stop at their first step label nothing (label_beyond_stop is off)
        "select": {"force_std": 0.02, "stop_force_std": 10.0, "batch_size": 4},
        "label": {"executor": "thread", "workers": 2, "retries": 1},
        "train": {
            "model": {"name": "bpnn", "cutoff": 3.8, "hidden": [12]},
            "training": {"epochs": 6, "batch_size": 4},
            "ensemble_size": 2,
            "workers": 1,  # members in this process: tiny trainings, no process start-up
        },
        "stop": {"oracle_budget": 16, "max_iterations": 4, "patience_steps": 200},
        "validation": False,
        "output": str(output),
    }
    raw.update(overrides)
    return raw


def _check_store(path, budget):
    """Every request answered exactly once (a label or a failure), nothing over budget."""
    store = Store(path)
    requests = store.requests()
    labels = [row.uid for row in store.db.select(kind="label")]
    failures = [row.uid for row in store.db.select(kind="failure")]
    assert len(labels) == len(set(labels)) and len(failures) == len(set(failures))
    assert not set(labels) & set(failures)
    assert set(labels) | set(failures) == set(requests)
    learned = [u for u, r in requests.items() if r.reason != "test"]
    assert len(learned) <= budget
    return store


def test_learn_end_to_end_with_emt(tmp_path):
    result = learn(parse_learn_config(_raw(tmp_path / "run")), log=lambda line: None)
    store = _check_store(result.store_path, 16)
    assert result.model_path.exists()
    reasons = {row.reason for row in store.requests().values()}
    assert {"initial", "test", "forces_std"} <= reasons
    uncertain = [r for r in store.requests().values() if r.reason == "forces_std"]
    assert all(r.force_std > 0.02 and r.model_version >= 0 for r in uncertain)
    assert len(result.iterations) >= 2 and store.count("model") == len(result.iterations)
    assert result.oracle_calls["labels"] == 16 and result.failures == 0
    # every exploration round ended is recorded with its figures
    ended = store.iterations()
    assert ended and [e["iteration"] for e in ended] == [e["model_version"] for e in ended]
    assert {e["outcome"] for e in ended} <= {"retrain", "converged", "stuck", "budget"}
    explored = [r for r in store.requests().values() if r.reason not in ("initial", "test")]
    assert sum(e["requested"] for e in ended) == len(explored)
    assert sum(e["trajectories"] for e in ended) == len(store.trajectories())
    assert all(e["ended"] >= e["started"] > 0 for e in ended)
    # a second run into the same output without --resume is refused, not mixed in
    with pytest.raises(MlpotInputError, match="already holds a learning run"):
        learn(parse_learn_config(_raw(tmp_path / "run")), log=lambda line: None)


def test_failing_oracle_does_not_stop_the_loop(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(SUPPORT)
    raw = _raw(
        tmp_path / "run", oracle={"name": "support.oracles:flaky_emt", "params": {"rate": 0.2}}
    )
    result = learn(parse_learn_config(raw), trust_code=True, log=lambda line: None)
    store = _check_store(result.store_path, 16)
    failures = store.failures()
    assert result.failures == len(failures) >= 1
    odd = [f for f in failures if "injected oracle failure" not in f["error"] or f["attempts"] != 2]
    assert not odd
    assert result.model_path.exists()


def test_learn_on_a_dask_local_cluster(tmp_path):
    raw = _raw(
        tmp_path / "run",
        label={"executor": "dask", "workers": 2},
        stop={"oracle_budget": 12, "max_iterations": 2, "patience_steps": 200},
    )
    result = learn(parse_learn_config(raw), log=lambda line: None)
    _check_store(result.store_path, 12)
    assert result.model_path.exists()


def test_killed_learning_resumes_without_losing_or_repeating_labels(tmp_path):
    raw = _raw(
        "run",
        label={"executor": "process", "workers": 1, "retries": 1},
        stop={"oracle_budget": 20, "max_iterations": 4, "patience_steps": 200},
    )
    config = tmp_path / "learn.yaml"
    config.write_text(yaml.safe_dump(raw))
    store_path = tmp_path / "run" / "store.db"
    command = [sys.executable, "-m", "mlpot.cli.main", "learn", str(config)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once exploration has sent its first requests
        if store_path.exists() and Store(store_path).count("request", reason="forces_std"):
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the run and its labelling workers
    process.wait()
    before = Store(store_path)
    assert before.count("request", reason="forces_std") >= 1
    finished = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    _check_store(store_path, 20)
    assert "stopped:" in finished.stdout
