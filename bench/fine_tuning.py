"""Fine-tuning without forgetting: old- and new-task errors before and after plain
fine-tuning, elastic weight consolidation (several λ) and replay.

Two task pairs, all labels from ASE's EMT (copper):

* ``compressed``: task A = rattled 16-atom fcc cells at a = 3.61 Å (±1 %), task B = the same
  cells compressed by 5 % (a region of configuration space A never saw);
* ``slab``: task A as above, task B = (001) slabs of 16 atoms with 8 Å of vacuum.

A BPNN (cutoff 4 Å, 6 radial, 1 angular η, hidden [16]) is trained on A (``--a-train``
structures, ``--a-epochs`` epochs) with the Fisher information stored at the end, then
fine-tuned on ``--b-train`` B structures for ``--b-epochs`` epochs with each method. Errors
are force RMSEs (meV/Å) on held-out A and B test sets, before (the A model) and after.

Usage::

    python bench/fine_tuning.py                                 # both pairs, ~4 min
    python bench/fine_tuning.py --pairs compressed --json ft.json
    python bench/fine_tuning.py --a-epochs 20 --b-epochs 5      # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from mlpot.training.config import parse_config  # noqa: E402
from mlpot.training.evaluation import evaluate_files  # noqa: E402
from mlpot.training.run import run_training  # noqa: E402

MODEL = {"name": "bpnn", "cutoff": 4.0, "radial_count": 6, "angular_etas": [0.01], "hidden": [16]}


def frames(n: int, *, seed: int, kind: str) -> list:
    """``kind``: ``bulk`` (a = 3.61 Å ± 1 %), ``compressed`` (5 % smaller) or ``slab``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if kind == "slab":
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 2)
            atoms.center(vacuum=4.0, axis=2)
        else:
            scale = 0.95 if kind == "compressed" else 1.0
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
            atoms.set_cell(atoms.cell * scale * (1 + rng.normal(0, 0.01)), scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        out.append(atoms)
    return out


def write(path: Path, atoms: list) -> str:
    ase.io.write(path, atoms)
    return str(path)


def force_rmse(model: Path, path: str) -> float:
    return 1e3 * evaluate_files(model, [path])[path]["forces"]["rmse"]


def train_a(work: Path, args) -> tuple[Path, dict]:
    data = {
        "a_train": write(work / "a_train.xyz", frames(args.a_train, seed=0, kind="bulk")),
        "a_val": write(work / "a_val.xyz", frames(8, seed=1, kind="bulk")),
        "a_test": write(work / "a_test.xyz", frames(args.test, seed=2, kind="bulk")),
    }
    config = parse_config(
        {
            "data": {"train": data["a_train"], "validation": data["a_val"]},
            "model": MODEL,
            "training": {
                "epochs": args.a_epochs,
                "batch_size": 6,
                "ema_decay": 0.0,
                "progress": False,
            },
            "output": str(work / "a"),
        }
    )
    return run_training(config).model_path, data


def run_pair(pair: str, a_model: Path, data: dict, work: Path, args) -> list[dict]:
    b_train = write(work / f"{pair}_train.xyz", frames(args.b_train, seed=3, kind=pair))
    b_val = write(work / f"{pair}_val.xyz", frames(6, seed=4, kind=pair))
    b_test = write(work / f"{pair}_test.xyz", frames(args.test, seed=5, kind=pair))
    before = {"old": force_rmse(a_model, data["a_test"]), "new": force_rmse(a_model, b_test)}
    methods = [("plain", {})]
    methods += [(f"ewc λ={lam:g}", {"ewc_lambda": lam}) for lam in args.ewc_lambdas]
    methods += [
        (f"replay f={f:g}", {"replay_data": [data["a_train"]], "replay_fraction": f})
        for f in args.replay_fractions
    ]
    rows = []
    for label, extra in methods:
        method = label.split()[0]
        out = work / f"{pair}_{label.replace(' ', '_')}"
        config = parse_config(
            {
                "data": {"train": b_train, "validation": b_val},
                "training": {
                    "epochs": args.b_epochs,
                    "batch_size": 4,
                    "ema_decay": 0.0,
                    "progress": False,
                },
                "finetune": {"checkpoint": str(a_model), "method": method, **extra},
                "fisher": {"structures": 0},
                "output": str(out),
            }
        )
        start = time.perf_counter()
        result = run_training(config)
        rows.append(
            {
                "pair": pair,
                "method": label,
                "old_before": before["old"],
                "new_before": before["new"],
                "old_after": force_rmse(result.model_path, data["a_test"]),
                "new_after": force_rmse(result.model_path, b_test),
                "seconds": time.perf_counter() - start,
            }
        )
        r = rows[-1]
        print(
            f"{pair:<11} {label:<14} old {r['old_before']:7.1f} -> {r['old_after']:7.1f}   "
            f"new {r['new_before']:7.1f} -> {r['new_after']:7.1f} meV/Å   "
            f"({r['seconds']:.0f} s)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="compressed,slab")
    parser.add_argument("--a-train", type=int, default=32)
    parser.add_argument("--a-epochs", type=int, default=150)
    parser.add_argument("--b-train", type=int, default=16)
    parser.add_argument("--b-epochs", type=int, default=40)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--ewc-lambdas", type=float, nargs="+", default=[0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--replay-fractions", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="mlpot-ft-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    a_model, data = train_a(work, args)
    print(f"task A model trained in {time.perf_counter() - start:.0f} s ({work})", flush=True)
    rows = []
    for pair in args.pairs.split(","):
        rows += run_pair(pair, a_model, data, work, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"work": str(work)}, "rows": rows}, indent=2, default=str
            )
        )


if __name__ == "__main__":
    main()
