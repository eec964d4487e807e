"""Second virial coefficient and Boyle temperature of a learned argon-like Lennard-Jones gas.

A ``bpnn`` (cutoff 3σ) is trained on 64 LJ-oracle dimers from 0.8σ to the cutoff plus 8
isolated-atom frames (they pin the model's zero); its pair curve, B₂(T) and Boyle
temperature are set against the oracle's over the same table and against the exact LJ
answer (T_B = 3.4179 ε/k). Tail treatments side by side: truncated at the cutoff (the
learned potential is zero beyond it), ``-C6/r⁶`` beyond 2.6σ with C6 fitted to the curve
between 2σ and 2.6σ, and the same with the oracle's ``C6 = 4εσ⁶`` (a known dispersion
coefficient, as a D3-like term would supply).

Measured (seeds 0, 1, 2; 2-core machine): T_B learned -1.21, -1.16, -0.84 % from exact with
the known C6 (oracle +0.01 %), -1.77, -1.78, -1.24 % with the fitted C6; learned B₂ within
1.15 cm³/mol of the oracle's from 1.5 to 4.5 ε/k. The schedule matters: with the learning
rate halved after 200 flat epochs (instead of 1000) seed 0 gave +0.3 % but seeds 1 and 2
stalled at +8 % and +19 %.

    . .venv/bin/activate
    python bench/boyle.py                        # bpnn, 8000 full-batch epochs (~8 min)
    python bench/boyle.py --model mpnn --epochs 3000
    python bench/boyle.py --checkpoint run/model.pt   # evaluate a trained model only

Units: σ = 3.4 Å, ε = 0.0104 eV (argon-like); temperatures are printed as kT/ε and K.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.units import kB  # noqa: E402

from mlpot.apps.virial import (  # noqa: E402
    DispersionTail,
    boyle_temperature,
    fit_dispersion_tail,
    lennard_jones,
    pair_curves,
    second_virial,
    tabulate,
    to_cm3_per_mol,
)
from mlpot.calculators.ase_calculator import load_calculator  # noqa: E402
from mlpot.calculators.oracles import make_oracle  # noqa: E402

SIGMA, EPSILON = 3.4, 0.0104
C6 = 4 * EPSILON * SIGMA**6
T_STARS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)
BRACKET = (2.5, 4.5)  # ε/k
CORE = 1e-4  # <exp(-u/kT)> accepted at the first tabulated distance (0.8σ)


def labelled(atoms: Atoms, oracle) -> Atoms:
    atoms.calc = oracle
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def dimers(distances, oracle) -> list[Atoms]:
    return [labelled(Atoms("Ar2", positions=[[0, 0, 0], [0, 0, d]]), oracle) for d in distances]


def training_sets(
    oracle, reach: float, count: int, isolated: int
) -> tuple[list[Atoms], list[Atoms]]:
    """``count`` dimers, a quarter on the repulsive wall (0.8σ to σ), half over the well
    (σ to 2σ), a quarter in the tail (2σ to ``reach``); ``isolated`` single atoms (E = 0:
    they pin the model's zero, which u(r) = E(r) - 2 E(atom) is measured from); and a
    validation set of 8 dimers between them."""
    wall, well = count // 4, count // 2
    distances = np.concatenate(
        [
            np.linspace(0.8 * SIGMA, SIGMA, wall, endpoint=False),
            np.linspace(SIGMA, 2 * SIGMA, well, endpoint=False),
            np.linspace(2 * SIGMA, reach, count - wall - well),
        ]
    )
    atoms = [labelled(Atoms("Ar", positions=[[0, 0, 0]]), oracle) for _ in range(isolated)]
    validation = np.linspace(0.85 * SIGMA, reach - 0.2, 8)
    return dimers(distances, oracle) + atoms, dimers(validation, oracle)


def train(args, oracle) -> Path:
    """Full-batch fit. Energies weigh 100 against forces 10 (per component): B₂ needs u to
    about 0.002 ε, and u is measured from the model's isolated atom, which only the
    isolated-atom frames pin. A local model must also reach zero at its cutoff while the
    oracle's dimers just inside it still feel the r⁻⁶ tail, and with the default weights
    (1 and 10) the fit settled that conflict by shifting the isolated atom 2-4e-5 eV, which
    moved all of u by 0.004-0.01 ε and T_B by 2-6 %."""
    from mlpot.training import parse_config, run_training

    models = {
        "bpnn": {
            "name": "bpnn",
            "cutoff": args.cutoff,
            "radial_count": args.radial,
            "radial_min": 0.5 * SIGMA,
            "hidden": [args.hidden, args.hidden],
        },
        "mpnn": {"name": "mpnn", "cutoff": args.cutoff, "channels": 16, "layers": 1},
    }
    train_set, validation = training_sets(oracle, args.reach, args.dimers, args.isolated)
    config = parse_config(
        {
            "model": models[args.model],
            "training": {
                "epochs": args.epochs,
                "batch_size": len(train_set),  # full batch: a smooth 1D fit
                "learning_rate": args.learning_rate,
                "lr_patience": args.lr_patience,
                "lr_factor": 0.5,
                "min_learning_rate": 1e-7,
                "early_stopping_patience": args.epochs,
                "progress": False,
                "seed": args.seed,
            },
            "loss": {"energy": args.energy_weight, "forces": 10.0},
            "fisher": {"structures": 0},
            "output": str(args.out),
        }
    )
    start = time.perf_counter()
    result = run_training(config, train=train_set, validation=validation, log=lambda _: None)
    errors = result.validation_metrics["energy_per_atom"]["rmse"]
    print(
        f"trained {args.model} on {len(train_set)} structures ({args.dimers} dimers) in "
        f"{time.perf_counter() - start:.0f} s; validation energy RMSE {errors * 1e3:.4f} meV/atom"
    )
    return result.model_path


def boyle(curves, tail) -> float:
    return boyle_temperature(
        curves, tuple(t * EPSILON / kB for t in BRACKET), tail=tail, core_tolerance=CORE
    )


def report(learned, oracle_curves, cutoff: float) -> dict:
    r = learned.r
    error = learned.u[0] - oracle_curves.u[0]
    well = r >= SIGMA
    print(
        f"pair curve, learned - oracle: max |du| {np.abs(error[well]).max() / EPSILON:.4f} ε "
        f"for r >= σ, {np.abs(error[~well]).max() / EPSILON:.3f} ε on the wall (0.8σ-σ)"
    )
    window = (2.0 * SIGMA, 2.6 * SIGMA)  # r⁻¹² below 1.6 % of r⁻⁶; inside the cutoff
    fitted = {name: fit_dispersion_tail(c, window) for name, c in
              (("learned", learned), ("oracle", oracle_curves))}  # fmt: skip
    tails = {
        "truncated": {"learned": None, "oracle": None},
        f"fitted C6 ({window[0]:.1f}-{window[1]:.1f} Å)": {
            k: DispersionTail(v.c6, window[1]) for k, v in fitted.items()
        },
        f"known C6 from {window[1]:.1f} Å": {k: DispersionTail(C6, window[1]) for k in fitted},
    }
    for name, tail in fitted.items():
        print(f"fitted C6 {name}: {tail.c6 / C6:.3f} x 4εσ⁶")
    exact = tabulate(lennard_jones(SIGMA, EPSILON), np.linspace(0.7 * SIGMA, 10 * SIGMA, 2000))
    t_exact = boyle(exact, DispersionTail(C6, 10 * SIGMA))
    print(f"\nexact LJ: T_B = {t_exact * kB / EPSILON:.4f} ε/k ({t_exact:.1f} K)")
    figures = {"t_boyle_exact": t_exact * kB / EPSILON, "treatments": {}}
    temperatures = np.array(T_STARS) * EPSILON / kB
    b2_exact = second_virial(exact, temperatures, tail=DispersionTail(C6, 10 * SIGMA))
    for name, tail in tails.items():
        t_learned = boyle(learned, tail["learned"])
        t_oracle = boyle(oracle_curves, tail["oracle"])
        b2_l = second_virial(learned, temperatures, tail=tail["learned"], core_tolerance=CORE)
        b2_o = second_virial(oracle_curves, temperatures, tail=tail["oracle"], core_tolerance=CORE)
        print(
            f"\n{name}: T_B learned {t_learned * kB / EPSILON:.4f}, oracle "
            f"{t_oracle * kB / EPSILON:.4f} ε/k (learned/exact - 1 = "
            f"{100 * (t_learned / t_exact - 1):+.2f} %)"
        )
        print("   kT/ε   T/K   B2 learned  B2 oracle  B2 exact (cm³/mol)")
        for t, bl, bo, be in zip(T_STARS, b2_l, b2_o, b2_exact, strict=True):
            print(
                f"   {t:4.1f} {t * EPSILON / kB:6.1f} {to_cm3_per_mol(bl):10.2f} "
                f"{to_cm3_per_mol(bo):10.2f} {to_cm3_per_mol(be):10.2f}"
            )
        figures["treatments"][name] = {
            "t_boyle_learned": t_learned * kB / EPSILON,
            "t_boyle_oracle": t_oracle * kB / EPSILON,
            "b2_learned_cm3_mol": to_cm3_per_mol(b2_l).tolist(),
            "b2_oracle_cm3_mol": to_cm3_per_mol(b2_o).tolist(),
            "max_b2_difference_cm3_mol": float(np.abs(to_cm3_per_mol(b2_l - b2_o)).max()),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("bpnn", "mpnn"), default="bpnn")
    parser.add_argument("--epochs", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0, help="weights and batch order")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--dimers", type=int, default=64)
    parser.add_argument("--isolated", type=int, default=8, help="isolated-atom frames")
    parser.add_argument("--lr-patience", type=int, default=1000)
    parser.add_argument(
        "--energy-weight", type=float, default=100.0, help="energy loss weight (forces: 10)"
    )
    parser.add_argument("--radial", type=int, default=16, help="bpnn radial functions")
    parser.add_argument("--hidden", type=int, default=32, help="bpnn hidden width")
    parser.add_argument("--cutoff", type=float, default=3 * SIGMA, help="model cutoff, Å")
    parser.add_argument(
        "--reach", type=float, help="longest training dimer, Å (default: cutoff - 0.05)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-boyle-run"))
    parser.add_argument("--checkpoint", type=Path, help="evaluate this model, no training")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.reach = args.reach or args.cutoff - 0.05
    # ASE shifts its LJ energy to 0 at rc; at 20σ the shift is 6e-8 ε
    oracle = make_oracle("lj", sigma=SIGMA, epsilon=EPSILON, rc=20 * SIGMA)
    path = args.checkpoint or train(args, oracle)
    calc = load_calculator(path, domain_scores=False, force_uncertainty=False)
    cutoff = float(calc.model.cutoff)
    r = np.linspace(0.8 * SIGMA, cutoff, 400)
    learned = pair_curves(calc, ("Ar", "Ar"), r)
    oracle_curves = pair_curves(oracle, ("Ar", "Ar"), r)
    figures = report(learned, oracle_curves, cutoff)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
