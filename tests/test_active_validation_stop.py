"""Validation as the stopping rule of ``mlpot learn``: a committee that passes every check
stops the run (``validated``), failing checks steer exploration (a failed dimer check sends
short-distance dimers to the oracle), and the time budget stops a run with the failing
checks named and the way to go on, which ``--resume`` with a raised budget then takes.

The system is a 13-atom copper icosahedron with EMT as the oracle: its checks are the
molecular ones (errors, NVT, NVE, RDF, vibrations, dimers), and a small BPNN committee
with ZBL repulsion passes them within a couple of iterations. A small message-passing
committee without ZBL knows nothing of distances far below the bond length, where no label
is: its dimer check fails (no wall at half a bond length).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.cluster import Icosahedron
from ase.io import write

from mlpot.active import learn, parse_learn_config
from mlpot.active.store import Store

QUIET = dict(log=lambda line: None)
BPNN = {"name": "bpnn", "cutoff": 4.0, "hidden": [16]}
ZBL = {"name": "zbl", "cutoff": 0.75, "onset": 0.5, "covalent": True}
UNWALLED = {"name": "mpnn", "cutoff": 4.0, "channels": 8, "layers": 1}


def _cluster(tmp_path: Path) -> str:
    atoms = Icosahedron("Cu", 2)  # 13 atoms
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    path = tmp_path / "cu13.xyz"
    write(path, atoms)
    return str(path)


def _raw(tmp_path: Path, *, model: dict, **overrides) -> dict:
    raw = {
        "system": _cluster(tmp_path),
        "oracle": {"name": "emt"},
        "relax": True,
        "initial": {"method": "rattle", "count": 16, "stdev": 0.05},
        "test": {
            "temperature": 300,
            "frames": 6,
            "stride": 5,
            "equilibration": 10,
            "timestep_fs": 2.0,
        },
        "explore": {"temperatures": [300], "steps": 100, "timestep_fs": 2.0},
        "select": {
            "force_std": 0.05,
            "stop_force_std": 10.0,
            "batch_size": 8,
            "strategy": "max_variance",
        },
        "label": {"executor": "thread", "workers": 1},
        "train": {
            "model": model,
            "training": {"epochs": 60, "batch_size": 4, "learning_rate": 0.01},
            "ensemble_size": 2,
            "workers": 1,
        },
        "stop": {"oracle_budget": 60, "max_iterations": 2, "patience_steps": 200},
        "output": str(tmp_path / "run"),
    }
    raw.update(overrides)
    return raw


def test_a_committee_that_passes_its_validation_stops_validated(tmp_path):
    raw = _raw(tmp_path, model={"name": "sum", "terms": [BPNN, ZBL]})
    raw["stop"]["target_force_rmse"] = 1.0  # met: judged beside the checks
    raw["train"]["workers"] = 2  # the members train at once, in processes of their own
    result = learn(parse_learn_config(raw), **QUIET)
    assert result.stop_reason.startswith("validated")
    assert result.validation_passed and not result.failing_checks
    store = Store(result.store_path)
    validations = store.validations()
    assert validations[-1]["passed"] and validations[-1]["failing"] == {}
    assert validations[-1]["version"] == store.models()[-1]["version"]
    judged = {name.split(".")[0] for name in validations[-1]["figures"]}
    assert judged == {"errors", "nvt", "nve", "rdf", "vibrations", "dimers", "target_force_rmse"}
    assert store.stopped()["reason"] == result.stop_reason
    assert result.report_path.exists()  # the loop's validation of the final model, written


def test_a_failing_dimer_check_sends_short_distances_to_the_oracle(tmp_path):
    """The committee has no wall at half a Cu-Cu bond: the validation after the first
    iteration fails ``dimers``, and isolated Cu2 at short distances are labelled (reason
    ``dimers``) before the loop goes on."""
    raw = _raw(
        tmp_path,
        model=UNWALLED,
        stop={"oracle_budget": 26, "max_iterations": 1, "patience_steps": 200},
    )
    result = learn(parse_learn_config(raw), **QUIET)
    store = Store(result.store_path)
    first = store.validations()[0]
    assert first["version"] == 0 and not first["passed"] and "dimers" in first["failing"]
    (z1, z2, distances), *_ = first["steer"]["dimers"]
    assert (z1, z2) == (29, 29) and max(distances) < 2.5  # below the cluster's bonds
    dimers = [r for r in store.requests().values() if r.reason == "dimers"]
    assert dimers and all(r.natoms == 2 and r.model_version == 0 for r in dimers)
    assert sorted(round(r.distance, 3) for r in dimers) == sorted(distances)[: len(dimers)]
    labelled = store.labelled(reasons={"dimers"})
    assert labelled and all(np.isfinite(x.atoms.get_potential_energy()) for x in labelled)
    # the dimers are trained on: the next committee has more labels than the first
    models = store.models()
    assert len(models) >= 2 and models[1]["metrics"]["n_train"] > models[0]["metrics"]["n_train"]


def test_a_committee_above_the_force_target_is_not_validated_and_learning_goes_on(tmp_path):
    """The same committee as above, with a test force RMSE target it cannot reach: no
    committee is validated during the run (the target fails first), the loop goes on past
    ``max_iterations`` exploring at the test temperature until the oracle budget, and the
    final verdict names the target with the figure and how to go on."""
    raw = _raw(
        tmp_path,
        model={"name": "sum", "terms": [BPNN, ZBL]},
        stop={
            "oracle_budget": 40,
            "max_iterations": 1,
            "patience_steps": 200,
            "target_force_rmse": 1e-4,
        },
    )
    lines: list[str] = []
    result = learn(parse_learn_config(raw), log=lines.append)
    store = Store(result.store_path)
    models = store.models()
    assert result.stop_reason == "oracle budget of 40 labels" and len(models) >= 3
    assert store.validations() == []  # judged by the target only: no oracle MD spent
    assert sum("meV/Å above the target 0.1: learning on" in line for line in lines) >= 2
    assert not result.validation_passed and "target_force_rmse" in result.failing_checks
    missed = result.failing_checks["target_force_rmse"]["figures"]["test_force_rmse"]
    assert missed["bound"] == "<= 0.0001"
    assert missed["value"] == pytest.approx(models[-1]["metrics"]["test_force_rmse"])
    assert "--resume" in result.continue_hint


def test_the_embedded_default_asks_for_60_meV_per_angstrom():
    assert parse_learn_config(None).stop.target_force_rmse == 0.06
    assert parse_learn_config({}).stop.target_force_rmse is None  # a config's own default


def _command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlpot.cli.main", "learn", str(config), *extra]


def test_the_time_budget_names_the_failing_checks_and_resume_goes_on(tmp_path):
    raw = _raw(
        tmp_path,
        model=UNWALLED,
        stop={"oracle_budget": 60, "max_iterations": 4, "max_time_s": 1},
        output="run",
    )
    config = tmp_path / "learn.yaml"
    config.write_text(yaml.safe_dump(raw))
    first = subprocess.run(_command(config), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "stopped: time budget of 1 s" in first.stdout
    assert "validation fails: " in first.stdout and "dimers (" in first.stdout
    assert "stop: {max_time_s: 2}" in first.stdout and "--resume" in first.stdout
    store_path = tmp_path / "run" / "store.db"
    stopped = Store(store_path).stopped()
    assert stopped["max_time_s"] == 1 and len(Store(store_path).models()) == 1
    # the same budget: nothing to do; a raised one: the run goes on where it stopped
    again = subprocess.run(_command(config, "--resume"), capture_output=True, text=True)
    assert "already finished" in again.stdout and "validation fails: " in again.stdout
    raw["stop"].update(max_time_s=600, max_iterations=2)
    raw["validation"] = False
    config.write_text(yaml.safe_dump(raw))
    extended = subprocess.run(_command(config, "--resume"), capture_output=True, text=True)
    assert extended.returncode == 0, extended.stderr[-2000:]
    assert "already finished" not in extended.stdout
    store = Store(store_path)
    assert len(store.models()) == 2 and store.stopped()["reason"] == "2 iterations"
    assert store.stopped()["elapsed_s"] > stopped["elapsed_s"]  # the clock went on
    assert store.count("request", reason="initial") == 16  # nothing set up twice
