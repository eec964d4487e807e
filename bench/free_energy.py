"""Dihedral free-energy profile of ethanol's O–H rotation: a learned potential against the
oracle's own umbrella sampling (GFN2-xTB), each with its cost, and the learned profile
reweighted to the oracle from a few oracle calls.

1. Training data: GFN2-xTB Langevin MD of ethanol at 300, 500 and 800 K (100 frames each),
   plus restrained frames along the H–O–C–C dihedral (500 K umbrella windows).
2. A shallow-ensemble ``mpnn`` (its calibrated energy_std drives the reweighting report).
3. Umbrella sampling of dihedral 3-2-1-0 (H–O–C–C) over a whole turn, same plan for the
   learned potential and for GFN2-xTB; PMFs by MBAR; RMS and max difference (kT), the
   trans/gauche free energies and barrier, and wall time of each.
4. The learned run reweighted to GFN2-xTB with ``--reweight`` oracle calls.

    python bench/free_energy.py                       # train, then both runs (~15-30 min)
    python bench/free_energy.py --model run/model.pt  # reuse a trained model
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot.apps.colvars import parse_cv
from mlpot.apps.mbar import umbrella_pmf
from mlpot.apps.reweight import ReweightingUnreliable, reweight_to_oracle
from mlpot.apps.umbrella import UmbrellaPlan, run_umbrella
from mlpot.calculators.oracles import make_oracle
from mlpot.md.dynamics import make_dynamics, start_momenta
from mlpot.training import parse_config, run_training

CV = "dihedral:3,2,1,0"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="trained model (skip training)")
    p.add_argument("--workdir", type=Path, default=Path("bench-free-energy"))
    p.add_argument("--windows", type=int, default=12)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--k", type=float, default=0.5, help="eV/rad²")
    p.add_argument("--reweight", type=int, default=120)
    p.add_argument("--train-seconds", type=float, default=600.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def labelled(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def md_frames(temperature: float, steps: int, every: int, seed: int) -> list:
    """GFN2-xTB Langevin MD of ethanol (0.5 fs steps), a labelled frame every ``every``."""
    atoms = molecule("CH3CH2OH")
    atoms.calc = make_oracle("xtb")
    rng = np.random.default_rng(seed)
    start_momenta(atoms, temperature, rng=rng, zero_rotation=True)
    dynamics = make_dynamics(atoms, thermostat="langevin", timestep_fs=0.5,
                             temperature_K=temperature, rng=rng)  # fmt: skip
    frames = []
    for _ in range(steps // every):
        dynamics.run(every)
        frames.append(labelled(atoms, atoms.calc))
    return frames


def training_frames() -> list:
    frames = []
    for k, temperature in enumerate((300.0, 500.0, 800.0)):
        frames += md_frames(temperature, 1000, 10, seed=k)
    # restrained xTB frames along the dihedral, so the torsion barrier is in the data
    xtb = make_oracle("xtb")
    plan = UmbrellaPlan.evenly(parse_cv(CV), -np.pi, np.pi, 12, k=1.0, temperature_K=500.0,
                               equilibration_steps=100, steps=300, frame_every=30)  # fmt: skip
    run = run_umbrella(partial(make_oracle, "xtb"), molecule("CH3CH2OH"), plan,
                       ARGS.workdir / "xtb_scan", progress=False)  # fmt: skip
    for window in run.windows:
        for positions in window.frame_positions:
            atoms = molecule("CH3CH2OH")
            atoms.positions = positions
            frames.append(labelled(atoms, xtb))
    print(f"{len(frames)} GFN2-xTB training frames", flush=True)
    return frames


def train() -> Path:
    frames = training_frames()
    config = parse_config({
        "model": {"name": "mpnn_shallow", "cutoff": 4.0, "channels": 16, "heads": 4},
        "loss": {"energy_noise": 0.002, "forces_noise": 0.05},
        "training": {"epochs": 2000, "batch_size": 8, "learning_rate": 3e-3,
                     "max_time_s": ARGS.train_seconds, "early_stopping_patience": 60,
                     "progress": False, "seed": 0},
        "data": {"validation_fraction": 0.1},
        "fisher": {"structures": 0},
        "output": str(ARGS.workdir / "model"),
    })  # fmt: skip
    started = time.perf_counter()
    result = run_training(config, train=frames, log=lambda _: None)
    v = result.validation_metrics
    print(f"trained on {len(frames)} frames in {time.perf_counter() - started:.0f} s: "
          f"energy RMSE {v['energy_per_atom']['rmse'] * 1e3:.2f} meV/atom, "
          f"forces RMSE {v['forces']['rmse'] * 1e3:.0f} meV/Å", flush=True)  # fmt: skip
    return result.model_path


def umbrella(potential, name: str):
    plan = UmbrellaPlan.evenly(parse_cv(CV), -np.pi, np.pi, ARGS.windows, k=ARGS.k,
                               temperature_K=300.0, equilibration_steps=200, steps=ARGS.steps,
                               frame_every=20)  # fmt: skip
    started = time.perf_counter()
    run = run_umbrella(potential, molecule("CH3CH2OH"), plan, ARGS.workdir / name,
                       workers=ARGS.workers, progress=False)  # fmt: skip
    seconds = time.perf_counter() - started
    return run, umbrella_pmf(run, bins=36), seconds


def features(pmf) -> dict:
    """trans (|φ| ≈ π) and gauche (|φ| ≈ π/3) free energies and the barrier between."""
    phi, f = np.abs(pmf.cv), pmf.free_energy  # NaN: a bin the reweighting left out
    trans = np.nanmin(f[phi > 2.6])
    gauche = np.nanmin(f[(phi > 0.6) & (phi < 1.6)])
    barrier = np.nanmax(f[(phi > 1.6) & (phi < 2.6)])
    return {"gauche_minus_trans_eV": float(gauche - trans), "barrier_eV": float(barrier - trans)}


def compare(a, b, kT) -> dict:
    grid = a.cv
    fa = a.free_energy
    fb = np.interp(grid, b.cv, b.free_energy, period=2 * np.pi)
    ok = np.isfinite(fa) & np.isfinite(fb)
    diff = (fa - fb)[ok]
    diff -= diff.mean()
    rms = float(np.sqrt(np.mean(diff**2)))
    return {"rms_kT": rms / kT, "max_kT": float(np.abs(diff).max() / kT)}


def main() -> int:
    torch.set_num_threads(ARGS.threads)
    ARGS.workdir.mkdir(parents=True, exist_ok=True)
    model = ARGS.model or train()
    kT = units.kB * 300.0
    ml_run, ml_pmf, ml_seconds = umbrella(str(model), "ml")
    xtb_run, xtb_pmf, xtb_seconds = umbrella(partial(make_oracle, "xtb"), "xtb")
    figures = {
        "windows": ARGS.windows, "steps_per_window": ARGS.steps,
        "ml_seconds": ml_seconds, "xtb_seconds": xtb_seconds,
        "ml": features(ml_pmf), "xtb": features(xtb_pmf),
        "ml_vs_xtb": compare(ml_pmf, xtb_pmf, kT),
        "ml_min_overlap": ml_pmf.diagnostics["min_neighbour_overlap"],
        "xtb_min_overlap": xtb_pmf.diagnostics["min_neighbour_overlap"],
    }  # fmt: skip
    started = time.perf_counter()
    try:
        result = reweight_to_oracle(ml_run, ml_pmf, make_oracle("xtb"), max_frames=ARGS.reweight,
                                    progress=False)  # fmt: skip
        figures["reweighted"] = features(result.reference) | compare(result.reference, xtb_pmf,
                                                                     kT)  # fmt: skip
        figures["reweighting"] = result.summary
        result.reference.write_csv(ARGS.workdir / "pmf_reweighted.csv")
    except ReweightingUnreliable as err:
        figures["reweighting_refused"] = str(err)
    figures["reweighting_seconds"] = time.perf_counter() - started
    print(json.dumps(figures, indent=1, default=float))
    (ARGS.workdir / "figures.json").write_text(json.dumps(figures, indent=1, default=float))
    for name, pmf in (("ml", ml_pmf), ("xtb", xtb_pmf)):
        pmf.write_csv(ARGS.workdir / f"pmf_{name}.csv")
    return 0


ARGS = parse_args()

if __name__ == "__main__":
    raise SystemExit(main())
