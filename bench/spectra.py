"""Learned IR spectra against the oracle's, on molecules larger than the tests' water.

For a molecule (the first frame of a data file, relaxed with the oracle):

1. the oracle's harmonic IR spectrum: finite-difference Hessian and dipole derivatives
   (GFN2-xTB by default);
2. a dipole model learned from the oracle's dipoles of rattled copies (``--rattled``, 0.05
   Å) and of the data file's MD frames (``--md-frames``), charges only and charges with
   atomic dipoles; the harmonic IR intensities with the oracle's Hessian and the learned
   dipole, compared band by band (relative to the strongest band, bands above a tenth);
3. with ``--energy-model``: harmonic frequencies of a trained mlpot energy model (at its
   own minimum) against the oracle's: the fraction within max(1 %, 10 cm⁻¹);
4. with ``--md-trajectories``: MD line shape on the oracle's surface with the learned
   dipole, the strongest peaks against the nearest harmonic bands;
5. with ``--raman N``: Raman activities against PySCF's (``--raman-method``, default
   HF/STO-3G, finite-field polarisabilities): a polarisability model learned from N rattled
   copies of the molecule relaxed with PySCF, activities with PySCF's Hessian, compared band
   by band like the IR intensities.

    python bench/spectra.py --data ../shared/data/aspirin_gfn2/aspirin_test_300K.xyz \\
        [--energy-model MODEL.pt] [--md-trajectories 2] [--json out.json]

Elements, file names and sizes come from the arguments: no molecule-specific constants.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from ase.io import read
from ase.optimize import BFGS

from mlpot.calculators.ase_calculator import MlpotCalculator
from mlpot.calculators.oracles import make_oracle
from mlpot.models.checkpoint import load_model
from mlpot.models.registry import build_model
from mlpot.models.response import DipoleModel, PolarizabilityModel
from mlpot.training.response import fit_response
from mlpot.validation.spectra import harmonic_ir, harmonic_raman, md_spectrum


def labelled(atoms, oracle):
    atoms = atoms.copy()
    atoms.calc = oracle
    atoms.info["dipole"] = np.asarray(atoms.get_dipole_moment())
    atoms.calc = None
    return atoms


def band_errors(reference, learned, floor: float = 0.1) -> dict:
    ref = reference.intensities / reference.intensities.max()
    got = learned.intensities / learned.intensities.max()
    strong = ref > floor
    relative = np.abs(got[strong] - ref[strong]) / ref[strong]
    return {
        "bands": int(strong.sum()),
        "median_relative_error": float(np.median(relative)),
        "max_relative_error": float(relative.max()),
        "within_20_percent": float(np.mean(relative <= 0.2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="extxyz: frame 0 starts, frames feed")
    parser.add_argument("--oracle", default="xtb")
    parser.add_argument("--rattled", type=int, default=200)
    parser.add_argument("--md-frames", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--energy-model", default=None)
    parser.add_argument("--md-trajectories", type=int, default=0)
    parser.add_argument("--raman", type=int, default=0, help="labelled structures (0: skip)")
    parser.add_argument("--raman-method", default="hf/sto-3g", help="functional/basis")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    oracle = make_oracle(args.oracle)
    frames = read(args.data, ":")
    start = frames[0].copy()
    start.calc = oracle
    BFGS(start, logfile=None).run(fmax=1e-3, steps=1000)
    figures: dict = {"data": args.data, "oracle": args.oracle, "atoms": len(start)}

    t = time.perf_counter()
    reference = harmonic_ir(start, oracle, oracle)
    figures["oracle_harmonic_s"] = time.perf_counter() - t
    print(f"{len(start)} atoms; oracle harmonic IR {figures['oracle_harmonic_s']:.0f} s")

    rng = np.random.default_rng(0)
    structures = []
    for _ in range(args.rattled):
        atoms = start.copy()
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        structures.append(labelled(atoms, oracle))
    picks = rng.choice(len(frames), size=min(args.md_frames, len(frames)), replace=False)
    structures += [labelled(frames[k], oracle) for k in picks]
    order = rng.permutation(len(structures))
    n_val = len(structures) // 8
    validation = [structures[k] for k in order[:n_val]]
    train = [structures[k] for k in order[n_val:]]
    elements = sorted({int(z) for z in start.numbers})
    figures["dipole_models"] = {}
    models = {}
    for name, radial in (("charges", 0), ("charges+atomic", 8)):
        torch.manual_seed(0)
        body = build_model(
            {"name": "mpnn", "elements": elements, "cutoff": 4.0, "channels": args.channels}
        )
        model = DipoleModel(body, radial_basis=radial).double()
        t = time.perf_counter()
        fit = fit_response(model, train, validation, epochs=args.epochs)
        learned = harmonic_ir(start, oracle, model)
        row = {**fit, "train_s": time.perf_counter() - t, **band_errors(reference, learned)}
        figures["dipole_models"][name] = row
        models[name] = model
        print(
            f"{name:>15}: dipole RMSE {fit['validation_rmse']:.4f} e·Å; "
            f"{row['bands']} strong bands, median {row['median_relative_error']:.1%}, "
            f"max {row['max_relative_error']:.1%}, within 20 % {row['within_20_percent']:.0%}"
        )

    if args.energy_model:
        energy = load_model(args.energy_model, dtype="float64")
        relaxed = start.copy()
        relaxed.calc = MlpotCalculator(energy)
        BFGS(relaxed, logfile=None).run(fmax=1e-3, steps=1000)
        ours = harmonic_ir(relaxed, energy, models["charges"]).frequencies
        diff = np.abs(ours - reference.frequencies)
        allowed = np.maximum(0.01 * np.abs(reference.frequencies), 10.0)
        figures["frequencies"] = {
            "mae_cm": float(diff.mean()),
            "max_cm": float(diff.max()),
            "within_1pct_or_10cm": float(np.mean(diff <= allowed)),
        }
        print(
            f"energy model frequencies: MAE {diff.mean():.1f} cm^-1, max {diff.max():.1f}, "
            f"within max(1 %, 10 cm^-1) {np.mean(diff <= allowed):.0%}"
        )

    if args.md_trajectories:
        t = time.perf_counter()
        shape = md_spectrum(start, oracle, models["charges"], trajectories=args.md_trajectories)
        strongest = np.argsort(reference.intensities)[::-1][:5]
        shifts = []
        for k in strongest:
            f = reference.frequencies[k]
            shifts.append(shape.peak(f - 150.0, f + 50.0) - f)
        figures["md"] = {
            "resolution_cm": shape.resolution,
            "peak_minus_harmonic_cm": shifts,
            "s": time.perf_counter() - t,
        }
        print(
            f"MD peaks minus harmonic (5 strongest bands, resolution {shape.resolution:.0f}): "
            + ", ".join(f"{s:+.0f}" for s in shifts)
        )
    if args.raman:
        functional, basis = args.raman_method.split("/")
        pyscf = make_oracle("pyscf", functional=functional, basis=basis)
        molecule = frames[0].copy()
        molecule.calc = pyscf
        BFGS(molecule, logfile=None).run(fmax=1e-3, steps=500)
        t = time.perf_counter()
        reference = harmonic_raman(molecule, pyscf, pyscf)
        labelled_alpha = []
        for _ in range(args.raman):
            atoms = molecule.copy()
            atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
            atoms.info["polarizability"] = pyscf.get_property("polarizability", atoms)
            labelled_alpha.append(atoms)
        n_val = len(labelled_alpha) // 8
        torch.manual_seed(0)
        body = build_model(
            {"name": "mpnn", "elements": elements, "cutoff": 4.0, "channels": args.channels}
        )
        alpha = PolarizabilityModel(body).double()
        fit = fit_response(
            alpha, labelled_alpha[n_val:], labelled_alpha[:n_val], epochs=args.epochs
        )
        learned = harmonic_raman(molecule, pyscf, alpha)
        figures["raman"] = {
            "method": args.raman_method,
            **fit,
            **band_errors(reference, learned),
            "s": time.perf_counter() - t,
        }
        row = figures["raman"]
        print(
            f"Raman ({args.raman_method}, {args.raman} structures): polarisability RMSE "
            f"{fit['validation_rmse']:.2e} e·Å²/V; {row['bands']} strong bands, median "
            f"{row['median_relative_error']:.1%}, max {row['max_relative_error']:.1%}, within "
            f"20 % {row['within_20_percent']:.0%}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


if __name__ == "__main__":
    main()
