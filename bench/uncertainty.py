"""Uncertainty you can trust, measured on aspirin (GFN2-xTB) or any data laid out the same
way: calibration, ranking, out-of-domain detection, and the cost of it all.

Data: ``--data`` (default ``../shared/data/aspirin_gfn2`` beside the repository): one
``*train*.xyz`` file and ``*test*<T>K.xyz`` files (``bench/data_folder.py``; elements and
temperatures come from the files). The training frames are split (seed 0) into all but 50
training and 50 validation frames; the validation frames calibrate.
Models (BPNN defaults: cutoff 5 Å, 144 ACSF features, hidden [64, 64], float64):

* ``committee``: ``--members`` BPNNs, each on its own bootstrap resample of the training
  frames with its own seed, trained in parallel processes (``--jobs``) and assembled with
  :func:`mlpot.uncertainty.ensemble.load_committee`; domain statistics fitted after;
* ``shallow``: ``bpnn_shallow`` with ``--heads`` heads, trained with the ensemble NLL term.

Per test temperature (300, 600, 1200 K for aspirin; the first ``--test-frames`` frames of
each file): force RMSE; ECE, miscalibration area, NLL (force components) under the
calibrated predictive (std scale and Student-t degrees of freedom fitted on the validation
frames) and Spearman(forces_std, |ΔF|) per atom; fraction in domain. Then the AUROC with
which each per-structure score separates the hottest test frames from the coldest (1200 K
from 300 K): the largest per-atom T² and d_min (domain statistics of the committee's
features), the energy std and the largest per-atom force std. Last, the inference cost on
the first cold test frame (``--threads`` threads, median of ``--repeats`` calls, energy +
forces), as a ratio to one BPNN.

Targets: ECE <= 0.05 at the coldest temperature; Spearman >= 0.6 at the hottest; AUROC >=
0.9; shallow-ensemble cost <= 1.3x a single model. The reported run (``--jobs 5``: four
members and the shallow ensemble trained at once, 330 s each, ~115 epochs) takes about 7
minutes on 5 free cores.

Usage::

    python bench/uncertainty.py                       # train (if needed), then evaluate
    python bench/uncertainty.py --jobs 5 --epochs 400 --max-time 330   # the reported run
    python bench/uncertainty.py --stage train --jobs 5
    python bench/uncertainty.py --stage evaluate --test-frames 500
    python bench/uncertainty.py --epochs 2 --test-frames 20 --work /tmp/tiny   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from data_folder import temperature_data  # noqa: E402  (beside this script)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aspirin_gfn2"  # --data
TARGETS = {"ece_cold": 0.05, "spearman_hot": 0.6, "auroc": 0.9, "shallow_cost": 1.3}


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def split_data(data: Path, work: Path, train_frames: int | None) -> dict[str, str]:
    """Write train/validation files (all but 50 / 50 of the training frames, seeded) into
    ``work``."""
    import ase.io
    import numpy as np

    frames = ase.io.read(temperature_data(data).train, index=":")
    order = np.random.default_rng(0).permutation(len(frames))
    validation = [frames[k] for k in order[:50]]
    train = [frames[k] for k in order[50:]][:train_frames]
    paths = {"train": str(work / "train.xyz"), "validation": str(work / "validation.xyz")}
    ase.io.write(paths["train"], train)
    ase.io.write(paths["validation"], validation)
    return paths


def _train(job: dict) -> str:
    """Train one model (in a worker process) and return its checkpoint path."""
    import torch

    from mlpot.training.config import parse_config
    from mlpot.training.run import run_training

    torch.set_num_threads(job.pop("threads"))
    started = time.perf_counter()
    result = run_training(parse_config(job))
    print(
        f"  trained {Path(job['output']).name}: {result.train.epochs_run} epochs in "
        f"{time.perf_counter() - started:.0f} s, validation force RMSE "
        f"{result.validation_metrics['forces']['rmse']:.3f} eV/Å",
        flush=True,
    )
    return str(result.model_path)


def _bootstrap(path: str, seed: int, target: Path) -> str:
    import ase.io
    import numpy as np

    frames = ase.io.read(path, index=":")
    picks = np.random.default_rng(seed).integers(0, len(frames), len(frames))
    ase.io.write(target, [frames[k] for k in picks])
    return str(target)


def train_models(args, work: Path) -> None:
    """Committee members and the shallow ensemble, ``args.jobs`` at a time (no committee
    with fewer than two members)."""
    import torch

    from mlpot.data.dataset import LabelKeys
    from mlpot.models.checkpoint import save_model
    from mlpot.training.samples import read_samples, to_graphs
    from mlpot.uncertainty.domain import fit_domain
    from mlpot.uncertainty.ensemble import load_committee

    data = split_data(Path(args.data), work, args.train_frames)
    training = {
        "epochs": args.epochs,
        "batch_size": 8,
        "max_time_s": args.max_time,
        "progress": False,
    }
    jobs = []
    for k in range(args.members):
        member_data = _bootstrap(data["train"], 100 + k, work / f"bootstrap_{k}.xyz")
        jobs.append(
            {
                "data": {"train": member_data, "validation": data["validation"]},
                "model": {"name": "bpnn"},
                "training": {**training, "seed": k},
                "output": str(work / f"member_{k}"),
            }
        )
    jobs.append(
        {
            "data": {"train": data["train"], "validation": data["validation"]},
            "model": {"name": "bpnn_shallow", "heads": args.heads},
            "loss": {"ensemble_nll": args.nll_weight},
            "training": training,
            "output": str(work / "shallow"),
        }
    )
    for job in jobs:
        job["threads"] = args.threads
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        paths = list(pool.map(_train, jobs))
    os.replace(paths[-1], work / "shallow.pt")
    if args.members >= 2:
        committee = load_committee(paths[:-1])
        samples = read_samples([data["train"]], LabelKeys())
        domain = fit_domain(
            committee, to_graphs(samples, committee, torch.float64, "domain", progress=False)
        )
        save_model(work / "committee.pt", committee, domain=domain.to_dict())


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


def auroc(negatives, positives) -> float:
    """Probability that a positive (1200 K) scores above a negative (300 K): Mann–Whitney."""
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([negatives, positives]))
    n_neg, n_pos = len(negatives), len(positives)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos))


def test_graphs(data: Path, model, temperature: int, n_frames: int):
    import torch

    from mlpot.data.dataset import read_dataset, sample_to_graph

    samples = read_dataset(temperature_data(data).tests[temperature])[:n_frames]
    return [
        sample_to_graph(s, model.cutoff, dtype=torch.float64, elements=model.elements)
        for s in samples
    ]


def structure_scores(res) -> dict:
    """Per-structure scores for the AUROC."""
    import numpy as np

    from mlpot.uncertainty.assess import per_structure_max

    return {
        "max T2": per_structure_max(res.t2, res.batch),
        "max d_min": per_structure_max(res.d_min, res.batch),
        "energy_std": res.energy_std,
        "max forces_std": per_structure_max(res.forces_std, res.batch),
        "force RMSE": np.sqrt(
            np.bincount(res.batch, (res.force_error**2).sum(1)) / np.bincount(res.batch) / 3
        ),
    }


def evaluate_models(args, work: Path) -> dict:
    """Calibrate on the validation frames, then score every test temperature."""
    import numpy as np

    from mlpot.uncertainty.assess import (
        calibrate_files,
        collect_residuals,
        load_with_statistics,
        uncertainty_report,
    )

    report = {}
    for name in [n for n in ("committee", "shallow") if (work / f"{n}.pt").exists()]:
        run = calibrate_files(work / f"{name}.pt", [str(work / "validation.xyz")])
        loaded = load_with_statistics(work / f"{name}.pt")
        print(f"  {name}: calibration {run.calibration.describe()}", flush=True)
        rows, scores = {}, {}
        temperatures = temperature_data(args.data).temperatures
        for temperature in temperatures:
            graphs = test_graphs(Path(args.data), loaded.model, temperature, args.test_frames)
            res = collect_residuals(loaded.model, graphs, domain=loaded.domain)
            rows[temperature] = uncertainty_report(res, loaded.calibration)
            rows[temperature]["force_rmse"] = float(np.sqrt(np.mean(res.force_error**2)))
            scores[temperature] = structure_scores(res)
        cold, hot = scores[temperatures[0]], scores[temperatures[-1]]
        separation = {key: auroc(cold[key], hot[key]) for key in cold}
        report[name] = {"scales": run.calibration.to_dict(), "rows": rows, "auroc": separation}
    return report


# --------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------


def median_times(calls: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each call; the calls take turns, so a change of machine load
    between them biases no ratio."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 3):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            if round_ >= 3:  # warm-up rounds
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def inference_cost(args, work: Path) -> dict:
    """Median time per call on the first cold test frame; ratios to a single BPNN."""
    import ase.io
    import torch

    from mlpot.data.graph import atoms_to_graph, graph_to
    from mlpot.models.offsets import AtomicOffsets
    from mlpot.models.registry import build_model
    from mlpot.models.sum import SumModel
    from mlpot.physics.derivatives import predict
    from mlpot.uncertainty.assess import load_with_statistics
    from mlpot.uncertainty.ensemble import predict_full, predict_with_uncertainty

    torch.set_num_threads(args.threads)
    device = args.device
    data = temperature_data(args.data)
    atoms = ase.io.read(data.tests[data.temperatures[0]], index=0)
    shallow = load_with_statistics(work / "shallow.pt")
    shallow.model.to(device)
    # the cost does not depend on the weights: an untrained single model of the same
    # architecture as a trained one (reference offsets + default BPNN)
    learned = build_model({"name": "bpnn", "elements": data.elements})
    single = SumModel([AtomicOffsets(data.elements, [0.0] * len(data.elements)), learned])
    single = single.double().to(device).eval()
    graph = graph_to(atoms_to_graph(atoms, single.cutoff), device)

    def sync(fn):
        def call():
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        return call

    calls = {
        "single BPNN (energy + forces)": lambda: predict(single, graph, forces=True),
        "shallow: energy_std only": lambda: predict_with_uncertainty(
            shallow.model, graph, member_forces=False
        ),
        "shallow: energy_std + forces_std": lambda: predict_with_uncertainty(shallow.model, graph),
        "shallow: + T2, d_min, in_domain": lambda: predict_full(
            shallow.model, graph, domain=shallow.domain
        ),
    }
    if (work / "committee.pt").exists():
        committee = load_with_statistics(work / "committee.pt")
        committee.model.to(device)
        calls["committee: energy_std + forces_std"] = lambda: predict_with_uncertainty(
            committee.model, graph
        )
        calls["committee: + T2, d_min, in_domain"] = lambda: predict_full(
            committee.model, graph, domain=committee.domain
        )
    times = median_times({name: sync(fn) for name, fn in calls.items()}, args.repeats)
    base = times["single BPNN (energy + forces)"]
    return {name: {"ms": 1e3 * t, "ratio": t / base} for name, t in times.items()}


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def print_report(report: dict, cost: dict, args) -> dict:
    """Print the tables; return the target verdicts."""
    from mlpot.uncertainty.calibration import Calibration

    verdict = {}
    for name, model in report.items():
        print(f"\n{name}: calibration {Calibration.from_dict(model['scales']).describe()}")
        print(
            f"{'T':>6} {'F RMSE':>8} {'ECE':>7} {'area':>7} {'NLL':>8} {'Spearman':>9} "
            f"{'E ECE':>7} {'E Spear':>8} {'in domain':>10}"
        )
        for t, row in model["rows"].items():
            f, e, d = row["forces"], row["energy"], row["domain"]
            print(
                f"{t:>5}K {row['force_rmse']:>8.4f} {f['ece']:>7.3f} "
                f"{f['miscalibration_area']:>7.3f} {f['nll']:>8.3f} {f['spearman']:>9.3f} "
                f"{e['ece']:>7.3f} {e['spearman']:>8.3f} {d['fraction_in_domain']:>10.3f}"
            )
        rows = model["rows"]
        cold, hot = min(rows, key=int), max(rows, key=int)
        print(
            f"AUROC {hot} K vs {cold} K: "
            + ", ".join(f"{k} {v:.3f}" for k, v in model["auroc"].items())
        )
        verdict[f"{name} ECE({cold}K) <= 0.05"] = rows[cold]["forces"]["ece"] <= TARGETS["ece_cold"]
        verdict[f"{name} Spearman({hot}K) >= 0.6"] = (
            rows[hot]["forces"]["spearman"] >= TARGETS["spearman_hot"]
        )
        best = max(model["auroc"]["max T2"], model["auroc"]["max d_min"])
        verdict[f"{name} AUROC(T2 or d_min) >= 0.9"] = best >= TARGETS["auroc"]
    print(f"\ninference cost, one cold test frame ({args.device}, {args.threads} thread(s))")
    for name, row in cost.items():
        print(f"  {name:<38} {row['ms']:>8.2f} ms  {row['ratio']:>6.2f}x")
    verdict["shallow energy_std + forces_std <= 1.3x"] = (
        cost["shallow: energy_std + forces_std"]["ratio"] <= TARGETS["shallow_cost"]
    )
    verdict["shallow energy_std only <= 1.3x"] = (
        cost["shallow: energy_std only"]["ratio"] <= TARGETS["shallow_cost"]
    )
    print("\ntargets:")
    for name, ok in verdict.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["all", "train", "evaluate", "cost"], default="all")
    parser.add_argument("--work", default="runs/uncertainty-bench")
    parser.add_argument("--data", default=str(DATA), help="data folder (module doc)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--max-time", type=float, default=None, help="training budget per model, s")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--nll-weight", type=float, default=1.0)
    parser.add_argument("--train-frames", type=int, default=None)
    parser.add_argument("--test-frames", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu", help="device of the cost measurement")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.stage in ("all", "train") and not (work / "shallow.pt").exists():
        print(f"training {args.members} committee members and a {args.heads}-head shallow ensemble")
        train_models(args, work)
        print(f"  training took {time.perf_counter() - started:.0f} s", flush=True)
    if args.stage == "train":
        return
    if args.stage == "cost":
        for name, row in inference_cost(args, work).items():
            print(f"  {name:<38} {row['ms']:>8.2f} ms  {row['ratio']:>6.2f}x")
        return
    print("calibrating and evaluating", flush=True)
    report = evaluate_models(args, work)
    cost = inference_cost(args, work)
    verdict = {k: bool(v) for k, v in print_report(report, cost, args).items()}
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"report": report, "cost": cost, "verdict": verdict}))


if __name__ == "__main__":
    main()
