"""``mlpot learn``: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import TrustCode
from mlpot.errors import MlpotInputError


def learn(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="YAML learn config; without one, the embedded default (ethanol, GFN2-xTB)."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a stopped run.")] = False,
    output: Annotated[str | None, typer.Option(help="Output directory (overrides config).")] = None,
    trust_code: TrustCode = False,
) -> None:
    """Active learning: label, train a committee, explore, label what it is unsure of,
    retrain; then validate and report. Writes OUTPUT/model.pt, store.db and the report."""
    from mlpot.active import learn as run_learn
    from mlpot.active import load_learn_config

    try:
        cfg = load_learn_config(config)
        if output is not None:
            cfg.output = str(Path(output).resolve())
        result = run_learn(
            cfg, resume=resume, trust_code=trust_code, log=lambda line: typer.echo(line)
        )
    except MlpotInputError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    if result.already_finished:
        typer.echo(f"model: {result.model_path}\nstore: {result.store_path}")
        return
    calls = result.oracle_calls
    typer.echo(
        f"oracle calls: {calls['labels']} labels, {calls['setup']} set-up, "
        f"{calls['test']} test frames; failures: {result.failures} labels, "
        f"{result.setup_failures} set-up calls"
    )
    typer.echo(
        "oracle time hidden behind exploration: "
        f"{result.hidden_oracle_fraction:.0%} (behind exploration or training: "
        f"{result.hidden_oracle_fraction_driver:.0%})"
    )
    typer.echo(f"model: {result.model_path}\nstore: {result.store_path}")
    if result.report_path:
        typer.echo(f"report: {result.report_path}")
