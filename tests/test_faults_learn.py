"""Faults around ``mlpot learn``: a second process on the store, faulty oracles on the driver
and in the workers, a poisoned store, a killed driver's children, resuming a finished run.

Every case here was once a way to lose, repeat or poison a label, or to crash a run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import ase.db
import numpy as np
import pytest
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from test_active_loop import SUPPORT, _check_store, _raw

from mlpot.active import learn, parse_learn_config
from mlpot.active.store import Store
from mlpot.active.store_lock import StoreInUseError, StoreLock
from mlpot.errors import MlpotInputError

QUIET = dict(log=lambda line: None)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SUPPORT, os.environ.get("PYTHONPATH", "")])}


def _command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlpot.cli.main", "learn", str(config), *extra]


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _wait_for(predicate, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def _requests(store_path: Path) -> int:
    return Store(store_path).count("request") if store_path.exists() else 0


# ---- one run per store ---------------------------------------------------------------------
def test_store_lock_names_the_holder_and_is_released(tmp_path):
    url = tmp_path / "store.db"
    held = StoreLock(url)
    with pytest.raises(StoreInUseError, match=f"process {os.getpid()} on"):
        StoreLock(url)
    held.release()
    StoreLock(url).release()  # free again


def test_a_second_run_and_a_resume_during_a_live_run_are_refused(tmp_path):
    """The live run's oracle is slow (0.3 s a call), so its held-out MD keeps it live for
    several seconds after its first requests are stored."""
    oracle = {"name": "support.oracles:slow_emt", "params": {"delay": 0.3}}
    raw = _raw("run", oracle=oracle, stop={"oracle_budget": 12, "max_iterations": 2})
    config = _write(tmp_path, raw)
    store_path = tmp_path / "run" / "store.db"
    live = subprocess.Popen(
        _command(config, "--trust-code"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    _wait_for(lambda: _requests(store_path) > 0)
    for extra in ((), ("--resume",)):
        second = subprocess.run(
            _command(config, "--trust-code", *extra), capture_output=True, text=True, env=ENV
        )
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"in use by another mlpot learn run (process {live.pid} on" in second.stderr
        assert "Traceback" not in second.stderr
    assert live.wait(timeout=600) == 0, live.stderr.read()[-2000:]
    _check_store(store_path, 12)  # nothing labelled twice, every request answered
    assert not list((tmp_path / "run").rglob("*.tmp"))


# ---- faulty oracles --------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["nan", "shape"])
def test_bad_oracle_answers_are_never_stored_or_integrated(tmp_path, monkeypatch, fault):
    """NaN or misshapen forces on 30 % of configurations: in the workers they become
    recorded failures, in the driver's test-set MD retried steps; nothing bad is stored."""
    monkeypatch.syspath_prepend(SUPPORT)
    oracle = {"name": "support.oracles:faulty_emt", "params": {"rate": 0.3, "fault": fault}}
    raw = _raw(tmp_path / "run", oracle=oracle, label={"executor": "thread", "retries": 0})
    result = learn(parse_learn_config(raw), trust_code=True, **QUIET)
    store = _check_store(result.store_path, 16)
    assert result.failures == store.count("failure") >= 1
    assert all("oracle returned" in f["error"] for f in store.failures())
    db = ase.db.connect(result.store_path)
    for row in db.select(kind="label"):
        forces = row.toatoms().get_forces()
        assert forces.shape == (row.natoms, 3) and np.isfinite(forces).all()
        assert np.isfinite(row.positions).all()
    assert store.count("label", uid="test-0") == 1 and len(store.labelled({"test"})) == 6


def test_relaxation_and_hessian_survive_a_failing_oracle(tmp_path, monkeypatch):
    """A 20 %-failing oracle during relaxation and the normal-mode Hessian: retried and
    recorded, and the run goes on (it used to end in a traceback)."""
    monkeypatch.syspath_prepend(SUPPORT)
    oracle = {"name": "support.oracles:flaky_emt", "params": {"rate": 0.2}}
    raw = _raw(
        tmp_path / "run",
        system="water",
        oracle=oracle,
        relax=True,
        initial={"method": "normal_modes", "count": 8},
        test={"frames": 4, "stride": 5, "equilibration": 5, "timestep_fs": 0.5},
        explore={"temperatures": [300], "steps": 20, "timestep_fs": 0.5, "check_interval": 4},
        train={
            "model": {"name": "bpnn", "cutoff": 3.5, "hidden": [8]},
            "training": {"epochs": 2, "batch_size": 4},
            "ensemble_size": 2,
            "workers": 1,
        },
        stop={"oracle_budget": 10, "max_iterations": 2, "patience_steps": 40},
    )
    result = learn(parse_learn_config(raw), trust_code=True, **QUIET)
    store = Store(result.store_path)
    stages = {f["stage"] for f in store.setup_failures()}
    assert stages and stages <= {"relax", "hessian", "test_md"}
    assert result.setup_failures == len(store.setup_failures())
    assert result.model_path.exists()


def test_every_label_failing_says_so_with_the_oracle_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(SUPPORT)
    oracle = {"name": "support.oracles:worker_failing_emt"}
    raw = _raw(tmp_path / "run", oracle=oracle)
    with pytest.raises(MlpotInputError) as err:
        learn(parse_learn_config(raw), trust_code=True, **QUIET)
    message = str(err.value)
    assert "the oracle failed on 8 of 8 initial requests" in message
    assert "injected oracle failure in a worker" in message


def test_a_poisoned_store_is_skipped_with_a_warning_and_relabelled(tmp_path):
    """A store written before answers were checked (NaN forces in a label, NaN positions
    in a test frame): --resume warns, skips those rows and labels again, never fails."""
    raw = _raw(tmp_path / "run", stop={"oracle_budget": 12, "max_iterations": 1})
    first = learn(parse_learn_config(raw), **QUIET)
    db = ase.db.connect(first.store_path, use_lock_file=False)
    store = Store(first.store_path)
    victim = store.labelled(reasons={"initial"})[0]
    bad = victim.atoms.copy()
    bad.calc = SinglePointCalculator(bad, energy=np.nan, forces=np.full((len(bad), 3), np.nan))
    db.write(bad, kind="label", uid=victim.uid + "-poisoned", attempts=1, oracle_s=0.0)
    nan_frame = victim.atoms.copy()
    nan_frame.positions[:] = np.nan
    nan_frame.calc = None
    db.write(nan_frame, kind="request", uid="test-poison", iteration=0, reason="test",
             model_version=-1)  # fmt: skip
    nan_frame.calc = SinglePointCalculator(
        nan_frame, energy=np.nan, forces=np.zeros((len(nan_frame), 3))
    )
    db.write(nan_frame, kind="label", uid="test-poison", attempts=1, oracle_s=0.0)
    db.write(victim.atoms.copy(), kind="request", uid=victim.uid + "-poisoned", iteration=0,
             reason="initial", model_version=-1)  # fmt: skip
    raw["stop"]["max_iterations"] = 2  # extend the finished run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = learn(parse_learn_config(raw), resume=True, **QUIET)
    texts = " ".join(str(w.message) for w in caught)
    assert "skipped" in texts and "non-finite" in texts
    after = Store(again.store_path)
    labelled = {item.uid for item in after.labelled()}
    assert victim.uid + "-poisoned" in labelled  # labelled anew, validly
    assert "test-poison" not in labelled
    assert len(after.models()) == 2


# ---- no strays ----------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    """All live descendants of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl")
def test_killing_the_driver_leaves_no_child_behind(tmp_path):
    raw = _raw("run", label={"executor": "process", "workers": 2, "retries": 1})
    config = _write(tmp_path, raw)
    store_path = tmp_path / "run" / "store.db"
    driver = subprocess.Popen(
        _command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for(lambda: _requests(store_path) > 0 and len(_children(driver.pid)) >= 2)
    children = _children(driver.pid)
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, not its process group
    driver.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_killed_driver_leaves_no_dask_worker_behind():
    """The Dask LocalCluster's worker processes go with a driver killed by SIGKILL."""
    code = (
        "from mlpot.active.executors import make_executor\n"
        "executor = make_executor('dask', workers=2)\n"
        "assert executor.submit(sum, [1, 2]).result() == 3\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert driver.stdout.readline().strip() == "ready"
    children = _children(driver.pid)
    assert len(children) >= 2
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=30)


# ---- resume semantics ---------------------------------------------------------------------
def test_resuming_a_finished_run_does_nothing_unless_the_budget_was_raised(tmp_path):
    raw = _raw("run", stop={"oracle_budget": 12, "max_iterations": 2, "patience_steps": 200})
    config = _write(tmp_path, raw)
    first = subprocess.run(_command(config), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    model = tmp_path / "run" / "model.pt"
    before, models = model.read_bytes(), len(Store(tmp_path / "run" / "store.db").models())
    again = subprocess.run(_command(config, "--resume"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already finished" in again.stdout and "nothing to do" in again.stdout
    assert model.read_bytes() == before
    assert len(Store(tmp_path / "run" / "store.db").models()) == models
    raw["stop"].update(oracle_budget=16, max_iterations=3)  # raised: the run goes on
    config = _write(tmp_path, raw)
    extended = subprocess.run(_command(config, "--resume"), capture_output=True, text=True)
    assert extended.returncode == 0, extended.stderr[-2000:]
    assert "already finished" not in extended.stdout
    store = _check_store(tmp_path / "run" / "store.db", 16)
    assert len(store.models()) > models and store.count("request", reason="initial") == 8
