"""Bayesian torsion terms for a classical force field from a learned potential's scans.

Ethanol's C-C-O-H dihedral, relaxed scans with a learned potential and with its oracle
(GFN2-xTB), each fitted with the Fourier series ``Σ_n k_n (1 + cos(nφ - δ_n))``, n = 1, 2, 3,
phases 0°/180° (the profile is symmetric), by Bayesian linear regression on energies and
slopes (α and both noise levels by evidence maximisation). Printed: the posterior means and
stds of both fits side by side, the predictive band against the oracle's scan, the GROMACS
and OpenMM files of the learned fit, and a coverage check on synthetic data drawn from the
oracle's fitted coefficients and noise.

The learned potential is an ``mpnn`` trained here on GFN2-xTB labels of ethanol frames from
Langevin MD at 600 K with the oracle (``--frames``, every 10 steps), unless ``--checkpoint``
gives one.

    . .venv/bin/activate
    python bench/torsion.py                   # about 8 minutes on 2 cores
    python bench/torsion.py --checkpoint run/model.pt --out torsion-out

Measured (defaults): mpnn 0.19 meV/atom, 12.6 meV/Å on held-out frames; fitted k (kJ/mol,
learned vs GFN2-xTB): n=1 3.751 ± 0.013 vs 3.726 ± 0.006 (180°), n=2 0.565 ± 0.013 vs
0.562 ± 0.006 (0°), n=3 3.157 ± 0.012 vs 3.203 ± 0.006 (0°), i.e. 1.7, 0.2 and 3.4 combined
std apart; the oracle's scan inside the learned fit's 95 % band at 18/18 angles (largest
difference 0.087 kJ/mol); synthetic coverage 65.8 % / 93.9 % at 68.3 % / 95.5 % (1200
coefficients). With 300 frames and 300 s of training (1.6 meV/atom) the learned profile was
off by up to 2.6 kJ/mol and its coefficients 30-65 std from the oracle's: the posterior std
is the fit's uncertainty given the scan, not the potential's error.
GFN2-xTB puts gauche ethanol 6.5 kJ/mol below anti (experiment: within ~0.5 kJ/mol, anti lower).

The fitted V(φ) is the whole torsional profile of the scan: a force field with its own
1-4 terms should subtract them first (mlpot.apps.torsion.subtract_baseline).
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
from ase.build import molecule  # noqa: E402
from ase.optimize import BFGS  # noqa: E402

from mlpot.active.oracle_md import oracle_md_frames  # noqa: E402
from mlpot.apps.torsion import FourierBasis, TorsionScan, coverage, fit_torsion  # noqa: E402
from mlpot.apps.torsion_forcefield import (  # noqa: E402
    KJ_PER_MOL_PER_EV,
    gromacs_dihedraltypes,
    openmm_xml,
)
from mlpot.apps.torsion_scan import relaxed_scan  # noqa: E402
from mlpot.calculators.ase_calculator import load_calculator  # noqa: E402
from mlpot.calculators.oracles import make_oracle  # noqa: E402

DIHEDRAL = (0, 1, 2, 3)  # C(methyl)-C-O-H of ase.build.molecule("CH3CH2OH")
TYPES = ("CT", "CT", "OH", "HO")  # AMBER-like atom types
ANGLES = np.arange(0.0, 360.0, 20.0)


def md_frames(oracle, count: int, temperature: float, seed: int):
    """``count`` oracle-labelled frames of relaxed ethanol's Langevin MD (0.5 fs, every 10
    steps after 200 steps of equilibration; mlpot's checked oracle MD)."""
    atoms = molecule("CH3CH2OH")
    atoms.calc = oracle
    BFGS(atoms, logfile=None).run(fmax=0.02)
    settings = {"stride": 10, "equilibration": 200, "timestep_fs": 0.5, "seed": seed}
    run = oracle_md_frames(atoms, oracle, temperature=temperature, frames=count, **settings)
    return [frame.labelled() for frame in run]


def train(args, oracle) -> Path:
    from mlpot.training import parse_config, run_training

    start = time.perf_counter()
    frames = md_frames(oracle, args.frames, args.temperature, args.seed)
    labelled = time.perf_counter() - start
    config = parse_config(
        {
            "model": {"name": "mpnn", "cutoff": 4.0, "channels": 32},
            "training": {
                "epochs": args.epochs,
                "batch_size": 8,
                "max_time_s": args.train_seconds,
                "progress": False,
            },
            "data": {"validation_fraction": 0.1},
            "fisher": {"structures": 0},
            "output": str(args.out / "model"),
        }
    )
    result = run_training(config, train=frames, log=lambda _: None)
    metrics = result.validation_metrics
    print(
        f"learned potential: mpnn on {len(frames)} GFN2-xTB MD frames at {args.temperature:.0f} K "
        f"(labels {labelled:.0f} s, training {time.perf_counter() - start - labelled:.0f} s); "
        f"validation RMSE {metrics['energy_per_atom']['rmse'] * 1e3:.2f} meV/atom, "
        f"{metrics['forces']['rmse'] * 1e3:.1f} meV/Å"
    )
    return result.model_path


def print_fit(name: str, fit) -> None:
    noise_d = fit.noise_derivative
    print(
        f"\n{name}: noise {fit.noise_energy * 1e3:.3f} meV, slopes "
        f"{noise_d * 1e3 if noise_d else float('nan'):.3f} meV/rad, prior std "
        f"{fit.alpha**-0.5 * 1e3:.1f} meV, t-dof {fit.dof:.1f}, log evidence {fit.log_evidence:.1f}"
    )
    for term in fit.terms():
        print(
            f"   n={term.periodicity}: k = {term.k * KJ_PER_MOL_PER_EV:7.4f} ± "
            f"{term.k_std * KJ_PER_MOL_PER_EV:.4f} kJ/mol  phase {term.phase:5.1f}°"
        )


def synthetic_coverage(fit, scan, draws: int, seed: int) -> dict:
    """Fractions of coefficients inside their 68.3 % / 95.4 % intervals over ``draws``
    synthetic scans at ``scan``'s angles, from ``fit``'s coefficients and noise levels."""
    rng = np.random.default_rng(seed)
    basis = FourierBasis(fit.basis.periodicities, fit.basis.symmetric)
    hits = {0.6827: [], 0.9545: []}
    for _ in range(draws):
        energies = basis.energy_rows(scan.angles) @ fit.mean
        slopes = basis.derivative_rows(scan.angles) @ fit.mean
        synthetic = TorsionScan(
            scan.angles,
            energies + rng.normal(0, fit.noise_energy, len(energies)),
            slopes + rng.normal(0, fit.noise_derivative, len(slopes)),
        )
        again = fit_torsion(synthetic, periodicities=basis.periodicities)
        for level, found in hits.items():
            found.append(coverage(again, fit.mean, level))
    return {level: float(np.mean(found)) for level, found in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a learned potential of ethanol")
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=600.0)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--train-seconds", type=float, default=600.0)
    parser.add_argument("--draws", type=int, default=400, help="synthetic coverage draws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-torsion"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    oracle = make_oracle("xtb")
    path = args.checkpoint or train(args, oracle)
    learned_calc = load_calculator(path, domain_scores=False, force_uncertainty=False)

    start = molecule("CH3CH2OH")
    scans = {}
    for name, calc in (("GFN2-xTB", oracle), ("learned", learned_calc)):
        begin = time.perf_counter()
        scans[name] = relaxed_scan(start, calc, DIHEDRAL, ANGLES, fmax=0.005)
        scan = scans[name]
        print(
            f"{name} scan: {len(ANGLES)} angles in {time.perf_counter() - begin:.0f} s, "
            f"converged {int(scan.converged.sum())}/{len(ANGLES)}, barrier "
            f"{(scan.energies.max() - scan.energies.min()) * KJ_PER_MOL_PER_EV:.3f} kJ/mol"
        )
    fits = {name: fit_torsion(scan) for name, scan in scans.items()}
    for name, fit in fits.items():
        print_fit(name, fit)
    learned, reference = fits["learned"], fits["GFN2-xTB"]
    z = (learned.mean - reference.mean) / np.sqrt(learned.std**2 + reference.std**2)
    print("\nlearned - oracle coefficients, in combined std:", np.round(z, 2).tolist())

    band = learned.predict(scans["GFN2-xTB"].angles)
    oracle_rel = scans["GFN2-xTB"].energies - reference.offsets[0]
    learned_rel = band.mean - learned.offsets[0]
    inside = np.abs(oracle_rel - learned_rel) <= learned.quantile(0.9545) * band.std_observed
    print(
        f"oracle scan inside the learned fit's 95 % predictive band: {int(inside.sum())}/"
        f"{len(inside)} (max |learned - oracle| "
        f"{np.abs(oracle_rel - learned_rel).max() * KJ_PER_MOL_PER_EV:.3f} kJ/mol)"
    )

    gromacs_dihedraltypes(learned.terms(), TYPES, args.out / "dihedraltypes.itp")
    openmm_xml(learned.terms(), TYPES, args.out / "torsions.xml")
    print(f"\n{(args.out / 'dihedraltypes.itp').read_text()}")

    found = synthetic_coverage(reference, scans["GFN2-xTB"], args.draws, args.seed)
    print(
        f"synthetic coverage over {args.draws} draws x {reference.mean.size} coefficients: "
        + ", ".join(
            f"{100 * v:.1f} % inside the {100 * k:.1f} % interval" for k, v in found.items()
        )
    )
    if args.json:
        figures = {
            name: {
                "terms_kj_mol": [
                    [t.periodicity, t.k * KJ_PER_MOL_PER_EV, t.k_std * KJ_PER_MOL_PER_EV, t.phase]
                    for t in fit.terms()
                ],
                "noise_energy_ev": fit.noise_energy,
                "noise_derivative_ev_rad": fit.noise_derivative,
            }
            for name, fit in fits.items()
        }
        figures["coverage"] = found
        figures["z"] = z.tolist()
        figures["band_inside"] = [int(inside.sum()), len(inside)]
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
