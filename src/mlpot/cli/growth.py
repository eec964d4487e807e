"""``mlpot growth``: adatom barriers on a stepped surface, model against oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import (
    Device,
    Oracle,
    OracleParams,
    Threads,
    TrustCode,
    exit_on_bad_input,
    parse_key_values,
    use_resources,
)


def growth(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Energy model (model.pt).")],
    oracle: Oracle = "emt",
    oracle_param: OracleParams = None,
    processes: Annotated[
        str | None,
        typer.Option(help="Comma-separated process names (default: all eight)."),
    ] = None,
    symbol: Annotated[str, typer.Option(help="fcc element of the surface.")] = "Cu",
    lattice: Annotated[float, typer.Option(help="fcc lattice constant, Å.")] = 3.61,
    images: Annotated[int, typer.Option(help="Intermediate NEB images.", min=1)] = 5,
    fmax: Annotated[float, typer.Option(help="NEB convergence, eV/Å.")] = 0.03,
    relax_fmax: Annotated[float, typer.Option(help="End-point relaxation, eV/Å.")] = 0.02,
    csv: Annotated[Path | None, typer.Option(help="Write the full table as CSV.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the table as Markdown.")] = None,
    trust_code: TrustCode = False,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Compare adatom barriers on a stepped surface with the oracle's.

    Hops on the terraces, attachment to the step and into a kink, diffusion along the
    step, Ehrlich-Schwoebel descent (hop and exchange): end points relaxed and a
    climbing-image NEB converged with MODEL and with the oracle. Prints barriers, their
    errors, reaction energies and the adatom's coordination and layer (initial, saddle,
    final).
    """
    from mlpot.apps.growth import attachment_barriers
    from mlpot.apps.growth_surface import stepped_surface

    with exit_on_bad_input():
        use_resources(threads, device)
        spec = {"name": oracle, "params": parse_key_values(oracle_param)}
        result = attachment_barriers(
            model,
            spec,
            surface=stepped_surface(symbol, lattice),
            processes=processes.split(",") if processes else None,
            images=images,
            fmax=fmax,
            relax_fmax=relax_fmax,
            trust_code=trust_code,
            device=device,
            log=typer.echo,
        )
    typer.echo(result.table())
    for path, fmt in ((csv, "csv"), (markdown, "markdown")):
        if path is not None:
            path.write_text(result.table(fmt))
            typer.echo(f"wrote {path}")
