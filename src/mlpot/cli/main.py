"""The ``mlpot`` command line: thin wrappers over library functions."""

from __future__ import annotations

from typing import Annotated

import typer

from mlpot.cli.diabatic import fit_diabatic, nac
from mlpot.cli.export import export
from mlpot.cli.free_energy import free_energy, pimd
from mlpot.cli.growth import growth
from mlpot.cli.learn import learn
from mlpot.cli.qmml import qmml
from mlpot.cli.spectrum import fit_response, spectrum
from mlpot.cli.studies import boyle, torsion_fit
from mlpot.cli.training import evaluate, fisher, train
from mlpot.cli.uncertainty import calibrate, llpr, probe
from mlpot.cli.validate import validate

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # plain help: flags as flags, one-line command summaries
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run 'mlpot COMMAND --help' for the options of a command.",
)

app.command()(learn)
app.command()(train)
app.command("eval")(evaluate)
app.command()(validate)
app.command()(calibrate)
app.command()(llpr)
app.command()(probe)
app.command()(fisher)
app.command()(export)
app.command("response")(fit_response)
app.command()(spectrum)
app.command("free-energy")(free_energy)
app.command()(pimd)
app.command()(growth)
app.command()(qmml)
app.command("diabatic")(fit_diabatic)
app.command()(nac)
app.command()(boyle)
app.command("torsion-fit")(torsion_fit)


def _print_version(value: bool) -> None:
    if value:
        from mlpot.models.checkpoint import package_version

        typer.echo(f"mlpot {package_version()}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """mlpot: machine-learned interatomic potentials you can trust."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


if __name__ == "__main__":  # pragma: no cover
    app(prog_name="mlpot")
