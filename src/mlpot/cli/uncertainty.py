"""``mlpot calibrate`` and ``mlpot probe``: thin wrappers over :mod:`mlpot.uncertainty`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mlpot.cli.options import TrustCode
from mlpot.errors import MlpotInputError


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


def format_scores(report: dict[str, dict[str, Any]]) -> str:
    """Table of calibration scores ``{name: {quantity: scores}}`` (and domain figures), each
    row with the predictive it scores: std scale factor and Student-t degrees of freedom ν."""
    from mlpot.uncertainty.calibration import format_dof

    lines = [
        f"{'dataset':<28} {'quantity':<8} {'scale':>8} {'ν':>5} {'ECE':>7} {'area':>7} "
        f"{'NLL':>9} {'Spearman':>9}"
    ]
    for name, quantities in report.items():
        for quantity, s in quantities.items():
            if quantity == "domain":
                lines.append(
                    f"{name[-28:]:<28} {'domain':<8} in domain {s['fraction_in_domain']:.3f}, "
                    f"mean max T² {s['mean_max_t2']:.4g}, mean max d_min {s['mean_max_d_min']:.4g}"
                )
            elif isinstance(s, dict) and "ece" in s:
                lines.append(
                    f"{name[-28:]:<28} {quantity:<8} {s.get('scale', 1.0):>8.4g} "
                    f"{format_dof(s.get('dof')):>5} {s['ece']:>7.3f} "
                    f"{s['miscalibration_area']:>7.3f} {s['nll']:>9.3f} {s['spearman']:>9.3f}"
                )
    return "\n".join(lines)


def calibrate(
    model: Annotated[Path, typer.Argument(help="Ensemble checkpoint (model.pt).")],
    data: Annotated[list[Path], typer.Argument(help="Labelled validation structures.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of in place.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", "--out", help="Reliability diagram (PNG).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    trust_code: TrustCode = False,
) -> None:
    """Fit MODEL's predictive distribution on DATA and store it: per quantity the scale of
    the predicted stds and the Student-t degrees of freedom (maximum likelihood)."""
    from mlpot.uncertainty.assess import calibrate_files

    try:
        run = calibrate_files(model, [str(d) for d in data], output=output, trust_code=trust_code)
    except MlpotInputError as err:
        _fail(err)
    if plot is not None:
        from mlpot.uncertainty.reliability import reliability_diagram

        reliability_diagram(run.residuals, plot, calibration=run.calibration, title=model.name)
    if as_json:
        scales = run.calibration.to_dict()
        typer.echo(json.dumps({"calibration": scales, "before": run.before, "after": run.after}))
        return
    typer.echo(f"predictive (std scale s, Student-t ν): {run.calibration.describe()}")
    typer.echo(format_scores({"before": run.before, "after": run.after}))
    typer.echo(f"calibrated model: {run.checkpoint}")


def _oracle_params(items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MlpotInputError(f"expected KEY=VALUE, got {item!r}", field="--oracle-param")
        params[key] = yaml.safe_load(value)
    return params


def _read_structure(path: Path, frame: int):
    import ase.io

    if not path.exists():
        raise MlpotInputError("file not found", source=str(path))
    try:
        return ase.io.read(path, index=frame)
    except Exception as err:  # ASE's readers raise many kinds
        raise MlpotInputError(
            f"cannot read structure: {err}", source=str(path), frame=frame
        ) from None


def probe(
    model: Annotated[Path, typer.Argument(help="Checkpoint with domain statistics.")],
    structure: Annotated[Path, typer.Argument(help="Starting configuration (any ASE format).")],
    oracle: Annotated[str, typer.Option(help="Reference: emt, lj, xtb, pyscf, module:factory.")],
    oracle_param: Annotated[
        list[str], typer.Option("--oracle-param", help="Oracle KEY=VALUE (repeatable).")
    ] = [],  # noqa: B006 - typer reads the default, it is never mutated
    frame: Annotated[int, typer.Option(help="Frame of STRUCTURE.")] = 0,
    amplitude: Annotated[float, typer.Option(help="Largest atomic displacement, Å.")] = 0.3,
    steps: Annotated[int, typer.Option(help="Points of the scan.")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    trust_code: TrustCode = False,
) -> None:
    """Scan STRUCTURE along its least-covered direction; report errors against the oracle."""
    from mlpot.active import make_oracle
    from mlpot.uncertainty.assess import load_with_statistics
    from mlpot.uncertainty.probe import probe as run_probe

    try:
        loaded = load_with_statistics(model, trust_code=trust_code)
        if loaded.domain is None:
            raise MlpotInputError(
                "checkpoint has no domain statistics (they are fitted by mlpot train)",
                source=str(model),
                field="domain",
            )
        atoms = _read_structure(structure, frame)
        reference = make_oracle(oracle, trust_code=trust_code, **_oracle_params(oracle_param))
        result = run_probe(
            loaded.model,
            atoms,
            reference,
            loaded.domain,
            calibration=loaded.calibration,
            max_amplitude=amplitude,
            steps=steps,
        )
    except MlpotInputError as err:
        _fail(err)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    p, r = result.probe, result.random
    typer.echo(
        f"least-covered direction: T² grows by {result.t2_rate:.3g} per Å² "
        f"(median direction {result.median_t2_rate:.3g})"
    )
    typer.echo(f"{'Å':>6} {'F RMSE probe':>13} {'random':>9} {'max T² probe':>13} {'random':>9}")
    for k, a in enumerate(p.amplitudes):
        typer.echo(
            f"{a:>6.3f} {p.force_rmse[k]:>13.4f} {r.force_rmse[k]:>9.4f} "
            f"{p.t2_max[k]:>13.4g} {r.t2_max[k]:>9.4g}"
        )
    typer.echo(
        f"force error growth: {p.growth:.3g} eV/Å per Å along the probe, "
        f"{r.growth:.3g} along a random direction"
    )
