"""Exploration moves before it selects, and arriving labels end a trajectory only when
there are enough of them to retrain (a fast oracle must not cut every trajectory short)."""

import ase.io
import numpy as np
from ase.build import bulk
from uncertainty_models import committee_path, one_thread  # noqa: F401

from mlpot.active import learn, parse_learn_config
from mlpot.active.exploration import ExploreOptions, Thresholds, run_trajectory
from mlpot.active.store import Store
from mlpot.calculators import load_calculator


def _vacancy():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    del atoms[0]
    return atoms


def _moved(atoms, start) -> float:
    return float(np.abs(atoms.positions - start.positions).max())


def test_the_start_structure_is_never_a_candidate(one_thread):  # noqa: F811
    calc = load_calculator(committee_path())
    options = ExploreOptions(temperatures=[600], steps=20, timestep_fs=2.0, check_interval=5)
    start = _vacancy()
    every = Thresholds(force_std=1e-9)  # every check selects
    result = run_trajectory(start, calc, 600, options, thresholds=every, seed=1)
    assert [c.step for c in result.candidates] == [5, 10, 15, 20]
    assert min(_moved(c.atoms, start) for c in result.candidates) > 1e-3
    # a start already over the stop threshold: stops at the first step (checked at every
    # step), and that frame is labelled only when the config asks for it
    halt = Thresholds(force_std=1e-9, stop_force_std=2e-9)
    result = run_trajectory(start, calc, 600, options, thresholds=halt, seed=2)
    assert result.steps == 1 and result.stop_reason == "forces_std" and not result.candidates
    beyond = Thresholds(force_std=1e-9, stop_force_std=2e-9, label_beyond_stop=True)
    result = run_trajectory(start, calc, 600, options, thresholds=beyond, seed=2)
    assert [c.step for c in result.candidates] == [1]
    assert result.candidates[0].reason == "beyond_stop+forces_std"
    assert _moved(result.candidates[0].atoms, start) > 1e-3


def test_fast_oracle_does_not_cut_exploration(tmp_path):
    batch = 4
    raw = {
        "system": "cu-vacancy",
        "oracle": {"name": "emt"},
        "relax": False,
        "initial": {"method": "rattle", "count": 8, "stdev": 0.06, "strain": 0.01},
        "test": {"temperature": 500, "frames": 4, "stride": 5, "equilibration": 5},
        "explore": {
            "temperatures": [400, 700],
            "steps": 40,
            "timestep_fs": 2.0,
            "check_interval": 4,
        },
        # far above what a 4-epoch committee shows at the start: a trajectory that stops at
        # its first step labels nothing (label_beyond_stop is off)
        "select": {"force_std": 0.02, "stop_force_std": 10.0, "batch_size": batch},
        "label": {"executor": "thread", "workers": 2, "retries": 0},
        "train": {
            "model": {"name": "bpnn", "cutoff": 3.8, "hidden": [12]},
            "training": {"epochs": 4, "batch_size": 4},
            "ensemble_size": 2,
        },
        "stop": {"oracle_budget": 16, "max_iterations": 4, "patience_steps": 200},
        "validation": False,
        "output": str(tmp_path / "run"),
    }
    result = learn(parse_learn_config(raw), log=lambda line: None)
    store = Store(result.store_path)
    start = ase.io.read(tmp_path / "run" / "start.xyz")
    selected = store.labelled(exclude={"initial", "test"})
    assert selected and min(_moved(s.atoms, start) for s in selected) > 1e-3
    # a trajectory ended by arriving labels is the last of its iteration: enough arrived
    trajectories = store.trajectories()
    for k, t in enumerate(trajectories):
        if t["stop_reason"] == "labels arrived" and k + 1 < len(trajectories):
            assert trajectories[k + 1]["iteration"] == t["iteration"] + 1
