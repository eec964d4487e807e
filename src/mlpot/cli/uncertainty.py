"""``mlpot calibrate``, ``mlpot llpr`` and ``mlpot probe``: thin wrappers over
:mod:`mlpot.uncertainty`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mlpot.cli.options import (
    Device,
    Json,
    Oracle,
    OracleParams,
    Threads,
    TrustCode,
    exit_on_bad_input,
    parse_key_values,
    use_resources,
)
from mlpot.errors import MlpotInputError


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
                hull = (
                    f", outside hull {s['fraction_outside_hull']:.3f}"
                    if "fraction_outside_hull" in s
                    else ""
                )
                lines.append(
                    f"{name[-28:]:<28} {'domain':<8} in domain {s['fraction_in_domain']:.3f}, "
                    f"mean max T² {s['mean_max_t2']:.4g}, mean max d_min {s['mean_max_d_min']:.4g}"
                    + hull
                )
            elif isinstance(s, dict) and "ece" in s:
                lines.append(
                    f"{name[-28:]:<28} {quantity:<8} {s.get('scale', 1.0):>8.4g} "
                    f"{format_dof(s.get('dof')):>5} {s['ece']:>7.3f} "
                    f"{s['miscalibration_area']:>7.3f} {s['nll']:>9.3f} {s['spearman']:>9.3f}"
                )
    return "\n".join(lines)


def calibrate(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Ensemble checkpoint (model.pt).")],
    data: Annotated[
        list[Path], typer.Argument(metavar="DATA", help="Labelled validation structures.")
    ],
    output_model: Annotated[
        Path | None,
        typer.Option(
            "--output-model",
            metavar="FILE",
            help="Write the calibrated checkpoint here instead of updating MODEL in place.",
        ),
    ] = None,
    output_plot: Annotated[
        Path | None,
        typer.Option("--output-plot", metavar="FILE", help="Write the reliability diagram (PNG)."),
    ] = None,
    as_json: Json = False,
    threads: Threads = None,
    device: Device = "cpu",
    trust_code: TrustCode = False,
) -> None:
    """Calibrate an ensemble's uncertainty on labelled data.

    Fits, per quantity, the scale of the predicted standard deviations and the Student-t
    degrees of freedom of the errors (maximum likelihood on DATA), and stores them in the
    checkpoint.
    """
    from mlpot.uncertainty.assess import calibrate_files

    with exit_on_bad_input():
        use_resources(threads, device)
        run = calibrate_files(
            model,
            [str(d) for d in data],
            output=output_model,
            trust_code=trust_code,
            device=device,
        )
    if output_plot is not None:
        from mlpot.uncertainty.reliability import reliability_diagram

        reliability_diagram(
            run.residuals, output_plot, calibration=run.calibration, title=model.name
        )
    if as_json:
        scales = run.calibration.to_dict()
        typer.echo(json.dumps({"calibration": scales, "before": run.before, "after": run.after}))
        return
    typer.echo(f"predictive (std scale s, Student-t ν): {run.calibration.describe()}")
    typer.echo(format_scores({"before": run.before, "after": run.after}))
    typer.echo(f"calibrated model: {run.checkpoint}")


def llpr(
    model: Annotated[
        Path, typer.Argument(metavar="MODEL", help="Single-model checkpoint (an mpnn run's).")
    ],
    data: Annotated[
        list[Path], typer.Argument(metavar="TRAIN", help="The model's training structures.")
    ],
    output_model: Annotated[
        Path,
        typer.Option("--output-model", metavar="FILE", help="Write the LLPR checkpoint here."),
    ],
    validation: Annotated[
        list[Path] | None,
        typer.Option(
            "--validation",
            metavar="FILE",
            help="Labelled validation structures (repeatable): the regulariser is chosen "
            "and the Student-t calibration fitted on them.",
        ),
    ] = None,
    members: Annotated[
        int, typer.Option(min=2, help="Last-layer weight samples (ensemble members).")
    ] = 8,
    as_json: Json = False,
    threads: Threads = None,
    device: Device = "cpu",
    trust_code: TrustCode = False,
) -> None:
    """Give a single model a last-layer uncertainty (LLPR).

    Fits the last-layer prediction rigidity on the training structures, draws MEMBERS
    last-layer weight samples from it, and writes a checkpoint whose calculator reports
    energy_std, forces_std and stress_std (calibrated on the validation structures).
    """
    from mlpot.uncertainty.llpr import llpr_checkpoint

    with exit_on_bad_input():
        use_resources(threads, device)
        run = llpr_checkpoint(
            model,
            [str(d) for d in data],
            output_model,
            validation=[str(v) for v in validation or []],
            members=members,
            trust_code=trust_code,
            device=device,
        )
    calibration = run.calibration
    if as_json:
        figures = {"checkpoint": str(run.checkpoint), "regularizer": run.regularizer}
        if calibration is not None:
            figures.update(calibration=calibration.calibration.to_dict(), after=calibration.after)
        typer.echo(json.dumps(figures))
        return
    typer.echo(f"regulariser ς² = {run.regularizer:.4g} eV²")
    if calibration is not None:
        typer.echo(f"predictive (std scale s, Student-t ν): {calibration.calibration.describe()}")
        typer.echo(format_scores({"validation": calibration.after}))
    else:
        typer.echo("uncalibrated: run mlpot calibrate on held-out structures")
    typer.echo(f"LLPR model: {run.checkpoint}")


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
    model: Annotated[
        Path, typer.Argument(metavar="MODEL", help="Checkpoint with domain statistics.")
    ],
    structure: Annotated[
        Path,
        typer.Argument(metavar="STRUCTURE", help="Starting configuration (any ASE format)."),
    ],
    oracle: Oracle,
    oracle_param: OracleParams = None,
    frame: Annotated[int, typer.Option(help="Frame of STRUCTURE.")] = 0,
    amplitude: Annotated[float, typer.Option(help="Largest atomic displacement, Å.")] = 0.3,
    steps: Annotated[int, typer.Option(help="Points of the scan.")] = 7,
    as_json: Json = False,
    threads: Threads = None,
    device: Device = "cpu",
    trust_code: TrustCode = False,
) -> None:
    """Probe where a model extrapolates, against an oracle.

    Scans STRUCTURE along its least-covered direction (where the domain score T² grows
    fastest) and along a random one, and reports the force errors against the oracle.
    """
    from mlpot.calculators.oracles import make_oracle
    from mlpot.uncertainty.assess import load_with_statistics
    from mlpot.uncertainty.probe import probe as run_probe

    with exit_on_bad_input():
        use_resources(threads, device)
        loaded = load_with_statistics(model, trust_code=trust_code, device=device)
        if loaded.domain is None:
            raise MlpotInputError(
                "checkpoint has no domain statistics (they are fitted by mlpot train)",
                source=str(model),
                field="domain",
            )
        atoms = _read_structure(structure, frame)
        params = parse_key_values(oracle_param)
        reference = make_oracle(oracle, trust_code=trust_code, **params)
        result = run_probe(
            loaded.model,
            atoms,
            reference,
            loaded.domain,
            calibration=loaded.calibration,
            max_amplitude=amplitude,
            steps=steps,
            device=device,
        )
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
