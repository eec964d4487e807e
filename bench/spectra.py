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
   HF/STO-3G, finite-field polarisabilities): a polarisability model learned from N
   structures about the molecule relaxed with PySCF (``--raman-sampling``: rattled by 0.05
   Å, displaced along PySCF's normal modes at ``--raman-temperature``, or half of each,
   ``mixed``), activities with PySCF's Hessian, compared band by band like the IR
   intensities. The relaxed molecule, its Hessian and every polarisability (the reference's
   finite differences and the labels) are cached in ``--work``: a rerun labels only what
   it has not seen. ``--raman-only`` skips parts 1-4.

    python bench/spectra.py --data ../shared/data/aspirin_gfn2/aspirin_test_300K.xyz \\
        [--energy-model MODEL.pt] [--md-trajectories 2] [--json out.json]
    python bench/spectra.py --data ../shared/data/ethanol_dft/test_MD.xyz --raman-only \\
        --raman 600 --raman-sampling mixed

Elements, file names and sizes come from the arguments: no molecule-specific constants.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read, write
from ase.optimize import BFGS

from mlpot.active.sampling import modes_of_hessian, normal_mode_samples, rattled
from mlpot.calculators.ase_calculator import MlpotCalculator
from mlpot.calculators.oracles import make_oracle
from mlpot.models.checkpoint import load_model
from mlpot.models.registry import build_model
from mlpot.models.response import DipoleModel, PolarizabilityModel
from mlpot.training.response import fit_response
from mlpot.validation.hessian import finite_difference_hessian
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
    parser.add_argument("--raman-only", action="store_true", help="skip the IR parts")
    parser.add_argument("--raman-method", default="hf/sto-3g", help="functional/basis")
    parser.add_argument(
        "--raman-sampling",
        default="mixed",
        choices=["rattle", "modes", "mixed"],
        help="label structures: rattled (0.05 Å), the oracle's normal modes at "
        "--raman-temperature, or half and half",
    )
    parser.add_argument("--raman-temperature", type=float, default=300.0, help="K")
    parser.add_argument("--raman-seed", type=int, default=0, help="model initialisation")
    parser.add_argument("--work", default="runs/spectra", help="cached PySCF labels")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = read(args.data, ":")
    elements = sorted({int(z) for z in frames[0].numbers})
    figures: dict = {"data": args.data, "oracle": args.oracle, "atoms": len(frames[0])}
    if not args.raman_only:
        ir_bench(args, frames, elements, figures)
    if args.raman:
        figures["raman"] = raman_bench(args, frames[0], elements)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


def ir_bench(args, frames, elements: list[int], figures: dict) -> None:
    """Parts 1-4 of the module docstring, their figures added to ``figures``."""
    oracle = make_oracle(args.oracle)
    start = frames[0].copy()
    start.calc = oracle
    BFGS(start, logfile=None).run(fmax=1e-3, steps=1000)

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


class PolarizabilityCache:
    """An oracle's polarisabilities (e·Å²/V), kept on disk (``path``, npz) by positions, so
    a rerun labels only structures it has not seen. Quacks like a calculator for
    :func:`harmonic_raman`'s finite differences (``get_property``)."""

    def __init__(self, oracle, path: Path) -> None:
        self.oracle, self.path = oracle, path
        self.positions: list[np.ndarray] = []
        self.values: dict[bytes, np.ndarray] = {}
        if path.exists():
            data = np.load(path)
            for x, alpha in zip(data["positions"], data["polarizability"], strict=True):
                self.positions.append(x)
                self.values[self._key(x)] = alpha
        self.new = 0

    @staticmethod
    def _key(positions: np.ndarray) -> bytes:
        return (np.round(positions, 8) + 0.0).tobytes()

    def get_property(self, name: str, atoms) -> np.ndarray:
        if name != "polarizability":
            raise ValueError(f"only the polarizability is cached, not {name!r}")
        key = self._key(atoms.positions)
        if key not in self.values:
            self.values[key] = np.asarray(self.oracle.get_property(name, atoms.copy()))
            self.positions.append(atoms.positions.copy())
            self.new += 1
            if self.new % 25 == 0:
                self.save()
        return self.values[key]

    def save(self) -> None:
        """Write the cache (when it learned something new since it was read)."""
        if not self.new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        alphas = [self.values[self._key(x)] for x in self.positions]
        np.savez(self.path, positions=np.array(self.positions), polarizability=np.array(alphas))


def raman_samples(molecule, hessian: np.ndarray, count: int, sampling: str, temperature: float):
    """``count`` structures about ``molecule``: rattled by 0.05 Å, displaced along the
    normal modes of ``hessian`` at ``temperature`` (classical harmonic, every mode), or half
    of each. Deterministic (seed 0), so cached labels are found again."""
    n_modes = {"rattle": 0, "modes": count, "mixed": count // 2}[sampling]
    omega2, modes = modes_of_hessian(molecule, hessian)
    frames = normal_mode_samples(
        molecule, omega2, modes, n_modes, temperature=temperature, seed=0
    ) + rattled(molecule, count - n_modes, stdev=0.05, seed=0)
    order = np.random.default_rng(0).permutation(count)
    return [frames[k] for k in order]


def raman_reference(molecule0, method: str, work: Path):
    """PySCF (``functional/basis``) relaxed molecule, its finite-difference Hessian, its
    harmonic Raman spectrum and the label cache, all kept in ``work`` (file names from the
    method, the formula and a hash of the starting positions)."""
    functional, basis = method.split("/")
    pyscf = make_oracle("pyscf", functional=functional, basis=basis)
    start = hashlib.sha1(np.round(molecule0.positions, 6).tobytes()).hexdigest()[:8]
    tag = f"raman-{method.replace('/', '-')}-{molecule0.get_chemical_formula()}-{start}"
    relaxed_path, hessian_path = work / f"{tag}-relaxed.xyz", work / f"{tag}-hessian.npy"
    if not relaxed_path.exists():
        molecule = molecule0.copy()
        molecule.calc = pyscf
        BFGS(molecule, logfile=None).run(fmax=1e-3, steps=500)
        molecule.calc = None
        work.mkdir(parents=True, exist_ok=True)
        write(relaxed_path, molecule)
    # always the file's (rounded) positions: the cache's keys must not depend on the run
    molecule = read(relaxed_path)
    if hessian_path.exists():
        hessian = np.load(hessian_path)
    else:
        hessian = finite_difference_hessian(molecule, pyscf, 0.01)
        np.save(hessian_path, hessian)
    cache = PolarizabilityCache(pyscf, work / f"{tag}-polarizabilities.npz")
    reference = harmonic_raman(molecule, hessian, cache)
    cache.save()
    return molecule, hessian, reference, cache


def band_table(reference, learned, floor: float = 0.1) -> list[dict]:
    """Per strong band: frequency (cm⁻¹), the oracle's and the learned activity relative to
    the strongest band, and the relative error."""
    ref = reference.intensities / reference.intensities.max()
    got = learned.intensities / learned.intensities.max()
    return [
        {
            "cm": float(reference.frequencies[k]),
            "oracle": float(ref[k]),
            "learned": float(got[k]),
            "error": float(abs(got[k] - ref[k]) / ref[k]),
        }
        for k in np.flatnonzero(ref > floor)
    ]


def raman_bench(args, molecule0, elements: list[int]) -> dict:
    """Part 5 of the module docstring: its figures."""
    t = time.perf_counter()
    work = Path(args.work)
    molecule, hessian, reference, cache = raman_reference(molecule0, args.raman_method, work)
    structures = raman_samples(
        molecule, hessian, args.raman, args.raman_sampling, args.raman_temperature
    )
    for atoms in structures:
        atoms.info["polarizability"] = cache.get_property("polarizability", atoms)
    cache.save()
    label_s = time.perf_counter() - t
    n_val = len(structures) // 8
    torch.manual_seed(args.raman_seed)
    body = build_model(
        {"name": "mpnn", "elements": elements, "cutoff": 4.0, "channels": args.channels}
    )
    alpha = PolarizabilityModel(body).double()
    t = time.perf_counter()
    fit = fit_response(
        alpha,
        structures[n_val:],
        structures[:n_val],
        epochs=args.epochs,
        seed=args.raman_seed,
    )
    learned = harmonic_raman(molecule, hessian, alpha)
    row = {
        "method": args.raman_method,
        "sampling": args.raman_sampling,
        "temperature_K": args.raman_temperature,
        "seed": args.raman_seed,
        "structures": args.raman,
        **fit,
        **band_errors(reference, learned),
        "bands_table": band_table(reference, learned),
        "label_s": label_s,
        "train_s": time.perf_counter() - t,
    }
    print(
        f"Raman ({args.raman_method}, {args.raman} structures, {args.raman_sampling}): "
        f"polarisability RMSE {fit['validation_rmse']:.2e} e·Å²/V; {row['bands']} strong "
        f"bands, median {row['median_relative_error']:.1%}, max "
        f"{row['max_relative_error']:.1%}, within 20 % {row['within_20_percent']:.0%}"
    )
    for band in row["bands_table"]:
        print(
            f"  {band['cm']:7.1f} cm^-1  oracle {band['oracle']:.3f}  learned "
            f"{band['learned']:.3f}  error {band['error']:.1%}"
        )
    return row


if __name__ == "__main__":
    main()
