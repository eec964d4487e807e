"""``mlpot train``, ``mlpot eval`` and ``mlpot fisher``: thin wrappers over
:mod:`mlpot.training`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import (
    EXIT_FAILED,
    Device,
    Json,
    Threads,
    TrustCode,
    exit_on_bad_input,
    use_resources,
)

Resume = Annotated[bool, typer.Option("--resume", help="Continue a stopped run.")]


def train(
    config: Annotated[
        Path, typer.Argument(metavar="CONFIG", help="YAML config: data, model, loss, training.")
    ],
    resume: Resume = False,
    threads: Threads = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device", metavar="DEVICE", help="Torch device to train on (default: the config's)."
        ),
    ] = None,
    trust_code: TrustCode = False,
) -> None:
    """Train a model as a YAML config says.

    Writes model.pt, metrics.json and history.jsonl to the config's output directory, and
    prints the validation (and test) errors of the best model. Started by torchrun
    (torchrun --nproc-per-node N --no-python mlpot train CONFIG), it trains data-parallel.
    """
    from mlpot.training import distributed
    from mlpot.training.config import load_config
    from mlpot.training.run import run_training

    with exit_on_bad_input():
        use_resources(threads, device)
        cfg = load_config(config)
        if device is not None:
            cfg.training.device = device
        ranks = distributed.setup(cfg.training.device)
        result = run_training(cfg, resume=resume, trust_code=trust_code, log=typer.echo)
    if not ranks.main:
        return
    typer.echo(
        f"stopped after {result.train.epochs_run} epochs ({result.train.stop_reason}); "
        f"model: {result.model_path}"
    )
    typer.echo(format_metrics({"validation": result.validation_metrics}))
    if result.test_metrics:
        typer.echo(format_metrics({"test": result.test_metrics}))


def evaluate(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Checkpoint (model.pt).")],
    data: Annotated[
        list[Path], typer.Argument(metavar="DATA", help="extxyz files or ASE databases.")
    ],
    as_json: Json = False,
    energy_key: Annotated[str | None, typer.Option(metavar="KEY", help="Energy label key.")] = None,
    forces_key: Annotated[str | None, typer.Option(metavar="KEY", help="Forces label key.")] = None,
    stress_key: Annotated[str | None, typer.Option(metavar="KEY", help="Stress label key.")] = None,
    batch_size: Annotated[
        int, typer.Option(metavar="N", min=1, help="Structures per evaluation batch.")
    ] = 16,
    uncertainty: Annotated[
        bool, typer.Option("--uncertainty", help="Add calibration and domain scores.")
    ] = False,
    threads: Threads = None,
    device: Device = "cpu",
    trust_code: TrustCode = False,
) -> None:
    """Score a model's energy, force and stress errors on data sets.

    Prints the MAE and RMSE of the energy per atom, the forces and the stress of MODEL on
    each DATA set. Exit status 1 when the model's predictions on a data set are not finite
    (NaN or inf; the JSON then has null errors and a "non_finite" list), 2 on bad input.
    """
    from mlpot.training.evaluation import evaluate_files

    with exit_on_bad_input():
        use_resources(threads, device)
        report = evaluate_files(
            model,
            [str(d) for d in data],
            energy_key=energy_key,
            forces_key=forces_key,
            stress_key=stress_key,
            batch_size=batch_size,
            uncertainty=uncertainty,
            trust_code=trust_code,
            device=device,
        )
    typer.echo(json.dumps(report, indent=2) if as_json else format_metrics(report))
    if uncertainty and not as_json:
        from mlpot.cli.uncertainty import format_scores

        typer.echo(format_scores({name: r.get("uncertainty", {}) for name, r in report.items()}))
    broken = {name: r["non_finite"] for name, r in report.items() if r.get("non_finite")}
    for name, quantities in broken.items():
        typer.echo(
            f"error: {name}: the model's predictions are not finite (NaN or inf) for "
            f"{', '.join(quantities)}",
            err=True,
        )
    if broken:
        raise typer.Exit(code=EXIT_FAILED)


def fisher(
    model: Annotated[
        Path, typer.Argument(metavar="MODEL", help="Checkpoint (model.pt) to store it in.")
    ],
    data: Annotated[
        list[Path], typer.Argument(metavar="DATA", help="The model's original training data.")
    ],
    structures: Annotated[
        int, typer.Option(metavar="N", min=0, help="Structures to average over (a seeded subset).")
    ] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the structure subset.")] = 0,
    threads: Threads = None,
    device: Device = "cpu",
    trust_code: TrustCode = False,
) -> None:
    """Store a model's Fisher information, for fine-tuning with EWC.

    Computes the diagonal Fisher information of MODEL on DATA, its original training data,
    and stores it in the checkpoint.
    """
    from mlpot.training.finetune import FisherOptions, store_fisher_from_files

    with exit_on_bad_input():
        use_resources(threads, device)
        result = store_fisher_from_files(
            model,
            [str(d) for d in data],
            options=FisherOptions(structures=structures, seed=seed),
            trust_code=trust_code,
            device=device,
        )
    typer.echo(f"Fisher information of {result['n_structures']} structures stored in {model}")


def format_metrics(report: dict[str, dict]) -> str:
    """Table of MAE and RMSE per data set and quantity, in meV units."""
    units = {
        "energy_per_atom": ("meV/atom", 1e3),
        "forces": ("meV/Å", 1e3),
        "stress": ("meV/Å³", 1e3),
        "dipole": ("me·Å", 1e3),
        "polarizability": ("me·Å²/V", 1e3),
    }
    lines = [f"{'dataset':<32} {'quantity':<16} {'MAE':>10} {'RMSE':>10}  unit"]
    for name, metrics in report.items():
        for quantity, values in metrics.items():
            if quantity not in units:
                continue
            unit, scale = units[quantity]
            mae, rmse = (
                f"{values[k] * scale:.3f}"
                if values[k] is not None and math.isfinite(values[k])
                else "non-finite"
                for k in ("mae", "rmse")
            )
            lines.append(f"{name[-32:]:<32} {quantity:<16} {mae:>10} {rmse:>10}  {unit}")
    return "\n".join(lines)
