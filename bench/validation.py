"""Validation against physics of two learned potentials: every check's figure against its
tolerance, and the wall time of each validation.

Cases:

* ``cu``: a Behler–Parrinello network trained on EMT copper, validated against EMT on the
  built-in ``cu-fcc`` (bulk, vacancy and interstitial, vacancy-hop NEB, elastic constants,
  equation of state, MD, vibrations, dimers). Training set: Langevin MD with EMT of bulk
  cells (three temperatures × three strains), vacancy and interstitial cells, the EMT
  vacancy-hop NEB path (rattled), and compressed cells.
* ``ethanol``: a Behler–Parrinello network trained on GFN2-xTB ethanol (tblite), validated
  against GFN2-xTB on the built-in ``ethanol``. Training set: Langevin MD with GFN2-xTB at
  300, 500 and 800 K.

``--cu-model`` / ``--ethanol-model`` validate given checkpoints instead (e.g. from
``mlpot learn``). Reports go to ``OUTPUT/<case>/report.html`` and ``report.json``.

Usage::

    python bench/validation.py                         # train both, validate both
    python bench/validation.py --cases cu --cu-model runs/cu/model.pt
    python bench/validation.py --quick                 # short MD/NEB settings

Exit status: 0 when both validations ran (whatever the verdicts), 1 when one crashed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="cu,ethanol", help="comma-separated: cu, ethanol")
    parser.add_argument("--cu-model", type=Path, help="validate this checkpoint for cu")
    parser.add_argument("--ethanol-model", type=Path, help="validate this for ethanol")
    parser.add_argument(
        "--output", type=Path, default=Path(tempfile.gettempdir()) / "mlpot-validation-bench"
    )
    parser.add_argument("--train-time", type=float, default=420.0, help="seconds per model")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--quick", action="store_true", help="short MD and NEB settings")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


ARGS = parse_args()
for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(name, str(ARGS.threads))  # before numpy starts its thread pool

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.mep import NEB  # noqa: E402
from ase.optimize import LBFGS  # noqa: E402

from mlpot.calculators.oracles import make_oracle  # noqa: E402
from mlpot.training.config import parse_config  # noqa: E402
from mlpot.training.run import run_training  # noqa: E402
from mlpot.validation import run_validation, write_report  # noqa: E402
from mlpot.validation.checks.defects import interstitial, vacancy  # noqa: E402
from mlpot.validation.checks.neb import hop_end_points  # noqa: E402
from mlpot.validation.md import run_nvt  # noqa: E402
from mlpot.validation.settings import QUICK  # noqa: E402

A_CU = 3.61  # Å


def md_frames(atoms: Atoms, calc, temperature: float, steps: int, every: int, seed: int, dt=1.0):
    """Labelled frames of a Langevin run driven by ``calc`` (the oracle), started from the
    relaxed structure (an unrelaxed defect would heat the run by its relaxation energy)."""
    atoms = atoms.copy()
    atoms.calc = calc
    LBFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    atoms.calc = None
    run = run_nvt(
        atoms,
        calc,
        temperature_K=temperature,
        timestep_fs=dt,
        friction_per_fs=0.02,
        equilibration_steps=100,
        steps=steps,
        sample_interval=every,
        seed=seed,
        stress=bool(atoms.pbc.all()),
        max_temperature_factor=5.0,
    )
    return run.frames


def labelled(atoms: Atoms, calc, *, stress: bool) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = calc
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def copper_training_set(seed: int) -> list[Atoms]:
    """EMT-labelled copper: thermal bulk, strained bulk, defects, hop path, compression."""
    rng = np.random.default_rng(seed)
    cell = bulk("Cu", "fcc", a=A_CU, cubic=True) * (2, 2, 2)
    frames: list[Atoms] = []
    for k, temperature in enumerate((300.0, 600.0, 900.0)):
        for j, scale in enumerate((0.98, 1.0, 1.02)):
            strained = cell.copy()
            strain = np.eye(3) * scale + np.triu(rng.normal(0, 0.01, (3, 3)), 1)
            strained.set_cell(cell.cell.array @ strain, scale_atoms=True)
            frames += md_frames(strained, EMT(), temperature, 300, 30, seed + 10 * k + j, 2.0)
    for k, temperature in enumerate((300.0, 900.0)):
        frames += md_frames(vacancy(cell), EMT(), temperature, 400, 40, seed + 100 + k, 2.0)
        frames += md_frames(interstitial(cell), EMT(), temperature, 400, 40, seed + 200 + k, 2.0)
    frames += hop_path_frames(cell, rng)
    for scale in np.linspace(0.86, 0.95, 8):
        squeezed = cell.copy()
        squeezed.set_cell(cell.cell.array * scale, scale_atoms=True)
        squeezed.rattle(0.1, seed=int(rng.integers(1 << 30)))
        frames.append(labelled(squeezed, EMT(), stress=True))
    return frames


def hop_path_frames(cell: Atoms, rng: np.random.Generator) -> list[Atoms]:
    """The EMT vacancy-hop NEB path, each image also rattled twice."""
    initial, final, _ = hop_end_points(cell)
    for end in (initial, final):
        end.calc = EMT()
        LBFGS(end, logfile=None).run(fmax=0.02)
    images = [initial] + [initial.copy() for _ in range(5)] + [final]
    for image in images:
        image.calc = EMT()
    band = NEB(images, climb=True, method="improvedtangent")
    band.interpolate(mic=True)
    LBFGS(band, logfile=None).run(fmax=0.05, steps=200)
    frames = []
    for image in images:
        for rattle in (0.0, 0.05, 0.05):
            moved = image.copy()
            if rattle:
                moved.rattle(rattle, seed=int(rng.integers(1 << 30)))
            frames.append(labelled(moved, EMT(), stress=True))
    return frames


def ethanol_training_set(seed: int) -> list[Atoms]:
    """GFN2-xTB-labelled ethanol from Langevin MD at three temperatures."""
    atoms = molecule("CH3CH2OH")
    frames: list[Atoms] = []
    for k, temperature in enumerate((300.0, 500.0, 800.0)):
        xtb = make_oracle("xtb", method="GFN2-xTB")
        frames += md_frames(atoms, xtb, temperature, 1000, 10, seed + k, 0.5)
    return frames


def train(name: str, frames: list[Atoms], workdir: Path, model: dict, seconds: float) -> Path:
    data = workdir / f"{name}_train.xyz"
    ase.io.write(data, frames)
    config = parse_config(
        {
            "data": {"train": str(data), "validation_fraction": 0.1, "split_seed": 0},
            "model": model,
            "loss": {"energy_noise": 0.002, "forces_noise": 0.05, "stress_noise": 0.001},
            "training": {
                "epochs": 2000,
                "batch_size": 8,
                "learning_rate": 3e-3,
                "dtype": "float32",  # training speed; validation evaluates in float64
                "max_time_s": seconds,
                "early_stopping_patience": 60,
                "progress": False,
                "seed": 0,
            },
            "output": str(workdir / f"{name}_run"),
        }
    )
    started = time.perf_counter()
    result = run_training(config)
    v = result.validation_metrics
    print(
        f"[{name}] trained on {len(frames)} structures in {time.perf_counter() - started:.0f} s "
        f"({result.train.epochs_run} epochs, {result.train.stop_reason}): validation "
        f"energy RMSE {v['energy_per_atom']['rmse'] * 1e3:.2f} meV/atom, "
        f"force RMSE {v['forces']['rmse'] * 1e3:.1f} meV/Å",
        flush=True,
    )
    return result.model_path


CASES = {
    "cu": {
        "system": "cu-fcc",
        "oracle": "emt",
        "data": copper_training_set,
        "model": {"name": "bpnn", "cutoff": 4.5, "hidden": [32, 32]},
    },
    "ethanol": {
        "system": "ethanol",
        "oracle": {"name": "xtb", "method": "GFN2-xTB"},
        "data": ethanol_training_set,
        "model": {"name": "bpnn", "cutoff": 4.5, "hidden": [32, 32]},
    },
}


def print_table(name: str, report) -> None:
    print(f"\n== {name}: {report.system['description']}; oracle {report.oracle['name']}")
    print(f"{'check':<11} {'figure':<38} {'value':>12}  {'tolerance':<22} status")
    for check in report.checks:
        if not check.tolerance:
            print(f"{check.name:<11} {'-':<38} {'':>12}  {'':<22} {check.status.upper()}")
            print(f"{'':<11} ({check.reason})")
            continue
        for key, bound in check.tolerance.items():
            ok = "ok" if bound.holds(check.figures[key]) else "OUT"
            print(
                f"{check.name:<11} {key:<38} {check.figures[key]:>12.4g}  "
                f"{bound.describe():<22} {check.status.upper()} ({ok})"
            )
        if check.reason:
            print(f"{'':<11} ({check.reason})")
    counts = report.counts()
    print(
        f"-- {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped; "
        f"validation wall time {report.wall_time_s:.1f} s"
    )


def run_case(name: str, given: Path | None) -> bool:
    case = CASES[name]
    workdir = ARGS.output / name
    workdir.mkdir(parents=True, exist_ok=True)
    model = given
    if model is None:
        started = time.perf_counter()
        frames = case["data"](ARGS.seed)
        print(
            f"[{name}] {len(frames)} oracle-labelled structures in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        model = train(name, frames, workdir, case["model"], ARGS.train_time)
    report = run_validation(
        model,
        oracle=case["oracle"],
        system=case["system"],
        temperature=ARGS.temperature,
        settings=QUICK if ARGS.quick else None,
        progress=False,
    )
    files = write_report(report, workdir)
    print_table(name, report)
    print(f"report: {files.html}")
    return True


def main() -> int:
    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(ARGS.seed)
    given = {"cu": ARGS.cu_model, "ethanol": ARGS.ethanol_model}
    ok = True
    for name in [c.strip() for c in ARGS.cases.split(",") if c.strip()]:
        if name not in CASES:
            print(f"unknown case {name!r}; choose from {list(CASES)}", file=sys.stderr)
            return 1
        try:
            ok &= run_case(name, given[name])
        except Exception as err:  # noqa: BLE001 - report and go on with the next case
            print(f"[{name}] failed: {err.__class__.__name__}: {err}", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
