"""Data efficiency of delta-learning: force RMSE against the number of high-level labels,
learning PBE/def2-SVP (PySCF) directly versus learning PBE - GFN2-xTB on top of GFN2-xTB.

Frames: water from GFN2-xTB Langevin MD at ``--temperature`` K (0.5 fs steps, one frame every
10 steps after 200 steps of equilibration). The first ``max(--sizes)`` frames are the
training pool (a model on N labels uses the first N), the next 16 validate, the last
``--test`` test. PBE labels (energy, forces) are computed once and cached in
``WORK/labels.xyz``; xTB baseline labels are cached in ``WORK/xtb_cache.pt``.

Model: BPNN for H and O (cutoff 4 Å, 8 radial functions, hidden [32, 32], float64),
``--epochs`` epochs, batch size 4, the same settings for both; errors are those of the
full prediction (xTB + correction for delta) against the PBE labels of the test frames.

Usage::

    python bench/delta_learning.py                          # sizes 8 16 32 64, ~8 min
    python bench/delta_learning.py --jobs 2 --json delta.json
    python bench/delta_learning.py --sizes 8 16 --test 8 --epochs 50   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase import units  # noqa: E402
from ase.build import molecule  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402

from mlpot.calculators.oracles import make_oracle  # noqa: E402
from mlpot.training.config import parse_config  # noqa: E402
from mlpot.training.evaluation import evaluate_files  # noqa: E402
from mlpot.training.run import run_training  # noqa: E402

DFT = {"functional": "pbe", "basis": "def2-svp"}
XTB = {"name": "xtb", "params": {"method": "GFN2-xTB"}}
MODEL = {"name": "bpnn", "cutoff": 4.0, "radial_count": 8, "hidden": [32, 32]}


def md_frames(n: int, temperature: float, seed: int = 0) -> list:
    atoms = molecule("H2O")
    atoms.calc = make_oracle("xtb")
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=temperature, friction=0.02, rng=rng)
    dyn.run(200)
    frames = []
    for _ in range(n):
        dyn.run(10)
        frames.append(atoms.copy())
    return frames


def dft_label(atoms):
    atoms = atoms.copy()
    atoms.calc = make_oracle("pyscf", **DFT)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def labels(work: Path, n: int, args) -> list:
    path = work / "labels.xyz"
    if path.exists():
        cached = ase.io.read(path, index=":")
        if len(cached) >= n:
            return cached[:n]
    frames = md_frames(n, args.temperature)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        labelled = list(pool.map(dft_label, frames))
    print(f"{n} PBE/def2-SVP labels in {time.perf_counter() - start:.0f} s", flush=True)
    ase.io.write(path, labelled)
    return labelled


def train(work: Path, name: str, train: str, val: str, args, baseline) -> Path:
    raw = {
        "data": {"train": train, "validation": val},
        "model": MODEL,
        "training": {"epochs": args.epochs, "batch_size": 4, "progress": False, "seed": 0},
        "fisher": {"structures": 0},
        "output": str(work / name),
    }
    if baseline:
        raw["baseline"] = {**XTB, "cache": str(work / "xtb_cache.pt")}
    return run_training(parse_config(raw)).model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=600.0)
    parser.add_argument("--jobs", type=int, default=1, help="processes for the PBE labels")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mlpot-delta")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    pool = max(args.sizes)
    frames = labels(work, pool + 16 + args.test, args)
    val = str(work / "val.xyz")
    test = str(work / "test.xyz")
    ase.io.write(val, frames[pool : pool + 16])
    ase.io.write(test, frames[pool + 16 :])
    # the baseline alone: xTB against PBE on the test frames
    xtb = make_oracle("xtb")
    diff = []
    for atoms in frames[pool + 16 :]:
        probe = atoms.copy()
        probe.calc = xtb
        diff.append(probe.get_forces() - atoms.get_forces())
    xtb_rmse = 1e3 * float(np.sqrt(np.mean(np.concatenate(diff) ** 2)))
    print(f"GFN2-xTB alone vs PBE: force RMSE {xtb_rmse:.1f} meV/Å", flush=True)
    rows = []
    for n in args.sizes:
        train_file = str(work / f"train_{n}.xyz")
        ase.io.write(train_file, frames[:n])
        row = {"n_labels": n}
        for name, baseline in (("direct", False), ("delta", True)):
            start = time.perf_counter()
            model = train(work, f"{name}_{n}", train_file, val, args, baseline)
            errors = evaluate_files(model, [test])[test]
            row[name] = {
                "forces_rmse_meV_A": 1e3 * errors["forces"]["rmse"],
                "energy_rmse_meV_atom": 1e3 * errors["energy_per_atom"]["rmse"],
                "seconds": time.perf_counter() - start,
            }
        print(
            f"N={n:<4} force RMSE direct {row['direct']['forces_rmse_meV_A']:7.1f}  "
            f"delta {row['delta']['forces_rmse_meV_A']:7.1f} meV/Å   energy RMSE direct "
            f"{row['direct']['energy_rmse_meV_atom']:6.2f}  delta "
            f"{row['delta']['energy_rmse_meV_atom']:6.2f} meV/atom",
            flush=True,
        )
        rows.append(row)
    if args.json:
        args.json.write_text(
            json.dumps({"xtb_forces_rmse_meV_A": xtb_rmse, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
