"""Active learning versus random sampling: oracle calls to reach a target test force RMSE.

Both arms train the same committee (model, training settings, ensemble size, calibration:
``mlpot.active.training_step.train_iteration``) and are scored on the same held-out test
set, oracle Langevin MD at 600 K. Both start from the same initial labels.

* **active**: ``mlpot.active.learn`` — exploration MD (or adversarial MD with ``--explore
  adversarial``) with the current committee, selection by calibrated force std (and T² with
  ``--t2-quantile``), asynchronous labelling, retraining every ``batch`` arrived labels;
* **random**: oracle Langevin MD at the same exploration temperatures (one trajectory per
  temperature, frames every ``stride`` steps); after each retraining ``batch`` more frames,
  drawn uniformly without replacement from that pool, join the training set.

Oracle calls counted on the curves are labels in the training set (initial + added).
Neither arm's set-up (relaxation, normal modes) nor the test set is counted; the random
arm's pool costs one oracle call per MD step as well, printed separately.

The target defaults to 1.05 x the larger of the two arms' best test RMSE, so both reach
it; ``--target`` sets it. The ratio printed is random calls / active calls to first reach
it (the goal: >= 3). Also printed: the fraction of the active arm's oracle wall-clock time
hidden behind exploration (and behind exploration or training), from the intervals in its
store.

Usage::

    python bench/active_vs_random.py --system cu-vacancy --quick     # EMT, a few minutes
    python bench/active_vs_random.py --quick                         # ethanol, GFN2-xTB
    python bench/active_vs_random.py --system cu-vacancy --explore adversarial
    python bench/active_vs_random.py --system ethanol                # full
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "cu-vacancy": {
        "oracle": {"name": "emt"},
        "initial": {"method": "rattle", "count": 8, "stdev": 0.05, "strain": 0.01},
        "explore": {"temperatures": [400.0, 800.0], "timestep_fs": 2.0, "check_interval": 5},
        "test": {"timestep_fs": 2.0, "stride": 10, "equilibration": 100},
        "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [16, 16]},
        "select": {"force_std": 0.05, "stop_force_std": 1.0},
    },
    "ethanol": {
        "oracle": {"name": "xtb"},
        "initial": {"method": "normal_modes", "count": 8, "temperature": 300.0},
        "explore": {"temperatures": [300.0, 600.0], "timestep_fs": 0.5, "check_interval": 5},
        "test": {"timestep_fs": 0.5, "stride": 10, "equilibration": 100},
        "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [32, 32]},
        "select": {"force_std": 0.1, "stop_force_std": 1.5},
    },
}
MODES = {  # budget (labels), test frames, MD steps per exploration trajectory, training
    # A fixed number of epochs (the time limit is only a safety cap): a wall-clock limit on
    # a busy machine would train larger sets for fewer epochs and bury the comparison in noise.
    "quick": {
        "budget": 40,
        "test": 30,
        "steps": 300,
        "epochs": 100,
        "max_time_s": 60.0,
        "members": 2,
    },
    "full": {
        "budget": 160,
        "test": 100,
        "steps": 600,
        "epochs": 300,
        "max_time_s": 600.0,
        "members": 3,
    },
}


def learn_config(args, mode: dict) -> dict:
    s = SETTINGS[args.system]
    explore = {**s["explore"], "steps": mode["steps"], "mode": args.explore}
    select = {**s["select"], "batch_size": args.batch, "strategy": args.strategy}
    if args.t2_quantile is not None:
        select["t2_quantile"] = args.t2_quantile
    return {
        "system": args.system,
        "oracle": s["oracle"],
        "relax": True,
        "initial": s["initial"],
        "test": {**s["test"], "temperature": 600.0, "frames": mode["test"]},
        "explore": explore,
        "select": select,
        "label": {"executor": "process", "workers": args.workers, "retries": 1},
        "train": {
            "model": s["model"],
            "training": {
                "epochs": mode["epochs"],
                "max_time_s": mode["max_time_s"],
                "batch_size": 8,
                "learning_rate": 0.01,
                "early_stopping_patience": 50,
            },
            "ensemble_size": args.members or mode["members"],
        },
        "stop": {
            "oracle_budget": mode["budget"],
            "max_iterations": 1000,
            "patience_steps": 10 * mode["steps"],
        },
        "validation": False,
        "seed": args.seed,
        "output": str(args.out / "active"),
    }


def run_active(config) -> tuple[list[dict], dict]:
    from mlpot.active import learn

    start = time.perf_counter()
    result = learn(config, log=lambda line: print("  [active]", line, flush=True))
    curve = [
        {"calls": it["n_train"] + it["n_validation"], "rmse": it["test_force_rmse"]}
        for it in result.iterations
    ]
    info = {
        "stop_reason": result.stop_reason,
        "setup_calls": result.oracle_calls["setup"],
        "hidden_behind_exploration": result.hidden_oracle_fraction,
        "hidden_behind_exploration_or_training": result.hidden_oracle_fraction_driver,
        "wall_s": time.perf_counter() - start,
    }
    return curve, info


def random_pool(config, starts, frames_per_temperature: int, stride: int):
    """Labelled frames of oracle MD at each exploration temperature, and the MD steps."""
    from mlpot.active.labelling import OracleSpec
    from mlpot.active.oracle_md import oracle_md_frames
    from mlpot.active.store import Labelled

    oracle = OracleSpec(config.oracle.name, dict(config.oracle.params)).build()
    pool, steps = [], 0
    for k, temperature in enumerate(config.explore.temperatures):
        frames = oracle_md_frames(
            starts[k % len(starts)],
            oracle,
            temperature=temperature,
            frames=frames_per_temperature,
            stride=stride,
            equilibration=stride,
            timestep_fs=config.explore.timestep_fs,
            seed=config.seed + 777 + k,
        )
        steps += stride * (frames_per_temperature + 1)
        for j, frame in enumerate(frames):
            from ase.calculators.singlepoint import SinglePointCalculator

            atoms = frame.atoms.copy()
            atoms.calc = SinglePointCalculator(atoms, **frame.results)
            pool.append(Labelled(f"random-{k}-{j}", atoms, "random", 0))
    return pool, steps


def run_random(config, out: Path, budget: int, batch: int, first: dict) -> tuple[list, dict]:
    """The random arm over the active arm's store (same initial labels and test set)."""
    import ase.io

    from mlpot.active.store import Store
    from mlpot.active.training_step import train_iteration

    store = Store(Path(config.output) / "store.db")
    initial = store.labelled(reasons={"initial"})
    test = store.labelled(reasons={"test"})
    starts = ase.io.read(Path(config.output) / "start.xyz", index=":")
    start = time.perf_counter()
    needed = budget - len(initial)
    per_temperature = int(np.ceil(2 * needed / len(config.explore.temperatures)))
    pool, md_steps = random_pool(config, starts, per_temperature, stride=10)
    order = np.random.default_rng(config.seed + 99).permutation(len(pool))
    curve = [first]  # iteration 0: the same initial labels, the same trained committee
    labelled = list(initial)
    for iteration in range(1, 10_000):
        if len(labelled) >= budget:
            break
        take = order[len(labelled) - len(initial) :][: min(batch, budget - len(labelled))]
        labelled += [pool[i] for i in take]
        trained = train_iteration(
            config, labelled, test, out / f"iteration_{iteration}", seed=config.seed + iteration
        )
        rmse = trained.metrics["test_force_rmse"]
        curve.append({"calls": len(labelled), "rmse": rmse})
        print(f"  [random] {len(labelled)} labels: test force RMSE {rmse:.4f} eV/Å", flush=True)
    return curve, {"pool_md_steps": md_steps, "wall_s": time.perf_counter() - start}


def calls_to_reach(curve: list[dict], target: float) -> int | None:
    return next((p["calls"] for p in curve if p["rmse"] <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", choices=sorted(SETTINGS), default="ethanol")
    parser.add_argument("--quick", action="store_true", help="small budget, short training")
    parser.add_argument("--explore", choices=["md", "adversarial"], default="md")
    parser.add_argument("--strategy", default="d_optimal")
    parser.add_argument("--t2-quantile", type=float, default=None)
    parser.add_argument("--batch", type=int, default=8, help="labels per retraining")
    parser.add_argument("--members", type=int, default=None, help="committee size")
    parser.add_argument("--workers", type=int, default=1, help="labelling processes")
    parser.add_argument("--target", type=float, default=None, help="test force RMSE, eV/Å")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    mode = MODES["quick" if args.quick else "full"]
    tag = f"{args.system}-{args.explore}-{'quick' if args.quick else 'full'}-s{args.seed}"
    args.out = (args.out or Path("bench-results") / f"active_vs_random-{tag}").resolve()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another --out")

    import torch

    from mlpot.active import parse_learn_config

    torch.set_num_threads(1)
    config = parse_learn_config(learn_config(args, mode))
    start = time.perf_counter()
    print(f"active arm ({args.explore}) ...", flush=True)
    active, active_info = run_active(config)
    print("random arm ...", flush=True)
    random, random_info = run_random(
        config, args.out / "random", mode["budget"], args.batch, active[0]
    )
    best = max(min(p["rmse"] for p in active), min(p["rmse"] for p in random))
    target = args.target or 1.05 * best
    n_active, n_random = calls_to_reach(active, target), calls_to_reach(random, target)

    print(f"\nlearning curves ({args.system}, oracle calls vs test force RMSE at 600 K, eV/Å)")
    print(f"{'calls':>6} {'active':>9} {'random':>9}")
    for calls in sorted({p["calls"] for p in active + random}):
        row = [
            next((f"{p['rmse']:.4f}" for p in c if p["calls"] == calls), "")
            for c in (active, random)
        ]
        print(f"{calls:>6} {row[0]:>9} {row[1]:>9}")
    print(f"target {target:.4f} eV/Å: active {n_active} calls, random {n_random} calls")
    ratio = n_random / n_active if n_active and n_random else None
    if ratio is not None:
        verdict = "met" if ratio >= 3 else "NOT met"
        print(f"ratio random/active: {ratio:.2f} (goal >= 3: {verdict})")
    else:
        print("ratio: undefined (an arm did not reach the target within the budget)")
    print(
        f"random pool: {random_info['pool_md_steps']} oracle MD steps; active set-up calls "
        f"{active_info['setup_calls']}"
    )
    print(
        "oracle time hidden behind exploration: "
        f"{active_info['hidden_behind_exploration']:.2f}; behind exploration or training: "
        f"{active_info['hidden_behind_exploration_or_training']:.2f}"
    )
    print(f"wall time {time.perf_counter() - start:.0f} s")
    figures = {
        "system": args.system,
        "mode": "quick" if args.quick else "full",
        "explore": args.explore,
        "target_force_rmse": target,
        "calls_active": n_active,
        "calls_random": n_random,
        "ratio": ratio,
        "active": {"curve": active, **active_info},
        "random": {"curve": random, **random_info},
    }
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2))
    print(f"figures: {args.out / 'figures.json'}")


if __name__ == "__main__":
    main()
