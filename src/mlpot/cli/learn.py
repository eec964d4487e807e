"""``mlpot learn``: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import Threads, TrustCode, exit_on_bad_input, use_resources


def learn(
    config: Annotated[
        Path | None,
        typer.Argument(
            metavar="CONFIG",
            help="YAML learn config; without one, the embedded default (ethanol, GFN2-xTB).",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a stopped run.")] = False,
    output: Annotated[
        str | None,
        typer.Option(metavar="DIR", help="Output directory (overrides the config's)."),
    ] = None,
    threads: Threads = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="DEVICE",
            help="Torch device the committee trains on (default: the config's "
            "train.training.device; exploration runs on the CPU).",
        ),
    ] = None,
    trust_code: TrustCode = False,
) -> None:
    """Learn a potential end to end: label, train, explore, validate.

    Labels starting structures with the oracle, trains a committee, explores by MD, labels
    what the committee is unsure of and retrains until the committee passes its validation
    against the oracle (or a budget is spent). Writes OUTPUT/model.pt, the store (store.db)
    and the report; with a response section also OUTPUT/dipole.pt (or polarizability.pt).
    """
    from mlpot.active import learn as run_learn
    from mlpot.active import load_learn_config

    with exit_on_bad_input():
        use_resources(threads, device)
        cfg = load_learn_config(config)
        if output is not None:
            cfg.output = str(Path(output).resolve())
        if device is not None:
            cfg.train.training["device"] = device
        result = run_learn(cfg, resume=resume, trust_code=trust_code, log=typer.echo)
    if result.already_finished:
        typer.echo(f"model: {result.model_path}\nstore: {result.store_path}")
        _response(result)
        _verdict(result)
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
    _response(result)
    if result.report_path:
        typer.echo(f"report: {result.report_path}")
    _verdict(result)


def _response(result) -> None:
    """The response model (config ``response``) and its held-out error in a line."""
    from mlpot.active.response_model import ResponseResult

    if result.response:
        typer.echo(f"response: {ResponseResult(**result.response).describe()}")


def _verdict(result) -> None:
    """The final model's validation in a line, and how to go on when a budget stopped it."""
    from mlpot.active.steering import describe_failing

    if result.validation_passed:
        typer.echo("validation: every applicable check passes")
    elif result.validation_passed is False:
        typer.echo(f"validation fails: {describe_failing(result.failing_checks)}")
    if result.continue_hint:
        typer.echo(result.continue_hint)
