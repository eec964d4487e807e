"""Local-only versus long-range models on an ionic system: accuracy and cost.

Oracle: rock-salt NaCl with fixed charges ±1 e, full Ewald Coulomb energy (the ``coulomb``
term with ``range_separated=False``, checked against the Madelung constant in
tests/test_long_range.py) plus a Born–Mayer repulsion ``A exp(-r/ρ)`` between Na and Cl
(A = 1100 eV, ρ = 0.32 Å, smoothly switched off at 5 Å).

Data: 2x2x2 conventional cells (64 atoms), lattice constant 5.5–5.8 Å, rattled by 0.12 Å;
in half of them one Na and one Cl trade places (an antisite pair: two charged defects whose
interaction reaches across the cell, beyond any local cutoff).

Models, trained identically with ``mlpot.training.run_training`` (energy + forces +
stress, float64, same seed, epochs and batches):

* ``local``: ``bpnn`` (cutoff 5 Å);
* ``coulomb``: ``bpnn`` + range-separated ``coulomb`` with charges ±1 (σ = 1 Å, PME);
* ``qeq`` (with ``--qeq``): ``bpnn`` + ``qeq`` (charges learned from the environment, PME).

It prints test force/energy RMSE per model and the inference cost ratio (median CPU time
of energy + forces + stress of one structure, long-range / local; one thread, so CPU time
is the arithmetic and robust on a busy machine) at 64, 512 and 4096 atoms (QEq: 64 and
512 only, its dense Ewald matrix and solve are ``O(N²K)`` and ``O(N³)``).

Usage::

    python bench/long_range.py                       # small: 40 train / 12 test cells
    python bench/long_range.py --train 80 --epochs 60 --qeq --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.stress import full_3x3_to_voigt_6_stress

from mlpot.data.graph import EDGE_INDEX, NUMBERS, Graph, atoms_to_graph, edge_vectors
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import load_model
from mlpot.models.registry import build_model
from mlpot.models.sum import SumModel
from mlpot.models.zbl import smooth_switch
from mlpot.physics.derivatives import predict
from mlpot.training.config import parse_config
from mlpot.training.run import run_training

NA, CL = 11, 17


class BornMayer(EnergyModel):
    """Oracle repulsion ``A exp(-r/ρ)`` between unlike ions, switched off at ``cutoff``."""

    name = "born_mayer_oracle"

    def __init__(self, a: float = 1100.0, rho: float = 0.32, cutoff: float = 5.0) -> None:
        super().__init__([NA, CL], cutoff)
        self.a, self.rho = a, rho

    def forward(self, graph: Graph) -> torch.Tensor:
        r = torch.linalg.vector_norm(edge_vectors(graph), dim=-1)
        i, j = graph[EDGE_INDEX]
        unlike = graph[NUMBERS][i] != graph[NUMBERS][j]
        pair = self.a * torch.exp(-r / self.rho) * smooth_switch(r, 0.8 * self.cutoff, self.cutoff)
        pair = torch.where(unlike & (r < self.cutoff), pair, torch.zeros_like(pair))
        return r.new_zeros(graph[NUMBERS].shape[0]).index_add(0, i, 0.5 * pair)


def oracle() -> SumModel:
    coulomb = build_model(
        {
            "name": "coulomb",
            "elements": [NA, CL],
            "charges": [1.0, -1.0],
            "range_separated": False,
            "smearing": 1.0,
        }
    )
    return SumModel([coulomb, BornMayer()]).double()


def make_data(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    reference = oracle()
    frames = []
    for k in range(n):
        atoms = bulk("NaCl", "rocksalt", a=rng.uniform(5.5, 5.8), cubic=True).repeat(2)
        if k % 2:
            na = rng.choice(np.flatnonzero(atoms.numbers == NA))
            cl = rng.choice(np.flatnonzero(atoms.numbers == CL))
            atoms.numbers[[na, cl]] = [CL, NA]
        atoms.positions += rng.normal(scale=0.12, size=atoms.positions.shape)
        graph = atoms_to_graph(atoms, reference.cutoff)
        out = predict(reference, graph, stress=True)
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(out["energy"][0]),
            forces=out["forces"].numpy(),
            stress=full_3x3_to_voigt_6_stress(out["stress"][0].numpy()),
        )
        frames.append(atoms)
    return frames


MODELS = {
    "local": [],
    "coulomb": [
        {
            "name": "coulomb",
            "elements": [NA, CL],
            "charges": [1.0, -1.0],
            "smearing": 1.0,
            "method": "pme",
        }
    ],
    "qeq": [
        {
            "name": "qeq",
            "elements": [NA, CL],
            "cutoff": 5.0,
            "hidden": [16],
            "smearing": 1.0,
            "method": "pme",
        }
    ],
}


def train_one(name: str, data: Path, test: Path, output: Path, args) -> dict:
    bpnn = {"name": "bpnn", "elements": [NA, CL], "cutoff": 5.0, "hidden": [32, 32]}
    config = parse_config(
        {
            "data": {"train": str(data), "test": str(test), "validation_fraction": 0.15},
            "model": {"name": "sum", "terms": [bpnn, *MODELS[name]]},
            "training": {
                "epochs": args.epochs,
                "batch_size": 4,
                "learning_rate": 5e-3,
                "dtype": "float64",
                "progress": False,
                "seed": 0,
            },
            "output": str(output / name),
        }
    )
    start = time.perf_counter()
    result = run_training(config)
    return {
        "train_s": time.perf_counter() - start,
        "force_rmse": result.test_metrics["forces"]["rmse"],
        "energy_rmse_per_atom": result.test_metrics["energy_per_atom"]["rmse"],
        "path": str(result.model_path),
    }


def inference_times(paths: dict[str, str], atoms, repeats: int = 5) -> dict[str, float]:
    """Median CPU time (s) of energy + forces + stress of ``atoms`` per model; the models
    take turns, so a change in the machine's load affects them alike."""
    models = {name: load_model(path, dtype=torch.float64) for name, path in paths.items()}
    graphs = {name: atoms_to_graph(atoms, model.cutoff) for name, model in models.items()}
    times = {name: [] for name in models}
    for name, model in models.items():
        predict(model, graphs[name], stress=True)  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            start = time.process_time()
            predict(model, graphs[name], stress=True)
            times[name].append(time.process_time() - start)
    return {name: statistics.median(t) for name, t in times.items()}


SIZES = {64: 1, 512: 2, 4096: 4}  # atoms: repeats of a 64-atom test cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--test", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--qeq", action="store_true", help="also train bpnn + qeq")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write(tmp / "train.xyz", make_data(args.train, seed=1))
        test_frames = make_data(args.test, seed=2)
        write(tmp / "test.xyz", test_frames)
        label_rms = float(
            np.sqrt(np.mean(np.concatenate([a.get_forces() for a in test_frames]) ** 2))
        )
        names = ["local", "coulomb"] + (["qeq"] if args.qeq else [])
        results = {
            name: train_one(name, tmp / "train.xyz", tmp / "test.xyz", tmp, args) for name in names
        }
        for n_atoms, repeat in SIZES.items():
            paths = {
                name: results[name]["path"]
                for name in names
                if not (name == "qeq" and n_atoms > 512)
            }
            repeats = 5 if n_atoms < 4096 else 3
            timed = inference_times(paths, test_frames[0].repeat(repeat), repeats)
            for name, seconds in timed.items():
                results[name][f"time_{n_atoms}_s"] = seconds
        for name in names:
            del results[name]["path"]

    print(f"test force RMS of the labels: {label_rms:.3f} eV/Å")
    header = f"{'model':8s} {'F RMSE eV/Å':>12s} {'E RMSE meV/at':>14s} {'train s':>8s}"
    for n_atoms in SIZES:
        header += f" {f't{n_atoms} ms':>9s} {f'cost x{n_atoms}':>10s}"
    print(header)
    local = results["local"]
    for name, r in results.items():
        line = (
            f"{name:8s} {r['force_rmse']:12.4f} {1e3 * r['energy_rmse_per_atom']:14.2f} "
            f"{r['train_s']:8.1f}"
        )
        for n_atoms in SIZES:
            key = f"time_{n_atoms}_s"
            if key in r:
                line += f" {1e3 * r[key]:9.1f} {r[key] / local[key]:10.2f}"
            else:
                line += f" {'-':>9s} {'-':>10s}"
        print(line)
    if args.json:
        args.json.write_text(
            json.dumps({"label_force_rms": label_rms, "models": results}, indent=2)
        )


if __name__ == "__main__":
    main()
