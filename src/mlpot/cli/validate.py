"""``mlpot validate``: physics checks of a model against an oracle, and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mlpot.cli.options import TrustCode
from mlpot.errors import MlpotInputError

EXIT_FAILED_CHECKS = 1
EXIT_BAD_INPUT = 2


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["sigma=2.3", "smooth=true"]`` -> ``{"sigma": 2.3, "smooth": True}`` (YAML values)."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MlpotInputError(f"expected KEY=VALUE, got {pair!r}", field="--oracle-param")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _read_config(path: Path | None) -> dict[str, Any]:
    """``{settings: {...}, tolerances: {...}}`` from a YAML file (both sections optional)."""
    if path is None:
        return {}
    if not path.is_file():
        raise MlpotInputError("config file not found", source=str(path))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MlpotInputError(f"not valid YAML: {err}", source=str(path)) from None
    unknown = set(raw) - {"settings", "tolerances"} if isinstance(raw, dict) else {"?"}
    if unknown:
        raise MlpotInputError(
            f"unknown section(s) {sorted(unknown)}; expected 'settings' and 'tolerances'",
            source=str(path),
        )
    return raw


def format_report(report) -> str:
    """One line per check: status, judged figures against their tolerances."""
    lines = [f"{'check':<11} {'status':<6} figures (tolerance)"]
    for c in report.checks:
        if c.passed is None or not c.figures:
            text = c.reason
        else:
            text = "; ".join(
                f"{k} = {c.figures[k]:.4g} ({b.describe()})" for k, b in c.tolerance.items()
            )
        lines.append(f"{c.name:<11} {c.status.upper():<6} {text}")
    counts = report.counts()
    lines.append(
        f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped "
        f"in {report.wall_time_s:.1f} s"
    )
    return "\n".join(lines)


def validate(
    model: Annotated[Path, typer.Argument(help="Checkpoint (model.pt).")],
    oracle: Annotated[str, typer.Option(help="Oracle: emt, lj, xtb, pyscf or module:factory.")],
    system: Annotated[
        str, typer.Option(help="Built-in system (cu-fcc, ethanol) or a structure file.")
    ],
    oracle_param: Annotated[
        list[str] | None, typer.Option(help="Oracle parameter KEY=VALUE (repeatable).")
    ] = None,
    temperature: Annotated[float, typer.Option(help="Target temperature, K.")] = 300.0,
    checks: Annotated[
        str | None, typer.Option(help="Comma-separated checks to run (default: all that fit).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML with 'settings' and 'tolerances' sections.")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Short MD and NEB runs.")] = False,
    output: Annotated[Path, typer.Option(help="Directory of report.html/json.")] = Path(
        "validation"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    threads: Annotated[
        int,
        typer.Option(
            help="Torch threads; the validation structures are small, and one "
            "thread is fastest for them (16x on a busy 2-core machine)."
        ),
    ] = 1,
    trust_code: TrustCode = False,
) -> None:
    """Check MODEL against ORACLE on SYSTEM: errors against kT, NVE drift, NVT temperature,
    RDF, defects, NEB barrier, frequencies, elastic constants, EOS, dimer curves. Writes
    OUTPUT/report.html and report.json. Exit status 1 when a check fails, 2 on bad input."""
    import torch

    from mlpot.validation import QUICK, run_validation, write_report

    torch.set_num_threads(max(1, threads))
    try:
        raw = _read_config(config)
        settings = {**(QUICK if quick else {}), **(raw.get("settings") or {})}
        report = run_validation(
            model,
            oracle=oracle,
            oracle_params=_parse_params(oracle_param or []),
            system=system,
            temperature=temperature,
            checks=checks,
            settings=settings,
            tolerances=raw.get("tolerances"),
            progress=not as_json,
            trust_code=trust_code,
        )
        files = write_report(report, output)
    except MlpotInputError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=EXIT_BAD_INPUT) from None
    if as_json:
        summary = report.to_dict()
        for check in summary["checks"]:
            check.pop("details")
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(format_report(report))
        typer.echo(f"report: {files.html}")
    if not report.passed:
        raise typer.Exit(code=EXIT_FAILED_CHECKS)
