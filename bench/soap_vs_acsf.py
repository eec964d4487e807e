"""SOAP (featomic) vs ACSF descriptors for the Behler–Parrinello network, on aspirin or any
data laid out the same way.

Data: ``../shared/data/aspirin_gfn2`` beside the repository (``--data``: one
``*train*.xyz`` and ``*test*<T>K.xyz`` files, ``bench/data_folder.py``). Elements and
temperatures come from the data. Both models are ``bpnn`` with the same networks (hidden
[64, 64], silu) and cutoff (5 Å); only the descriptor differs: ACSF (defaults: 12 radial
G2 per element, G5 with 3 η, ζ ∈ {1, 2, 4}, λ = ±1) or the SOAP power spectrum (defaults,
or ``--max-radial``/``--max-angular``).

1. Cost: energy + forces of one structure (first frame of the coldest test file)
   through :func:`mlpot.physics.derivatives.predict`, float64, ``--threads`` torch threads
   (featomic's own threads: ``RAYON_NUM_THREADS``, set to the same number unless already
   set), median of ``--repeats`` calls after warm-up; also the descriptors alone, and the
   cost per structure in a batch of ``--batch`` frames (featomic's fixed cost per call is
   a few ms).
2. With ``--train``: each model trained for ``--budget`` seconds (all but 50 training
   frames, 50 for validation, split with seed 0; batch 8; energy and force loss as the
   defaults), then the test force RMSE at 300, 600 and 1200 K (first ``--test-frames``
   frames of each test file).

Usage::

    python bench/soap_vs_acsf.py                        # cost only (~20 s)
    python bench/soap_vs_acsf.py --train --budget 120   # + training (~5 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from data_folder import temperature_data  # noqa: E402  (beside this script)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aspirin_gfn2"


def model_specs(elements: list[int], args) -> dict[str, dict]:
    """The two ``bpnn`` specs, by descriptor name."""
    base = {"name": "bpnn", "elements": elements, "cutoff": 5.0, "hidden": [64, 64]}
    soap = {"max_radial": args.max_radial, "max_angular": args.max_angular}
    return {"acsf": base, "soap": {**base, "descriptor": "soap", "soap": soap}}


def median_ms(call, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def cost(args, data: Path) -> None:
    import ase.io
    import torch

    from mlpot.data.graph import atoms_to_graph, collate
    from mlpot.models.registry import build_model
    from mlpot.physics.derivatives import predict

    found = temperature_data(data)
    frames = ase.io.read(found.tests[found.temperatures[0]], index=f":{args.batch}")
    atoms = frames[0]
    elements = found.elements
    print(
        f"cost: one structure ({atoms.symbols}, first cold test frame), energy + forces, float64, "
        f"{args.threads} thread(s), median of {args.repeats}"
    )
    print(
        f"{'descriptor':<10} {'features':>8} {'E+F ms':>8} {'desc. ms':>9} {'ratio':>6} "
        f"{f'batch of {len(frames)}: ms/structure':>28}"
    )
    reference = None
    for name, spec in model_specs(elements, args).items():
        torch.manual_seed(0)
        model = build_model(spec).double().eval()
        graph = atoms_to_graph(atoms, model.cutoff)
        batch = collate([atoms_to_graph(a, model.cutoff) for a in frames])
        full = median_ms(lambda: predict(model, graph, forces=True), args.repeats)  # noqa: B023
        with torch.no_grad():
            descriptor = median_ms(lambda: model.descriptor(graph), args.repeats)  # noqa: B023
        batched = median_ms(
            lambda: predict(model, batch, forces=True),  # noqa: B023
            max(3, args.repeats // 5),
        )
        reference = reference or full
        print(
            f"{name:<10} {model.n_features:>8} {full:>8.2f} {descriptor:>9.2f} "
            f"{full / reference:>6.2f} {batched / len(frames):>28.2f}"
        )


def split(data: Path, work: Path) -> dict[str, str]:
    """All but 50 training and 50 validation frames of the training file (seed 0)."""
    import ase.io
    import numpy as np

    frames = ase.io.read(temperature_data(data).train, index=":")
    order = np.random.default_rng(0).permutation(len(frames))
    paths = {"train": str(work / "train.xyz"), "validation": str(work / "validation.xyz")}
    ase.io.write(paths["validation"], [frames[k] for k in order[:50]])
    ase.io.write(paths["train"], [frames[k] for k in order[50:]])
    return paths


def test_files(data: Path, work: Path, frames: int) -> dict[int, str]:
    import ase.io

    paths = {}
    for temperature, source in temperature_data(data).tests.items():
        path = work / f"test_{temperature}K.xyz"
        ase.io.write(path, ase.io.read(source, f":{frames}"))
        paths[temperature] = str(path)
    return paths


def train(args, data: Path) -> None:
    import ase.io

    from mlpot.training.config import parse_config
    from mlpot.training.evaluation import evaluate_files
    from mlpot.training.run import run_training

    work = Path(args.work or tempfile.mkdtemp(prefix="soap-vs-acsf-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = split(data, work)
    tests = test_files(data, work, args.test_frames)
    elements = sorted(set(ase.io.read(paths["train"], 0).numbers.tolist()))
    print(
        f"\ntraining: {args.budget:.0f} s each, batch 8, float64; test force RMSE (eV/Å) on "
        f"{args.test_frames} frames per temperature; work {work}"
    )
    header = " ".join(f"{t:>4} K" for t in tests)
    print(f"{'descriptor':<10} {'epochs':>6} {'valid.':>7} {header}")
    for name, spec in model_specs(elements, args).items():
        config = parse_config(
            {
                "data": {"train": paths["train"], "validation": paths["validation"]},
                "model": spec,
                "training": {
                    "epochs": 100000,
                    "batch_size": 8,
                    "max_time_s": args.budget,
                    "early_stopping_patience": 100000,
                    "progress": False,
                    "seed": 0,
                },
                "output": str(work / name),
            }
        )
        result = run_training(config)
        errors = evaluate_files(result.model_path, list(tests.values()))
        rmse = " ".join(f"{errors[path]['forces']['rmse']:>6.3f}" for path in tests.values())
        validation = result.validation_metrics["forces"]["rmse"]
        print(f"{name:<10} {result.train.epochs_run:>6} {validation:>7.3f} {rmse}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="*train*.xyz + *test*<T>K.xyz folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16, help="frames of the batched cost")
    parser.add_argument("--max-radial", type=int, default=3)
    parser.add_argument("--max-angular", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="also the training comparison")
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds each")
    parser.add_argument("--test-frames", type=int, default=200)
    parser.add_argument("--work", default=None, help="directory for splits and checkpoints")
    args = parser.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))  # before featomic loads
    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    cost(args, data)
    if args.train:
        train(args, data)


if __name__ == "__main__":
    main()
