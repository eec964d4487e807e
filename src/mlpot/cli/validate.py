"""``mlpot validate``: physics checks of a model against an oracle, and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mlpot.cli.options import (
    EXIT_FAILED,
    Device,
    Oracle,
    OracleParams,
    TrustCode,
    exit_on_bad_input,
    parse_key_values,
    use_resources,
)
from mlpot.config_io import read_yaml
from mlpot.errors import MlpotInputError


def _read_config(path: Path | None) -> dict[str, Any]:
    """``{settings: {...}, tolerances: {...}}`` from a YAML file (both sections optional)."""
    if path is None:
        return {}
    raw = read_yaml(path) or {}
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
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Checkpoint (model.pt).")],
    oracle: Oracle,
    system: Annotated[
        str,
        typer.Option(
            metavar="NAME|FILE", help="Built-in system (cu-fcc, ethanol) or a structure file."
        ),
    ],
    oracle_param: OracleParams = None,
    temperature: Annotated[float, typer.Option(help="Target temperature, K.")] = 300.0,
    checks: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES", help="Comma-separated checks to run (default: all that fit)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="YAML with 'settings' and 'tolerances' sections."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Short MD and NEB runs.")] = False,
    output: Annotated[
        Path, typer.Option(metavar="DIR", help="Directory of report.html and report.json.")
    ] = Path("validation"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            metavar="N",
            min=1,
            help="CPU threads for torch; the validation structures are small, and one "
            "thread is fastest for them (16x on a busy 2-core machine).",
        ),
    ] = 1,
    device: Device = "cpu",
    trust_code: TrustCode = False,
    response: Annotated[
        Path | None,
        typer.Option(help="Dipole model (mlpot response): adds the harmonic IR check."),
    ] = None,
) -> None:
    """Check a model's physics against an oracle and write a report.

    Runs every check that fits SYSTEM: errors against kT, NVE drift, NVT temperature, RDF,
    defects, NEB barrier, frequencies, IR intensities (with --response), elastic
    constants, EOS, dimer curves. Writes
    OUTPUT/report.html and report.json. Exit status 1 when a check fails, 2 on bad input.
    """
    from mlpot.validation import QUICK, run_validation, write_report

    with exit_on_bad_input():
        use_resources(threads, device)
        raw = _read_config(config)
        settings = {**(QUICK if quick else {}), **(raw.get("settings") or {})}
        report = run_validation(
            model,
            oracle=oracle,
            oracle_params=parse_key_values(oracle_param),
            system=system,
            temperature=temperature,
            checks=checks,
            settings=settings,
            tolerances=raw.get("tolerances"),
            progress=not as_json,
            trust_code=trust_code,
            device=device,
            response=response,
        )
        files = write_report(report, output)
    if as_json:
        summary = report.to_dict()
        for check in summary["checks"]:
            check.pop("details")
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(format_report(report))
        typer.echo(f"report: {files.html}")
    if not report.passed:
        raise typer.Exit(code=EXIT_FAILED)
