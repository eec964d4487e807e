"""``mlpot diabatic`` and ``mlpot nac``: fit a diabatic multi-state model to adiabatic
labels, and predict adiabatic energies, forces and nonadiabatic couplings with it."""

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

PHASES = ("structure", "global", "track")


def fit_diabatic(
    data: Annotated[
        Path,
        typer.Argument(
            metavar="DATA",
            help="Structures with info 'adiabatic_energies' (eV, ascending), optionally arrays "
            "'adiabatic_forces' (N x 3n, eV/Å) and 'nac_m_n' (N x 3, 1/Å) (extxyz).",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Diabatic model file.")],
    states: Annotated[int, typer.Option(help="Number of electronic states.", min=2)] = 2,
    body: Annotated[str, typer.Option(help="Feature body: bpnn or mpnn.")] = "bpnn",
    cutoff: Annotated[float, typer.Option(help="Cutoff of the body, Å.")] = 5.0,
    hidden: Annotated[int, typer.Option(help="Width of the two hidden layers of the heads.")] = 32,
    nac_phase: Annotated[
        str,
        typer.Option(
            help="Signs of the coupling labels: structure (unrelated), global (consistent), "
            "or track (DATA is a path: make them consistent by continuity, then global)."
        ),
    ] = "structure",
    validation_fraction: Annotated[float, typer.Option(help="Held-out fraction.")] = 0.1,
    epochs: Annotated[int, typer.Option(help="Epochs.", min=1)] = 2000,
    learning_rate: Annotated[float, typer.Option(help="Initial Adam step.")] = 5e-3,
    batch_size: Annotated[int | None, typer.Option(help="Structures per step (all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the weights.")] = 0,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Fit a multi-state diabatic model to adiabatic energies.

    The model is a symmetric n x n Hamiltonian from per-atom contributions; forces on each
    state and coupling vectors are fitted too where labelled.

    Energies alone do not determine the coupling vectors: label them (any sign) for
    couplings that are a prediction rather than an assumption.
    """
    import numpy as np
    import torch

    from mlpot.apps.diabatic import align_nac_phases, save_diabatic
    from mlpot.apps.diabatic_training import fit_diabatic
    from mlpot.models.diabatic import DiabaticModel
    from mlpot.models.registry import build_model

    with exit_on_bad_input():
        use_resources(threads, device)
        if nac_phase not in PHASES:
            raise MlpotInputError(
                f"unknown nac phase {nac_phase!r}: one of {', '.join(PHASES)}", field="--nac-phase"
            )
        if body not in ("bpnn", "mpnn"):
            raise MlpotInputError(f"unknown body {body!r}: bpnn or mpnn", field="--body")
        frames = read_structures(data)
        if nac_phase == "track":
            frames, nac_phase = align_nac_phases(frames, states), "global"
        order = np.random.default_rng(seed).permutation(len(frames))
        n_val = int(round(validation_fraction * len(frames))) if len(frames) > 4 else 0
        validation = [frames[k] for k in order[:n_val]]
        train = [frames[k] for k in order[n_val:]]
        elements = sorted({int(z) for atoms in frames for z in atoms.numbers})
        torch.manual_seed(seed)
        trunk = build_model({"name": body, "elements": elements, "cutoff": cutoff})
        model = DiabaticModel(trunk, states, hidden=[hidden, hidden]).double()
        result = fit_diabatic(
            model,
            train,
            validation or None,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            nac_phase=nac_phase,
            seed=seed,
            log=typer.echo,
            device=device,
        )
        figures = {"train": result.train, "validation": result.validation}
        save_diabatic(output, model, training={"data": str(data), **figures})
    typer.echo(f"wrote {output}")
    for name, errors in figures.items():
        if errors:
            text = ", ".join(f"{key} {value:.4g}" for key, value in errors.items())
            typer.echo(f"{name}: {text} (eV, eV/Å, 1/Å)")


def nac(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Diabatic model file.")],
    structures: Annotated[Path, typer.Argument(metavar="STRUCTURES", help="Structures.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write the predictions as extxyz, in the labels' fields."
        ),
    ] = None,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Predict adiabatic states and their nonadiabatic couplings.

    Adiabatic energies (eV), forces on every state (eV/Å) and nonadiabatic coupling vectors
    (1/Å); prints energies and |d_mn| per frame."""
    import ase.io
    import numpy as np

    from mlpot.apps.diabatic import ENERGIES, FORCES, evaluate, load_diabatic, nac_key

    with exit_on_bad_input():
        use_resources(threads, device)
        diabatic = load_diabatic(model, dtype="float64", device=device)
        frames = read_structures(structures)
        n = diabatic.n_states
        typer.echo("frame " + " ".join(f"E_{k} (eV)" for k in range(n)) + "  |d_mn| (1/Å)")
        for index, atoms in enumerate(frames):
            result = evaluate(diabatic, atoms, allow_degenerate=True)
            energies = result.energies[0].cpu().numpy()
            forces = result.forces.permute(1, 0, 2).reshape(len(atoms), 3 * n)
            atoms.info[ENERGIES] = energies
            atoms.arrays[FORCES] = forces.cpu().numpy()
            norms = []
            for m in range(n):
                for k in range(m + 1, n):
                    vectors = result.nac[m, k].cpu().numpy()
                    atoms.arrays[nac_key(m, k)] = vectors
                    norms.append(f"{m}{k}: {np.linalg.norm(vectors):.4g}")
            text = " ".join(f"{e:.6f}" for e in energies)
            typer.echo(f"{index:>5} {text}  {', '.join(norms)}")
    if output is not None:
        ase.io.write(output, frames, format="extxyz")
        typer.echo(f"wrote {output}")
