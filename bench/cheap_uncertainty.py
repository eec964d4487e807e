"""Cheap uncertainty on the flagship ``mpnn``: what ``forces_std`` costs, and (optionally)
how good it is, for an mpnn committee, the shallow mpnn and the LLPR of one mpnn.

Cost (always; untrained models, since the cost does not depend on the weights): median
time per call, on ``--threads`` threads, of

* one model's energy + forces (``predict``) — the unit;
* the committee of ``--members`` mpnns: ``energy_std`` + ``forces_std``;
* the shallow mpnn with ``--heads`` heads: ``energy_std`` only, ``energy_std`` +
  ``forces_std`` (explicit reverse pass over the heads), and the same by batched autograd;
* the LLPR of one mpnn with ``--llpr-members`` members: the same three;

on the first frame of the data's training file (a molecule, its elements from the data)
and on a rattled fcc Cu cell of ``4 n³`` atoms (``--cells n``, default 5: 500 atoms). The
calls take turns, so a change of machine load biases no ratio.

Quality (``--train``): trains the three on the training file (a ``--validation-frames``
split of it validates and calibrates, seeded), fits the LLPR on the training frames, fits
each one's Student-t calibration on the validation frames, then for every test file (all
``*test*.xyz`` in ``--data``, ordered by the number in their names, e.g. temperature)
reports force RMSE, force ECE and Spearman(forces_std, |ΔF|) per atom, and the AUROC with
which the energy std and the largest per-atom force std tell the last test file's frames
from the first's.

Data: ``--data`` (default ``../shared/data/aspirin_gfn2`` beside the repository): a folder
with one ``*train*.xyz`` and any number of ``*test*.xyz`` extxyz files.

Usage::

    python bench/cheap_uncertainty.py                         # cost only (about a minute)
    python bench/cheap_uncertainty.py --heads 4 --cells 4
    python bench/cheap_uncertainty.py --train --epochs 200 --max-time 600 --work runs/cheap
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aspirin_gfn2"  # --data


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def data_files(data: Path) -> tuple[Path, list[Path]]:
    """The training file and the test files, ordered by the number in their names."""
    train = sorted(data.glob("*train*.xyz"))
    if len(train) != 1:
        raise SystemExit(f"{data}: expected one *train*.xyz file, found {len(train)}")

    def number(path: Path) -> float:
        found = re.findall(r"\d+(?:\.\d+)?", path.stem)
        return float(found[-1]) if found else 0.0

    return train[0], sorted(data.glob("*test*.xyz"), key=number)


# --------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------


def median_times(calls: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each call, the calls taking turns (two warm-up rounds)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 2):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def untrained(spec: dict, elements: list[int]):
    """Reference offsets + the model of ``spec``: the shape of a trained run's model."""
    import torch

    from mlpot.models.offsets import AtomicOffsets
    from mlpot.models.registry import build_model
    from mlpot.models.sum import SumModel

    learned = build_model({**spec, "elements": elements})
    offsets = AtomicOffsets(elements, [0.0] * len(elements))
    return SumModel([offsets, learned]).to(torch.float64).eval()


def cost_models(args, elements: list[int]) -> dict:
    """Single mpnn, committee, shallow mpnn and LLPR (identity posterior), untrained."""
    import torch

    from mlpot.models.ensembles import Committee
    from mlpot.models.llpr import LLPR

    torch.manual_seed(0)
    body = {"name": "mpnn", "cutoff": args.cutoff, "channels": args.channels}
    single = untrained(body, elements)
    committee = Committee([untrained(body, elements) for _ in range(args.members)]).eval()
    shallow = untrained({**body, "name": "mpnn_shallow", "heads": args.heads}, elements)
    llpr = LLPR(untrained(body, elements), members=args.llpr_members).eval()
    n_features = llpr.covariance.shape[0]
    llpr.set_posterior(torch.eye(n_features, dtype=torch.float64), 1.0)
    return {"single": single, "committee": committee, "shallow": shallow, "llpr": llpr}


def inference_cost(args, atoms) -> dict[str, dict[str, float]]:
    """Median ms per call and ratio to one model's energy + forces on ``atoms``."""
    import torch

    from mlpot.data.graph import atoms_to_graph
    from mlpot.physics.derivatives import predict
    from mlpot.physics.ensemble import predict_members
    from mlpot.uncertainty.ensemble import predict_with_uncertainty

    models = cost_models(args, sorted(set(atoms.numbers.tolist())))
    graph = atoms_to_graph(atoms, models["single"].cutoff, dtype=torch.float64)
    unit = "one mpnn: energy + forces"
    calls = {
        unit: lambda: predict(models["single"], graph, forces=True),
        f"committee of {args.members}: energy_std + forces_std": lambda: predict_with_uncertainty(
            models["committee"], graph
        ),
    }
    for name, label in (("shallow", f"shallow, {args.heads} heads"), ("llpr", "LLPR")):
        model = models[name]
        if name == "llpr":
            label = f"LLPR, {args.llpr_members} members"
        calls[f"{label}: energy_std"] = lambda m=model: predict_with_uncertainty(
            m, graph, member_forces=False
        )
        calls[f"{label}: + forces_std"] = lambda m=model: predict_with_uncertainty(m, graph)
        calls[f"{label}: + forces_std by autograd"] = lambda m=model: predict_members(
            m, graph, explicit_gradients=False
        )
    times = median_times(calls, args.repeats)
    return {
        name: {"ms": 1e3 * seconds, "ratio": seconds / times[unit]}
        for name, seconds in times.items()
    }


def cost_systems(args, train_file: Path) -> dict:
    import ase.io
    from ase.build import bulk

    molecule = ase.io.read(args.structure or train_file, index=0)
    cell = bulk("Cu", "fcc", a=3.61, cubic=True) * (args.cells, args.cells, args.cells)
    cell.rattle(0.05, seed=0)
    name = molecule.get_chemical_formula()
    return {f"{name} ({len(molecule)} atoms)": molecule, f"Cu fcc ({len(cell)} atoms)": cell}


# --------------------------------------------------------------------------------------
# quality (--train)
# --------------------------------------------------------------------------------------


def split(train_file: Path, work: Path, n_validation: int, train_frames: int | None) -> dict:
    import ase.io
    import numpy as np

    frames = ase.io.read(train_file, index=":")
    order = np.random.default_rng(0).permutation(len(frames))
    paths = {"train": str(work / "train.xyz"), "validation": str(work / "validation.xyz")}
    ase.io.write(paths["validation"], [frames[k] for k in order[:n_validation]])
    ase.io.write(paths["train"], [frames[k] for k in order[n_validation:]][:train_frames])
    return paths


def train_models(args, paths: dict, work: Path) -> dict[str, Path]:
    """Committee, shallow mpnn, single mpnn (-> LLPR), each calibrated on validation."""
    from mlpot.training.config import parse_config
    from mlpot.training.run import run_training
    from mlpot.uncertainty.assess import calibrate_files
    from mlpot.uncertainty.llpr import llpr_checkpoint

    body = {"name": "mpnn", "cutoff": args.cutoff, "channels": args.channels}
    training = {"epochs": args.epochs, "max_time_s": args.max_time, "progress": False}
    runs = {
        "committee": ({**body}, {"size": args.members, "bootstrap": True}),
        "shallow": ({**body, "name": "mpnn_shallow", "heads": args.heads}, {}),
        "single": ({**body}, {}),
    }
    models = {}
    for name, (model, ensemble) in runs.items():
        if not (work / name / "model.pt").exists():
            started = time.perf_counter()
            config = parse_config(
                {
                    "data": {"train": paths["train"], "validation": paths["validation"]},
                    "model": model,
                    "training": training,
                    "ensemble": ensemble,
                    "output": str(work / name),
                }
            )
            run_training(config, log=lambda message: None)
            print(f"  trained {name} in {time.perf_counter() - started:.0f} s", flush=True)
        models[name] = work / name / "model.pt"
    for name in ("committee", "shallow"):
        calibrate_files(models[name], [paths["validation"]], output=work / f"{name}.pt")
        models[name] = work / f"{name}.pt"
    run = llpr_checkpoint(
        models.pop("single"),
        [paths["train"]],
        work / "llpr.pt",
        validation=[paths["validation"]],
        members=args.llpr_members,
    )
    models["llpr"] = run.checkpoint
    return models


def auroc(negatives, positives) -> float:
    """Probability that a positive scores above a negative (Mann–Whitney)."""
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([negatives, positives]))
    n_neg, n_pos = len(negatives), len(positives)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos))


def quality(args, models: dict[str, Path], test_files: list[Path]) -> dict:
    """Per model and test file: force RMSE, ECE, Spearman; AUROC last vs first file."""
    import numpy as np

    from mlpot.data.dataset import read_dataset
    from mlpot.uncertainty.assess import (
        collect_residuals,
        labelled_graphs,
        load_with_statistics,
        per_structure_max,
        uncertainty_report,
    )

    report = {}
    for name, path in models.items():
        loaded = load_with_statistics(path)
        rows, scores = {}, {}
        for test in test_files:
            samples = read_dataset(test)[: args.test_frames]
            res = collect_residuals(loaded.model, labelled_graphs(samples, loaded.model))
            row = uncertainty_report(res, loaded.calibration)
            rows[test.stem] = {
                "force_rmse": float(np.sqrt(np.mean(res.force_error**2))),
                "forces_ece": row["forces"]["ece"],
                "forces_spearman": row["forces"]["spearman"],
                "energy_ece": row["energy"]["ece"],
            }
            scores[test.stem] = {
                "energy_std": res.energy_std,
                "max forces_std": per_structure_max(res.forces_std, res.batch),
            }
        first, last = test_files[0].stem, test_files[-1].stem
        separation = {k: auroc(scores[first][k], scores[last][k]) for k in scores[first]}
        report[name] = {
            "calibration": loaded.calibration.describe(),
            "rows": rows,
            "auroc": separation,
        }
    return report


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA), help="folder of *train*/*test*.xyz")
    parser.add_argument("--structure", default=None, help="molecule for the cost (file)")
    parser.add_argument("--cells", type=int, default=5, help="Cu cell: n x n x n cubic cells")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--members", type=int, default=4, help="committee members")
    parser.add_argument("--llpr-members", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train", action="store_true", help="also train and score")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--max-time", type=float, default=None, help="per model, s")
    parser.add_argument("--validation-frames", type=int, default=50)
    parser.add_argument("--train-frames", type=int, default=None)
    parser.add_argument("--test-frames", type=int, default=200)
    parser.add_argument("--work", default="runs/cheap-uncertainty")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    train_file, test_files = data_files(Path(args.data))
    figures: dict = {"cost": {}}
    for system, atoms in cost_systems(args, train_file).items():
        print(f"\ncost on {system}, {args.threads} thread(s), float64, untrained models")
        figures["cost"][system] = rows = inference_cost(args, atoms)
        for name, row in rows.items():
            print(f"  {name:<48} {row['ms']:>9.1f} ms  {row['ratio']:>6.2f}x")
    if args.train:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        paths = split(train_file, work, args.validation_frames, args.train_frames)
        models = train_models(args, paths, work)
        figures["quality"] = report = quality(args, models, test_files)
        for name, model in report.items():
            print(f"\n{name}: calibration {model['calibration']}")
            for test, row in model["rows"].items():
                print(
                    f"  {test:<24} F RMSE {row['force_rmse']:.4f}  F ECE {row['forces_ece']:.3f}"
                    f"  F Spearman {row['forces_spearman']:.3f}  E ECE {row['energy_ece']:.3f}"
                )
            print(
                "  AUROC last vs first test file: "
                + ", ".join(f"{k} {v:.3f}" for k, v in model["auroc"].items())
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
