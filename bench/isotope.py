"""Proton transfer in malonaldehyde with a potential learned from GFN2-xTB: classical and
quantum (PIMD, i-PI) centroid free-energy barriers for H and D, and the TST kinetic isotope
effect with its uncertainty.

1. Training data: GFN2-xTB Langevin MD of the enol at 300 and 600 K, plus restrained
   frames along ξ = d(O1–H) − d(H–O2) (umbrella windows at 600 K, so the transfer path
   and its top are in the data).
2. A ``mpnn`` trained on them (energies and forces).
3. Centroid umbrella sampling along ξ (``mlpot.apps.isotope.kinetic_isotope_effect``):
   one bead (classical), P beads with H, P beads with D on the transferring proton.

    python bench/isotope.py                         # ~30-60 min on 2 cores
    python bench/isotope.py --model run/model.pt --beads 8 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize import BFGS

from mlpot.apps.colvars import parse_cv
from mlpot.apps.isotope import kinetic_isotope_effect
from mlpot.apps.pimd import PIMDSettings
from mlpot.apps.umbrella import UmbrellaPlan, run_umbrella
from mlpot.calculators.ase_calculator import load_calculator
from mlpot.calculators.oracles import make_oracle
from mlpot.md.dynamics import make_dynamics, start_momenta
from mlpot.training import parse_config, run_training

PROTON = 5  # index of the transferring H
CV = "distance-difference:0,5,5,4"  # d(O1–H) − d(H–O2)


def malonaldehyde() -> Atoms:
    """The enol (H on O1), planar, relaxed with GFN2-xTB."""
    atoms = Atoms(
        "OCCCOHHHH",
        positions=[[-1.30, 1.05, 0], [-1.22, -0.20, 0], [0.0, -0.85, 0], [1.22, -0.20, 0],
                   [1.30, 1.05, 0], [-0.35, 1.30, 0], [-2.15, -0.75, 0], [0.0, -1.93, 0],
                   [2.15, -0.75, 0]],
    )  # fmt: skip
    atoms.calc = make_oracle("xtb")
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    atoms.calc = None
    return atoms


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="trained model (skip training)")
    p.add_argument("--workdir", type=Path, default=Path("bench-isotope"))
    p.add_argument("--beads", type=int, default=8)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--windows", type=int, default=11)
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--train-seconds", type=float, default=600.0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def labelled(atoms: Atoms, calc) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = calc
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def training_frames(start: Atoms) -> list[Atoms]:
    xtb = make_oracle("xtb")
    frames = []
    for k, temperature in enumerate((300.0, 600.0)):
        atoms = start.copy()
        atoms.calc = xtb
        rng = np.random.default_rng(k)
        start_momenta(atoms, temperature, rng=rng, zero_rotation=True)
        dynamics = make_dynamics(atoms, thermostat="langevin", timestep_fs=0.5,
                                 temperature_K=temperature, rng=rng)  # fmt: skip
        for _ in range(150):
            dynamics.run(10)
            frames.append(labelled(atoms, xtb))
    plan = UmbrellaPlan.evenly(parse_cv(CV), -1.0, 1.0, 11, k=3.0, temperature_K=600.0,
                               equilibration_steps=100, steps=400, frame_every=20)  # fmt: skip
    run = run_umbrella(partial(make_oracle, "xtb"), start, plan, ARGS.workdir / "xtb_windows",
                       progress=False)  # fmt: skip
    for window in run.windows:
        for positions in window.frame_positions:
            atoms = start.copy()
            atoms.positions = positions
            frames.append(labelled(atoms, xtb))
    print(f"{len(frames)} GFN2-xTB training frames", flush=True)
    return frames


def train(start: Atoms) -> Path:
    frames = training_frames(start)
    config = parse_config({
        "model": {"name": "mpnn", "cutoff": 4.0, "channels": 16},
        "loss": {"energy_noise": 0.002, "forces_noise": 0.05},
        "training": {"epochs": 3000, "batch_size": 8, "learning_rate": 3e-3,
                     "max_time_s": ARGS.train_seconds, "early_stopping_patience": 80,
                     "progress": False, "seed": 0},
        "data": {"validation_fraction": 0.1},
        "fisher": {"structures": 0},
        "output": str(ARGS.workdir / "model"),
    })  # fmt: skip
    started = time.perf_counter()
    result = run_training(config, train=frames, log=lambda _: None)
    v = result.validation_metrics
    print(f"trained in {time.perf_counter() - started:.0f} s: energy RMSE "
          f"{v['energy_per_atom']['rmse'] * 1e3:.2f} meV/atom, forces RMSE "
          f"{v['forces']['rmse'] * 1e3:.0f} meV/Å", flush=True)  # fmt: skip
    return result.model_path


def main() -> int:
    torch.set_num_threads(ARGS.threads)
    ARGS.workdir.mkdir(parents=True, exist_ok=True)
    start = malonaldehyde()
    model = ARGS.model or train(start)
    potential = load_calculator(model, force_uncertainty=False, domain_scores=False)
    plan = UmbrellaPlan.evenly(parse_cv(CV), -0.9, 0.9, ARGS.windows, k=3.0,
                               temperature_K=ARGS.temperature)  # fmt: skip
    settings = PIMDSettings(beads=ARGS.beads, temperature_K=ARGS.temperature,
                            timestep_fs=0.25, steps=ARGS.steps, equilibration_steps=200,
                            tau_fs=50.0, sample_every=2)  # fmt: skip
    masses = start.get_masses()
    heavy = masses.copy()
    heavy[PROTON] = 2.014
    started = time.perf_counter()
    result = kinetic_isotope_effect(potential, start, plan, settings, ARGS.workdir / "pimd",
                                    light_masses=masses, heavy_masses=heavy, bins=24,
                                    transition_state=0.0)  # fmt: skip
    seconds = time.perf_counter() - started
    figures = {**result.summary, "seconds": seconds, "windows": ARGS.windows,
               "steps_per_window": ARGS.steps,
               "transition_states": {k: b.transition_state for k, b in result.barriers.items()},
               "checks": {"kie_above_1": result.kie > 1.0,
                          "h_barrier_below_classical": result.barriers["light"].barrier
                          < result.barriers["classical"].barrier}}  # fmt: skip
    print(json.dumps(figures, indent=1, default=float))
    (ARGS.workdir / "figures.json").write_text(json.dumps(figures, indent=1, default=float))
    for label, pmf in result.pmfs.items():
        pmf.write_csv(ARGS.workdir / f"pmf_{label}.csv")
    return 0


ARGS = parse_args()

if __name__ == "__main__":
    raise SystemExit(main())
