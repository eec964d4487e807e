"""The ``mlpot`` command line: thin wrappers over library functions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import TrustCode
from mlpot.errors import MlpotInputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="mlpot: machine-learned interatomic potentials you can trust.",
)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (data, model, loss, training).")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue a stopped run.")] = False,
    trust_code: TrustCode = False,
) -> None:
    """Train a model as CONFIG says; writes model.pt and metrics.json to its output."""
    from mlpot.training.config import load_config
    from mlpot.training.run import run_training

    try:
        cfg = load_config(config)
        result = run_training(cfg, resume=resume, trust_code=trust_code, log=typer.echo)
    except MlpotInputError as err:
        _fail(err)
    typer.echo(
        f"stopped after {result.train.epochs_run} epochs ({result.train.stop_reason}); "
        f"model: {result.model_path}"
    )
    typer.echo(_format_metrics({"validation": result.validation_metrics}))
    if result.test_metrics:
        typer.echo(_format_metrics({"test": result.test_metrics}))


@app.command("eval")
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint (model.pt).")],
    data: Annotated[list[Path], typer.Argument(help="extxyz files or ASE databases.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    energy_key: Annotated[str | None, typer.Option(help="Energy label key.")] = None,
    forces_key: Annotated[str | None, typer.Option(help="Forces label key.")] = None,
    stress_key: Annotated[str | None, typer.Option(help="Stress label key.")] = None,
    batch_size: Annotated[int, typer.Option(help="Structures per evaluation batch.")] = 16,
    uncertainty: Annotated[
        bool, typer.Option("--uncertainty", help="Add calibration and domain scores.")
    ] = False,
    trust_code: TrustCode = False,
) -> None:
    """Energy-per-atom, force (and stress) MAE/RMSE of MODEL on each DATA set. Exit status
    1 when the model's predictions on a data set are not finite (NaN or inf; the JSON then
    has null errors and a "non_finite" list), 2 on bad input."""
    from mlpot.training.evaluation import evaluate_files

    try:
        report = evaluate_files(
            model,
            [str(d) for d in data],
            energy_key=energy_key,
            forces_key=forces_key,
            stress_key=stress_key,
            batch_size=batch_size,
            uncertainty=uncertainty,
            trust_code=trust_code,
        )
    except MlpotInputError as err:
        _fail(err)
    typer.echo(json.dumps(report, indent=2) if as_json else _format_metrics(report))
    if uncertainty and not as_json:
        typer.echo(format_scores({name: r.get("uncertainty", {}) for name, r in report.items()}))
    broken = {name: r["non_finite"] for name, r in report.items() if r.get("non_finite")}
    for name, quantities in broken.items():
        typer.echo(
            f"error: {name}: the model's predictions are not finite (NaN or inf) for "
            f"{', '.join(quantities)}",
            err=True,
        )
    if broken:
        raise typer.Exit(code=1)


@app.command()
def fisher(
    model: Annotated[Path, typer.Argument(help="Checkpoint (model.pt) to store it in.")],
    data: Annotated[list[Path], typer.Argument(help="The model's original training data.")],
    structures: Annotated[int, typer.Option(help="Structures to average over (seeded).")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the structure subset.")] = 0,
    trust_code: TrustCode = False,
) -> None:
    """Store the diagonal Fisher information of MODEL on DATA (for EWC fine-tuning)."""
    from mlpot.training.finetune import FisherOptions, store_fisher_from_files

    try:
        result = store_fisher_from_files(
            model,
            [str(d) for d in data],
            options=FisherOptions(structures=structures, seed=seed),
            trust_code=trust_code,
        )
    except MlpotInputError as err:
        _fail(err)
    typer.echo(f"Fisher information of {result['n_structures']} structures stored in {model}")


def _format_metrics(report: dict[str, dict]) -> str:
    units = {
        "energy_per_atom": ("meV/atom", 1e3),
        "forces": ("meV/Å", 1e3),
        "stress": ("meV/Å³", 1e3),
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


from mlpot.cli.uncertainty import calibrate, format_scores, probe  # noqa: E402

app.command()(calibrate)
app.command()(probe)

from mlpot.cli.learn import learn  # noqa: E402

app.command()(learn)

from mlpot.cli.validate import validate  # noqa: E402

app.command()(validate)

if __name__ == "__main__":  # pragma: no cover
    app()
