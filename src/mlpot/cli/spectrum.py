"""``mlpot response`` and ``mlpot spectrum``: learned dipoles and polarisabilities, IR
and Raman spectra."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import (
    Device,
    Threads,
    exit_on_bad_input,
    read_structures,
    use_resources,
)
from mlpot.errors import MlpotInputError


def fit_response(
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Structures with labels (extxyz).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Response model file.")],
    kind: Annotated[str, typer.Option(help="dipole or polarizability.")] = "dipole",
    validation_fraction: Annotated[float, typer.Option(help="Held-out fraction.")] = 0.15,
    cutoff: Annotated[float, typer.Option(help="Cutoff of the mpnn body, Å.")] = 4.0,
    channels: Annotated[int, typer.Option(help="Channels of the mpnn body.")] = 16,
    radial_basis: Annotated[
        int | None,
        typer.Option(help="Radial functions of the edge terms (dipole: 8; 0: charges only)."),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs.")] = 500,
    members: Annotated[
        int,
        typer.Option(help="Models of an ensemble (seeds differ), spread calibrated.", min=1),
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the split and the weights.")] = 0,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Fit a dipole or polarisability model to labelled structures.

    Dipole: charges that add up to the total charge plus atomic dipoles along the edges
    (--radial-basis 0: charges only) on an mpnn body; labels: each frame's dipole (e Å) as
    a calculator result or info 'dipole', total charge from info 'charge'. Polarisability: isotropic
    per-atom and traceless edge terms; labels: info 'polarizability' (e Å²/V, 3x3).
    Molecules and clusters only (a periodic cell is refused).
    """
    import numpy as np
    import torch

    from mlpot.models.checkpoint import save_response_model
    from mlpot.models.registry import build_model
    from mlpot.models.response import DipoleModel, PolarizabilityModel, body_spec
    from mlpot.training.response import fit_response as fit
    from mlpot.training.response import fit_response_ensemble as fit_ensemble

    with exit_on_bad_input():
        use_resources(threads, device)
        kinds = {cls.kind: cls for cls in (DipoleModel, PolarizabilityModel)}
        if kind not in kinds:
            raise MlpotInputError(
                f"unknown kind {kind!r}: dipole or polarizability", field="--kind"
            )
        frames = read_structures(data)
        if len(frames) < 4:
            raise MlpotInputError(f"only {len(frames)} structures", source=str(data))
        order = np.random.default_rng(seed).permutation(len(frames))
        n_val = max(1, int(round(validation_fraction * len(frames))))
        validation = [frames[k] for k in order[:n_val]]
        train = [frames[k] for k in order[n_val:]]
        elements = sorted({int(z) for atoms in frames for z in atoms.numbers})
        options = {} if radial_basis is None else {"radial_basis": radial_basis}

        def build(k: int):
            spec = {"name": "mpnn", "elements": elements, "cutoff": cutoff, "channels": channels}
            body = build_model(body_spec(spec))
            return kinds[kind](body, **options).double()

        if members > 1:
            model, result = fit_ensemble(
                build,
                members,
                train,
                validation,
                epochs=epochs,
                seed=seed,
                log=None,
                device=device,
            )
            typer.echo(f"ensemble of {members}: calibrated spread scale {result['scale']:.3g}")
        else:
            torch.manual_seed(seed)
            model = build(0)
            result = fit(
                model, train, validation, epochs=epochs, seed=seed, log=typer.echo, device=device
            )
        save_response_model(output, model, training={"data": str(data), **result})
    unit = "e·Å" if kind == "dipole" else "e·Å²/V"
    typer.echo(
        f"wrote {output}: validation {kind} RMSE {result['validation_rmse']:.4g} {unit} "
        f"({result['epochs']} epochs)"
    )


def spectrum(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Energy model (model.pt).")],
    structure: Annotated[Path, typer.Argument(metavar="STRUCTURE", help="A molecule.")],
    response: Annotated[
        list[Path],
        typer.Option(
            help="Dipole model (IR) or polarisability model (Raman), from mlpot response; "
            "repeat it for an ensemble (mean and spread).",
        ),
    ],
    frame: Annotated[int, typer.Option(help="Frame of STRUCTURE.")] = 0,
    relax: Annotated[
        bool, typer.Option(help="Relax to a minimum of MODEL first (fmax 1e-3 eV/Å).")
    ] = True,
    csv: Annotated[
        Path | None, typer.Option(help="Write the broadened spectrum (cm^-1, intensity).")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the spectrum as a PNG.")] = None,
    html: Annotated[
        Path | None, typer.Option(help="Write an HTML page with the plot and the table.")
    ] = None,
    width: Annotated[float, typer.Option(help="Lorentzian half width, cm^-1.")] = 10.0,
    method: Annotated[
        str, typer.Option(help="harmonic (normal modes) or md (dipole autocorrelation).")
    ] = "harmonic",
    temperature: Annotated[float, typer.Option(help="md: temperature, K.")] = 300.0,
    trajectories: Annotated[int, typer.Option(help="md: NVE trajectories.")] = 4,
    steps: Annotated[int, typer.Option(help="md: NVE steps of 0.5 fs each.")] = 4000,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Compute the IR or Raman spectrum of a molecule.

    The kind follows the response model: a dipole gives IR, a polarisability Raman.
    harmonic: normal modes from MODEL's autograd Hessian; prints frequencies (cm^-1) and
    IR intensities ((D/Å)²/amu) or Raman activities (Å⁴/amu, 45a'² + 7γ'²), absolute and
    relative to the strongest. md: the line shape of the learned dipole (polarisability)
    along NVE trajectories from a thermal ensemble (Hann window). MODEL and the response
    models run on --device.
    """
    import numpy as np

    from mlpot.calculators.ase_calculator import MlpotCalculator
    from mlpot.models.checkpoint import load_checkpoint, load_model, load_response_model
    from mlpot.validation.spectra import harmonic_ir, harmonic_raman, md_spectrum

    with exit_on_bad_input():
        use_resources(threads, device)
        if method not in ("harmonic", "md"):
            raise MlpotInputError(f"unknown method {method!r}: harmonic or md", field="--method")
        if load_checkpoint(model).get("baseline") is not None:
            raise MlpotInputError(
                "a delta-learned model's Hessian needs its baseline's finite differences; "
                "not supported by mlpot spectrum yet",
                source=str(model),
                field="baseline",
            )
        energy = load_model(model, dtype="float64", device=device)
        members = [load_response_model(path, dtype="float64").to(device) for path in response]
        response_model = members[0]
        if len({m.kind for m in members}) > 1:
            raise MlpotInputError(
                "the response models are of different kinds (dipole and polarizability)",
                field="--response",
            )
        if method == "md" and len(members) > 1:
            raise MlpotInputError("md spectra take one response model", field="--response")
        frames = read_structures(structure)
        if not 0 <= frame < len(frames):
            raise MlpotInputError(f"no frame {frame}", source=str(structure))
        atoms = frames[frame]
        if relax:
            from ase.optimize import BFGS

            atoms.calc = MlpotCalculator(energy, device=device)
            BFGS(atoms, logfile=None).run(fmax=1e-3, steps=500)
        if method == "md":
            shape = md_spectrum(
                atoms,
                MlpotCalculator(energy, device=device),
                response_model,
                temperature_K=temperature,
                trajectories=trajectories,
                steps=steps,
            )
        else:
            harmonic = harmonic_ir if response_model.kind == "dipole" else harmonic_raman
            result = harmonic(atoms, energy, members)
    band = None
    if method == "md":
        grid, curve = shape.wavenumbers, shape.intensities
        inside = (grid > 200.0) & (grid < 4500.0)
        top = np.argsort(curve[inside])[::-1][:8]
        typer.echo(f"line shape, resolution {shape.resolution:.1f} cm^-1; strongest points:")
        for k in sorted(top, key=lambda k: grid[inside][k]):
            typer.echo(f"{grid[inside][k]:>9.1f} cm^-1 {curve[inside][k]:>8.3f}")
    else:
        typer.echo(result.table())
        grid = np.arange(0.0, 4000.0 + 0.5, 1.0)
        curve = result.broadened(grid, width)
        band = result.broadened_spread(grid, width)
    if csv is not None:
        columns, header = [grid, curve], "cm-1,intensity"
        if band is not None:
            columns, header = [*columns, band], header + ",std"
        np.savetxt(csv, np.column_stack(columns), delimiter=",", header=header)
        typer.echo(f"wrote {csv}")
    label = "IR intensity" if response_model.kind == "dipole" else "Raman activity"
    table = result.table() if method == "harmonic" else None
    if plot is not None or html is not None:
        png = _plot(grid, curve, band, label, method)
        if plot is not None:
            plot.write_bytes(png)
            typer.echo(f"wrote {plot}")
        if html is not None:
            html.write_text(_html_page(png, table, label, model, structure, method))
            typer.echo(f"wrote {html}")


def _plot(grid, curve, band, label: str, method: str) -> bytes:
    """The spectrum as PNG bytes (with the ensemble's ± std band when given)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(grid, curve, lw=1.0)
    if band is not None:
        ax.fill_between(grid, curve - band, curve + band, alpha=0.3, lw=0, label="± std")
        ax.legend()
    ax.set_xlim(0, 4000)
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
    ax.set_ylabel(f"{label} ({'broadened' if method == 'harmonic' else 'line shape'})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def _html_page(png: bytes, table: str | None, label: str, model, structure, method) -> str:
    """A self-contained HTML page: the plot (embedded) and the table of modes."""
    import base64
    import html

    image = base64.b64encode(png).decode("ascii")
    modes = f"<pre>{html.escape(table)}</pre>" if table else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>mlpot {html.escape(label)}</title></head><body>"
        f"<h1>{html.escape(label)} spectrum ({html.escape(method)})</h1>"
        f"<p>model {html.escape(str(model))}, structure {html.escape(str(structure))}</p>"
        f"<img alt='spectrum' src='data:image/png;base64,{image}'>{modes}</body></html>\n"
    )
