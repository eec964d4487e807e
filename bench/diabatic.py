"""Diabatic model on a known answer: how well are adiabats and nonadiabatic couplings learned,
from which labels, and how reliably (issue 19)?

The system is the one of ``tests/test_diabatic.py``: H2 with two crossing Morse diabats and
a Gaussian coupling (avoided crossing at r = 1.625 Å, gap 0.6 eV, coupling peak 2.67 /Å).
Training sets: ``--points`` distances from 0.8 to 3.0 Å in random directions. Each run is
scored on 401 distances from 0.9 to 2.9 Å (between the training points too):

* adiabat MAE and max error (eV), both states;
* coupling: max error (1/Å, one sign for the whole path), peak position error (Å), peak
  height error (relative), and the area ratio ``∫d dr / ∫d_exact dr`` (1 for the right
  total mixing-angle change).

Labels compared (``--cases``): ``global`` energies + forces + couplings of consistent sign;
``structure`` the same with a random sign per structure (as quantum chemistry gives them)
and the sign-free loss; ``track`` those random signs re-aligned along the path first
(:func:`~mlpot.apps.diabatic.align_nac_phases`; the bond keeps one direction, as along a
scan), then ``global``; ``energies`` energies and
forces only; ``random-start`` as ``global`` but with order-one initial head weights.

    OMP_NUM_THREADS=1 python bench/diabatic.py --seeds 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from ase import Atoms

import mlpot.models.diabatic as diabatic_model
from mlpot.apps.diabatic import ENERGIES, FORCES, align_nac_phases, evaluate, nac_key
from mlpot.apps.diabatic_training import fit_diabatic
from mlpot.models.diabatic import DiabaticModel
from mlpot.models.registry import build_model

BODIES = {
    "bpnn": {
        "name": "bpnn",
        "elements": [1],
        "cutoff": 5.0,
        "radial_count": 16,
        "angular_etas": [0.1],
        "zetas": [1],
        "lambdas": [1],
        "hidden": [8],
    },
    "mpnn": {
        "name": "mpnn",
        "elements": [1],
        "cutoff": 5.0,
        "channels": 16,
        "layers": 1,
        "l_max": 1,
        "radial_hidden": 16,
    },
}


def exact(r):
    """Adiabatic energies ``(2, R)`` eV, their r-derivatives, and ``d_01(r)`` 1/Å."""
    r = np.asarray(r, dtype=np.float64)
    e1, e2 = np.exp(-1.8 * (r - 1.0)), np.exp(-1.5 * (r - 1.8))
    v1, dv1 = 3.0 * (1 - e1) ** 2, 2 * 3.0 * (1 - e1) * 1.8 * e1
    v2, dv2 = (1 - e2) ** 2 + 1.5, 2 * (1 - e2) * 1.5 * e2
    v12 = 0.3 * np.exp(-((r - 1.7) ** 2) / 0.5)
    dv12 = -v12 * (r - 1.7) / 0.25
    mean, dmean, gap, dgap = (v1 + v2) / 2, (dv1 + dv2) / 2, v2 - v1, dv2 - dv1
    root = np.sqrt(gap**2 / 4 + v12**2)
    droot = (gap * dgap / 4 + v12 * dv12) / root
    nac = (gap * dv12 - v12 * dgap) / (gap**2 + 4 * v12**2)
    return np.stack([mean - root, mean + root]), np.stack([dmean - droot, dmean + droot]), nac


def diatomic(r, u, *, nac=True, sign=1.0):
    u = np.asarray(u, dtype=np.float64) / np.linalg.norm(u)
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], r * u])
    energies, slopes, coupling = exact(r)
    atoms.info[ENERGIES] = energies
    forces = np.zeros((2, 2, 3))
    forces[1] = -slopes[:, None] * u
    forces[0] = -forces[1]
    atoms.arrays[FORCES] = forces.reshape(2, 6)
    if nac:
        atoms.arrays[nac_key(0, 1)] = sign * np.stack([-coupling * u, coupling * u])
    return atoms


def training_set(case: str, points: int, seed: int):
    rng = np.random.default_rng(seed)
    radii = np.linspace(0.8, 3.0, points)
    signs = rng.choice([-1.0, 1.0], points) if case in ("structure", "track") else np.ones(points)
    # tracking phases by continuity needs a path in Cartesian space: one bond direction
    fixed = rng.normal(size=3)
    directions = [fixed if case == "track" else rng.normal(size=3) for _ in radii]
    frames = [
        diatomic(r, u, nac=case != "energies", sign=s)
        for r, u, s in zip(radii, directions, signs, strict=True)
    ]
    if case == "track":
        frames = align_nac_phases(frames, 2)
    return frames


def score(model) -> dict[str, float]:
    grid = np.linspace(0.9, 2.9, 401)
    result = evaluate(model, [diatomic(r, [0, 0, 1.0], nac=False) for r in grid])
    energies, _, coupling = exact(grid)
    error = np.abs(result.energies.numpy().T - energies)
    predicted = result.nac[0, 1, 1::2, 2].numpy()
    sign = np.sign(np.sum(predicted * coupling)) or 1.0
    peak, top = np.argmax(np.abs(coupling)), np.argmax(np.abs(predicted))
    return {
        "adiabat_mae_eV": float(error.mean()),
        "adiabat_max_eV": float(error.max()),
        "nac_max_error": float(np.abs(sign * predicted - coupling).max()),
        "peak_position_error_A": float(grid[top] - grid[peak]),
        "peak_height_error": float(abs(predicted[top]) / abs(coupling[peak]) - 1),
        "area_ratio": float(np.trapezoid(sign * predicted, grid) / np.trapezoid(coupling, grid)),
    }


def run(case: str, body: str, seed: int, args) -> dict:
    torch.manual_seed(seed)
    diabatic_model.INITIAL_HEAD_SCALE = 1.0 if case == "random-start" else 0.1
    model = DiabaticModel(build_model(BODIES[body]), 2, hidden=[32, 32]).double()
    phase = "structure" if case in ("structure", "energies") else "global"
    start = time.perf_counter()
    fit_diabatic(
        model,
        training_set(case, args.points, seed),
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        nac_phase=phase,
    )
    seconds = time.perf_counter() - start
    return {"case": case, "body": body, "seed": seed, "seconds": seconds, **score(model)}


def _line(row: dict) -> str:
    return (
        f"{row['body']:5s} {row['case']:12s} seed {row['seed']}: "
        f"adiabat MAE {row['adiabat_mae_eV']:.4f} eV (max {row['adiabat_max_eV']:.4f}), "
        f"NAC max err {row['nac_max_error']:.3f} /Å, peak {row['peak_position_error_A']:+.3f} Å "
        f"{row['peak_height_error']:+.1%}, area {row['area_ratio']:.3f}, {row['seconds']:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="global,structure,track,energies,random-start")
    parser.add_argument("--bodies", default="bpnn")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--points", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--json", default=None, help="Write every run's figures here.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for body in args.bodies.split(","):
        for case in args.cases.split(","):
            for seed in range(args.seeds):
                row = run(case, body, seed, args)
                rows.append(row)
                print(_line(row), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
