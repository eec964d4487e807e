"""``mlpot export``: a checkpoint -> a metatomic model (LAMMPS, i-PI, TorchSim, ASE)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import Threads, exit_on_bad_input, use_resources
from mlpot.errors import MlpotInputError


def export(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="mlpot checkpoint (model.pt).")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Exported model file (default: MODEL's name + -exported.pt)."
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="float64 or float32 (default: the checkpoint's dtype)."),
    ] = None,
    threads: Threads = None,
) -> None:
    """Export a model as a TorchScript metatomic model.

    The file runs in LAMMPS (pair_style metatomic), i-PI, TorchSim and ASE
    (metatomic-ase) without mlpot. Energy, forces and stress come from the engine's
    autograd of the exported energy; an ensemble model also gives energy_uncertainty and
    energy_ensemble. The file is written only after it matches the eager model on probe
    structures.
    """
    with exit_on_bad_input():
        use_resources(threads)
        try:
            from mlpot.export.export import export_model
        except ImportError as err:
            raise MlpotInputError(
                f"export needs the 'export' extra (pip install 'mlpot[export]'): {err}"
            ) from None
        output = output or model.with_name(f"{model.stem}-exported.pt")
        differences = export_model(model, output, dtype=dtype)
        worst = max(d.relative for d in differences)
        typer.echo(
            f"wrote {output} (checked against the eager model on {len(differences)} "
            f"quantities of probe structures: largest relative difference {worst:.1e})"
        )
