"""Active learning versus random sampling: oracle calls to reach a target test force RMSE.

Both arms train the same committee (model, training settings, ensemble size, calibration:
``mlpot.active.training_step.train_iteration``) and are scored on the same held-out test
set, oracle Langevin MD at 600 K. Both start from the same oracle-relaxed structure and the
same initial labels, and share iteration 0 (the same committee).

* **active**: ``mlpot.active.learn`` — exploration MD (or adversarial MD with ``--explore
  adversarial``) with the current committee, selection by calibrated force std (and T² with
  ``--t2-quantile``), asynchronous labelling, retraining every ``batch`` arrived labels;
* **selection random**: the same loop, exploration and batch sizes with ``strategy:
  random`` — a uniform draw among every checked configuration of the ML-driven exploration
  instead of the uncertainty-based choice: what the *query strategy* adds, in labels;
* **random, stride s**: oracle Langevin MD at the exploration temperatures, one trajectory
  per temperature (from the relaxed structure, the same seeds for every stride), a frame
  every ``s`` steps (steps s, 2s, 3s, ...; no equilibration). After each retraining
  ``batch`` more frames join the training set, taken in trajectory order and in turn from
  the temperatures. The MD runs only as far as the frames drawn so far need. Every stride in
  ``--strides`` is a separate arm (default 5, 20; stride 1, 32 frames over 16 steps per
  temperature, never reached a target): small strides are cheap but give correlated
  frames, large ones cost more oracle calls per frame.

Oracle calls (the issue's measure), counted the same way for both arms, test set excluded:

* shared: set-up calls (the relaxation, and the oracle Hessian when the initial set is
  normal-mode sampling) and the initial labels (retries included);
* active: every selected configuration sent to the oracle before that committee was trained
  (labels still in flight then included: they are paid for), retries included;
* random: every oracle evaluation of the MD run so far (steps + the force call at the start;
  labels come free with the MD steps, the steps between frames are paid all the same).

The labels-only accounting (labels in the training set; the random arm's MD steps between
frames free) is printed beside it, clearly labelled: it is *not* the issue's measure.

The target defaults to 1.05 x the larger of the active arm's best test RMSE and the best
random stride's best, so the active arm and at least one stride reach it; ``--target`` sets
it. The ratio printed is (fewest oracle calls over the strides) / (active calls) to first
reach it (the goal: >= 3), and (labels of the selection-random arm) / (active labels) to
first reach it (the goal: >= 1.5; a lower bound when the random selection never reaches it
within the budget). Also printed: the fraction of the active arm's oracle wall-clock
time hidden behind exploration (and behind exploration or training), from its store.

Usage::

    python bench/active_vs_random.py --system cu-vacancy --quick     # EMT
    python bench/active_vs_random.py --quick                         # ethanol, GFN2-xTB
    python bench/active_vs_random.py --system cu-vacancy --quick --explore adversarial
    python bench/active_vs_random.py --system ethanol                # full
    python bench/active_vs_random.py --median runs/avr-*/figures.json # medians over seeds
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
        "initial": {
            "method": "normal_modes",
            "count": 8,
            "temperature": 300.0,
            "hessian": "valence",
        },
        "explore": {"temperatures": [300.0, 600.0], "timestep_fs": 0.5, "check_interval": 5},
        "test": {"timestep_fs": 0.5, "stride": 10, "equilibration": 100},
        "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [32, 32]},
        "select": {"force_std": 0.1, "stop_force_std": 4.0},
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


SELECTION_RANDOM = "selection random"


def learn_config(args, mode: dict, strategy: str, output: Path) -> dict:
    s = SETTINGS[args.system]
    explore = {**s["explore"], "steps": mode["steps"], "mode": args.explore}
    select = {**s["select"], "batch_size": args.batch, "strategy": strategy}
    if args.t2_quantile is not None:
        select["t2_quantile"] = args.t2_quantile
    return {
        "system": args.system,
        "oracle": s["oracle"],
        "relax": True,
        "initial": (
            initial(s["initial"], args.hessian)
            if args.initial is None
            else {"method": args.initial, "count": s["initial"]["count"], "stdev": 0.05}
        ),
        "test": {**s["test"], "temperature": 600.0, "frames": mode["test"]},
        "explore": explore,
        "select": select,
        "label": {"executor": "process", "workers": args.workers, "retries": 1},
        "train": {
            "model": s["model"] if args.model == "bpnn" else flagship_model(),
            "training": {
                "epochs": mode["epochs"],
                "max_time_s": mode["max_time_s"],
                "batch_size": 8,
                "learning_rate": 0.01 if args.model == "bpnn" else 0.005,
                "early_stopping_patience": 50,
                "dtype": "float64" if args.model == "bpnn" else "float32",
            },
            "ensemble_size": args.members or mode["members"],
            "warm_start": args.warm_start,
        },
        "stop": {
            "oracle_budget": mode["budget"],
            "max_iterations": 1000,
            "patience_steps": 10 * mode["steps"],
        },
        "validation": False,
        "seed": args.seed,
        "output": str(output),
    }


def flagship_model() -> dict:
    """``mlpot learn``'s default model spec (the flagship mpnn plus ZBL walls)."""
    from mlpot.active.config import TrainSection

    return TrainSection().model


def initial(settings: dict, hessian: str | None) -> dict:
    """The system's initial data, its normal modes from ``hessian`` (None: the default)."""
    if settings["method"] != "normal_modes" or hessian is None:
        return settings
    return {**settings, "hessian": hessian}


def _attempts(store) -> dict[str, int]:
    """Oracle attempts per request uid (labels and failures; 1 for a request still open)."""
    attempts = {uid: 1 for uid in store.uids("request")}
    for kind in ("label", "failure"):
        for row in store.db.select(kind=kind):
            attempts[row.uid] = int(row.get("attempts", 1))
    return attempts


def run_active(config, name: str = "active") -> tuple[list[dict], dict]:
    from mlpot.active import learn
    from mlpot.active.store import Store

    start = time.perf_counter()
    result = learn(config, log=lambda line: print(f"  [{name}]", line, flush=True))
    store = Store(result.store_path)
    attempts = _attempts(store)
    requests = [row for row in store.requests().values() if row.reason != "test"]
    setup = result.oracle_calls["setup"]
    initial = sum(attempts[row.uid] for row in requests if row.reason == "initial")

    def issued(version: int) -> int:  # labels asked for before committee `version` trained
        return sum(attempts[row.uid] for row in requests if row.iteration <= version)

    curve = [
        {
            "labels": it["n_train"] + it["n_validation"],
            "calls": setup + issued(it["version"]),
            "rmse": it["test_force_rmse"],
        }
        for it in result.iterations
    ]
    info = {
        "stop_reason": result.stop_reason,
        "setup_calls": setup,
        "initial_calls": initial,
        "selected_calls": sum(attempts[row.uid] for row in requests) - initial,
        "failures": result.failures,
        "hidden_behind_exploration": result.hidden_oracle_fraction,
        "hidden_behind_exploration_or_training": result.hidden_oracle_fraction_driver,
        "wall_s": time.perf_counter() - start,
    }
    return curve, info


class OracleTrajectory:
    """One Langevin trajectory on the oracle, run lazily: only as far as a frame asks.

    ``calls_at[step]`` is the number of oracle evaluations needed to reach ``step`` (the
    force call at the start, one per step, and any failed attempts)."""

    def __init__(self, start, oracle, *, temperature: float, timestep_fs: float, seed: int):
        from ase import units
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        self.atoms = start.copy()
        self.atoms.calc = oracle
        self.rng = np.random.default_rng(seed)
        MaxwellBoltzmannDistribution(self.atoms, temperature_K=temperature, rng=self.rng)
        Stationary(self.atoms)
        self.dynamics = Langevin(
            self.atoms,
            timestep_fs * units.fs,
            temperature_K=temperature,
            friction=0.02 / units.fs,  # as the held-out test MD
            fixcm=False,
            rng=self.rng,
        )
        self.name = f"{temperature:g}K"
        self.frames: dict[int, object] = {}
        self.calls_at = {0: 1}
        self.step = 0

    def frame(self, step: int):
        """The labelled frame at MD ``step`` (>= 1), running the MD up to it if needed."""
        while self.step < step:
            self._advance()
        return self.frames[step]

    def _advance(self, attempts: int = 5) -> None:
        from ase.calculators.singlepoint import SinglePointCalculator

        from mlpot.active.store import Labelled

        calls = self.calls_at[self.step]
        positions = self.atoms.get_positions()
        for attempt in range(attempts):  # an SCF failure: back, nudge 0.005 Å, try again
            calls += 1
            try:
                self.dynamics.run(1)
                break
            except Exception:
                if attempt == attempts - 1:
                    raise
                self.atoms.set_positions(positions + self.rng.normal(0.0, 0.005, positions.shape))
        self.step += 1
        self.calls_at[self.step] = calls
        results = {
            "energy": self.atoms.get_potential_energy(),
            "forces": self.atoms.get_forces(),
        }
        if self.atoms.pbc.all():
            results["stress"] = self.atoms.get_stress()
        atoms = self.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, **results)
        self.frames[self.step] = Labelled(f"random-{self.name}-{self.step}", atoms, "random", 0)


def run_random(
    config, out: Path, strides: list[int], frames: int, batch: int, first: dict
) -> tuple[dict[int, list[dict]], dict]:
    """The random arm for each stride, over the active arm's store (same relaxed start,
    initial labels and test set). The trajectories are deterministic (seeded), so all
    strides read one lazily extended trajectory per temperature: the same frames they would
    get from their own runs, and each stride is charged the steps *it* needs."""
    import ase.io

    from mlpot.active.labelling import OracleSpec
    from mlpot.active.store import Store
    from mlpot.active.training_step import train_iteration

    store = Store(Path(config.output) / "store.db")
    initial = store.labelled(reasons={"initial"})
    test = store.labelled(reasons={"test"})
    starts = ase.io.read(Path(config.output) / "start.xyz", index=":")
    spec = OracleSpec(config.oracle.name, dict(config.oracle.params))
    temperatures = config.explore.temperatures
    trajectories = [
        OracleTrajectory(
            starts[k % len(starts)],
            spec.build(),
            temperature=temperature,
            timestep_fs=config.explore.timestep_fs,
            seed=config.seed + 777 + k,
        )
        for k, temperature in enumerate(temperatures)
    ]
    start = time.perf_counter()
    curves = {}
    for stride in strides:
        used = [0] * len(temperatures)  # frames taken from each trajectory
        labelled, curve = list(initial), [{**first, "md_calls": 0}]
        for iteration in range(1, 10_000):
            added = sum(used)
            if added >= frames:
                break
            for _ in range(min(batch, frames - added)):
                k = sum(used) % len(temperatures)
                used[k] += 1
                labelled.append(trajectories[k].frame(stride * used[k]))
            trained = train_iteration(
                config,
                labelled,
                test,
                out / f"stride_{stride}" / f"iteration_{iteration}",
                seed=config.seed + iteration,
            )
            md_calls = sum(
                t.calls_at[stride * n] for t, n in zip(trajectories, used, strict=True) if n
            )
            point = {
                "labels": len(labelled),
                "calls": first["calls"] + md_calls,
                "md_calls": md_calls,
                "rmse": trained.metrics["test_force_rmse"],
            }
            curve.append(point)
            print(
                f"  [random s={stride}] {point['labels']} labels, {point['calls']} oracle calls "
                f"({md_calls} MD): test force RMSE {point['rmse']:.4f} eV/Å",
                flush=True,
            )
        curves[stride] = curve
    info = {
        "md_steps_run": {t.name: t.step for t in trajectories},
        "wall_s": time.perf_counter() - start,
    }
    return curves, info


def first_reach(curve: list[dict], target: float, key: str = "calls") -> int | None:
    """``key`` (calls or labels) at the first point of ``curve`` at or below ``target``."""
    return next((p[key] for p in curve if p["rmse"] <= target), None)


def interpolated_reach(curve: list[dict], target: float, key: str = "calls") -> float | None:
    """``key`` where the curve first crosses ``target``, linear in log RMSE between the
    point before and the first point at or below it (the curves are sampled every batch:
    every 8 labels for active, every 8 x stride MD steps for random)."""
    if curve[0]["rmse"] <= target:
        return float(curve[0][key])
    for before, point in zip(curve, curve[1:], strict=False):
        if point["rmse"] <= target:
            t = np.log(before["rmse"] / target) / np.log(before["rmse"] / point["rmse"])
            return float(before[key] + t * (point[key] - before[key]))
    return None


def _ratio(random: float | None, active: float | None) -> float | None:
    return random / active if random and active else None


def summarise(figures: dict, target: float | None = None) -> dict:
    """Print the tables of a run's ``figures`` and return the summary figures."""
    arms = {"active": figures["active"]["curve"]}
    if "selection_random" in figures:
        arms[SELECTION_RANDOM] = figures["selection_random"]["curve"]
    arms |= {f"random s={s}": c for s, c in figures["random"]["curves"].items()}
    randoms = [n for n in arms if n.startswith("random s=")]
    best_random = min(min(p["rmse"] for p in arms[n]) for n in randoms)
    target = target or 1.05 * max(min(p["rmse"] for p in arms["active"]), best_random)
    a = figures["active"]

    print(
        f"\nlearning curves ({figures['system']}, {figures['explore']} exploration, "
        f"{figures['mode']}; test force RMSE on oracle MD at 600 K)"
    )
    print(f"{'arm':<12} {'labels':>6} {'oracle calls':>12} {'RMSE eV/Å':>10}")
    for name, curve in arms.items():
        for k, p in enumerate(curve):
            row = f"{p['labels']:>6} {p['calls']:>12} {p['rmse']:>10.4f}"
            print(f"{name if k == 0 else '':<12} {row}")
    print(
        f"oracle calls include {a['setup_calls'] + a['initial_calls']} shared by both arms: "
        f"set-up {a['setup_calls']} ({figures['setup']}) + {a['initial_calls']} initial "
        "labels; the test set and its MD excluded"
    )

    reach = {
        name: {
            "calls": first_reach(c, target),
            "calls_interpolated": interpolated_reach(c, target),
            "labels": first_reach(c, target, "labels"),
        }
        for name, c in arms.items()
    }
    print(f"\ntarget test force RMSE {target:.4f} eV/Å: first reached at")
    print(f"{'arm':<12} {'oracle calls':>12} {'interpolated':>12} {'labels (labels-only)':>21}")
    for name, r in reach.items():
        last = arms[name][-1]
        calls = r["calls"] if r["calls"] is not None else f"> {last['calls']}"
        inter = r["calls_interpolated"]
        inter = f"{inter:.0f}" if inter is not None else f"> {last['calls']}"
        labels = r["labels"] if r["labels"] is not None else f"> {last['labels']}"
        print(f"{name:<12} {calls:>12} {inter:>12} {labels:>21}")

    def best(key: str) -> tuple[str | None, float | None]:
        hits = [(r[key], r["calls"], n) for n, r in reach.items() if n in randoms and r[key]]
        return (min(hits)[2], min(hits)[0]) if hits else (None, None)

    summary = {"target_force_rmse": target, "reach": reach}
    best_arm, best_calls = best("calls")
    summary["best_random"] = best_arm
    summary["ratio"] = ratio = _ratio(best_calls, reach["active"]["calls"])
    if ratio is not None:
        verdict = "met" if ratio >= 3 else "NOT met"
        inter = _ratio(reach[best_arm]["calls_interpolated"], reach["active"]["calls_interpolated"])
        summary["ratio_interpolated"] = inter
        print(
            f"ratio random/active, oracle calls (best random: {best_arm}): {ratio:.2f} "
            f"(goal >= 3: {verdict}); interpolated {inter:.2f}"
        )
    elif reach["active"]["calls"] is None:
        print("ratio: undefined (the active arm did not reach the target within its budget)")
    else:
        low = min(arms[n][-1]["calls"] for n in randoms) / reach["active"]["calls"]
        print(f"ratio random/active, oracle calls: > {low:.2f} (no random stride reached it)")
    best_arm, best_labels = best("labels")
    summary["ratio_labels_only"] = ratio = _ratio(best_labels, reach["active"]["labels"])
    if ratio is not None:
        print(
            f"ratio random/active, LABELS ONLY (best random: {best_arm}; the MD steps between "
            f"frames free, not the issue's measure): {ratio:.2f}"
        )
    if SELECTION_RANDOM in arms:
        summary |= compare_selection(arms["active"], arms[SELECTION_RANDOM])
    print(
        f"active: {a['selected_calls']} selected labels, stop: {a['stop_reason']}; random: "
        f"{figures['random']['frames']} MD frames per stride, MD steps run per temperature "
        f"{figures['random']['md_steps_run']}"
    )
    print(
        "active oracle time hidden behind exploration: "
        f"{a['hidden_behind_exploration']:.2f}; behind exploration or training: "
        f"{a['hidden_behind_exploration_or_training']:.2f}"
    )
    return summary


def compare_selection(active: list[dict], chance: list[dict]) -> dict:
    """Active against random selection from the same exploration, in labels: to their own
    target, 1.05 x the larger of the two arms' best test force RMSE (so both reach it),
    and the final RMSE at the same number of labels."""
    target = 1.05 * max(min(p["rmse"] for p in active), min(p["rmse"] for p in chance))
    labels = {
        name: interpolated_reach(curve, target, "labels")
        for name, curve in (("active", active), ("random", chance))
    }
    ratio = _ratio(labels["random"], labels["active"])
    final = chance[-1]["rmse"] / active[-1]["rmse"]
    verdict = "met" if ratio is not None and ratio >= 1.5 else "NOT met"
    print(
        f"selection (same exploration): target {target:.4f} eV/Å reached at "
        f"{labels['active']:.1f} labels (active) and {labels['random']:.1f} (random); ratio "
        f"random/active {ratio:.2f} (goal >= 1.5: {verdict}); final test force RMSE at "
        f"{active[-1]['labels']} / {chance[-1]['labels']} labels: {active[-1]['rmse']:.4f} "
        f"(active) / {chance[-1]['rmse']:.4f} (random), random/active {final:.2f}"
    )
    return {
        "selection_target_force_rmse": target,
        "selection_labels": labels,
        "ratio_selection_labels": ratio,
        "ratio_selection_final_rmse": final,
    }


def medians(paths: list[Path]) -> None:
    """The median of each ratio over the runs (seeds) of ``paths`` (figures.json files);
    a run whose arm never reached the target counts with its lower bound."""
    rows = []
    for path in paths:
        f = json.loads(path.read_text())
        f = f | compare_selection(f["active"]["curve"], f["selection_random"]["curve"])
        ratios = (f.get("ratio"), f["ratio_selection_labels"], f["ratio_selection_final_rmse"])
        rows.append((path.parent.name, *ratios))
    columns = ("calls vs oracle MD", "labels vs random sel.", "final RMSE random/active")
    print(f"{'run':<36}" + "".join(f" {c:>24}" for c in columns))
    for name, *ratios in rows:
        print(f"{name:<36}" + "".join(f" {r:>24.2f}" if r else f" {'-':>24}" for r in ratios))
    goals = (3.0, 1.5, None)
    for k, (label, goal) in enumerate(zip(columns, goals, strict=True)):
        values = [row[1 + k] for row in rows if row[1 + k]]
        if values:
            median = float(np.median(values))
            verdict = "" if goal is None else f" (goal >= {goal}: "
            verdict += "" if goal is None else ("met)" if median >= goal else "NOT met)")
            print(f"median {label}: {median:.2f} over {len(values)} runs{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", choices=sorted(SETTINGS), default="ethanol")
    parser.add_argument("--quick", action="store_true", help="small budget, short training")
    parser.add_argument("--explore", choices=["md", "adversarial"], default="md")
    parser.add_argument(
        "--model",
        choices=["bpnn", "flagship"],
        default="flagship",
        help="the system's small bpnn, or mlpot learn's default model (mpnn + ZBL, float32)",
    )
    parser.add_argument("--strategy", default="d_optimal", help="the active arm's selection")
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="retrainings continue from the committee before (train.warm_start: true) in "
        "both active arms; default: each from scratch",
    )
    parser.add_argument(
        "--no-selection-random",
        action="store_true",
        help="skip the arm with strategy: random on the same exploration",
    )
    parser.add_argument(
        "--hessian",
        choices=["valence", "oracle"],
        default=None,
        help="normal modes of the initial data from Lindh's valence Hessian (no oracle call, "
        "the default here) or the oracle's (6N+1 calls, mlpot learn's default)",
    )
    parser.add_argument(
        "--initial",
        choices=["normal_modes", "rattle"],
        default=None,
        help="initial data of both arms (default: the system's; normal modes cost an oracle "
        "Hessian, 6N+1 calls, rattling of the relaxed structure none)",
    )
    parser.add_argument("--t2-quantile", type=float, default=None)
    parser.add_argument("--batch", type=int, default=8, help="labels per retraining")
    parser.add_argument("--members", type=int, default=None, help="committee size")
    parser.add_argument("--workers", type=int, default=1, help="labelling processes")
    parser.add_argument("--strides", default="5,20", help="random arm MD strides, steps")
    parser.add_argument(
        "--random-frames",
        type=int,
        default=None,
        help="MD frames each random stride adds (default: the active budget less the initial)",
    )
    parser.add_argument("--target", type=float, default=None, help="test force RMSE, eV/Å")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="an earlier run's folder (same system, mode and seed): take its selection-random "
        "and random arms, run only the active arm (e.g. after a change of the strategy)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--report", type=Path, default=None, help="only print the tables of a figures.json"
    )
    parser.add_argument(
        "--median", type=Path, nargs="+", default=None, help="medians over figures.json files"
    )
    args = parser.parse_args()
    if args.report:
        summarise(json.loads(args.report.read_text()), args.target)
        return
    if args.median:
        medians(args.median)
        return
    mode = MODES["quick" if args.quick else "full"]
    strides = sorted({int(s) for s in args.strides.split(",")})
    if not strides or strides[0] < 1:
        raise SystemExit("--strides: positive integers, e.g. 1,5,20")
    tag = f"{args.system}-{args.explore}-{'quick' if args.quick else 'full'}-s{args.seed}"
    args.out = (args.out or Path("bench-results") / f"active_vs_random-{tag}").resolve()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another --out")

    import torch

    from mlpot.active import parse_learn_config

    torch.set_num_threads(1)
    config = parse_learn_config(learn_config(args, mode, args.strategy, args.out / "active"))
    start = time.perf_counter()
    print(f"active arm ({args.explore}, {args.strategy}) ...", flush=True)
    active, active_info = run_active(config)
    reused = json.loads((args.reuse / "figures.json").read_text()) if args.reuse else None
    selection = None
    if reused is not None:  # the arms that do not depend on the active arm's strategy
        selection = reused.get("selection_random")
        print(f"selection-random and random arms: from {args.reuse}", flush=True)
    elif not args.no_selection_random:
        print("selection-random arm (same exploration, strategy: random) ...", flush=True)
        same = learn_config(args, mode, "random", args.out / "selection-random")
        curve, info = run_active(parse_learn_config(same), SELECTION_RANDOM)
        selection = {"curve": curve, **info}
    if reused is not None:
        frames = reused["random"]["frames"]
        random = {int(k): v for k, v in reused["random"]["curves"].items()}
        random_info = {k: reused["random"][k] for k in ("md_steps_run", "wall_s")}
    else:
        frames = args.random_frames or mode["budget"] - active[0]["labels"]
        print(f"random arm: strides {strides}, {frames} MD frames each ...", flush=True)
        random, random_info = run_random(
            config, args.out / "random", strides, frames, args.batch, active[0]
        )
    figures = {
        "system": args.system,
        "mode": "quick" if args.quick else "full",
        "explore": args.explore,
        "setup": "relaxation"
        + (
            ", oracle Hessian"
            if config.initial.method == "normal_modes" and config.initial.hessian == "oracle"
            else ""
        ),
        "accounting": "oracle calls = shared set-up + initial labels, plus the active arm's "
        "selected labels / the random arm's oracle MD evaluations; test set excluded",
        "active": {"curve": active, **active_info},
        "random": {"curves": random, "frames": frames, **random_info},
    }
    if selection is not None:
        figures["selection_random"] = selection
    figures |= summarise(figures, args.target)
    print(
        f"wall time {time.perf_counter() - start:.0f} s (active {active_info['wall_s']:.0f} s, "
        f"random {random_info['wall_s']:.0f} s)"
    )
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2))
    print(f"figures: {args.out / 'figures.json'}")


if __name__ == "__main__":
    main()
