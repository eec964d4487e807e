"""``mlpot qmml``: a QM/ML hybrid of a learned potential and an oracle on one structure."""

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
from mlpot.errors import MlpotInputError


def parse_indices(text: str) -> list[int]:
    """``"0,1,5-7"`` -> ``[0, 1, 5, 6, 7]`` (ranges inclusive); bad text is an input error."""
    indices = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, dash, last = part.partition("-")
            indices += list(range(int(first), int(last) + 1)) if dash else [int(first)]
    except ValueError:
        raise MlpotInputError(f"not a list of atom indices: {text!r}", field="--qm-atoms") from None
    return indices


def qmml(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Learned potential (model.pt).")],
    structure: Annotated[Path, typer.Argument(metavar="STRUCTURE", help="Structure file.")],
    qm_atoms: Annotated[
        str, typer.Option(help="QM core atom indices, e.g. 0,1,2 or 0-5 (always QM).")
    ],
    r_core: Annotated[float, typer.Option(help="Switch inner radius, Å (fully QM inside).")] = 3.0,
    r_buffer: Annotated[float, typer.Option(help="Switch outer radius, Å (ML outside).")] = 5.0,
    groups: Annotated[str, typer.Option(help="Switched units: molecules or atoms.")] = "molecules",
    capping: Annotated[
        bool, typer.Option(help="Cap bonds cut by a cluster with H link atoms.")
    ] = True,
    body_order: Annotated[
        int, typer.Option(help="QM correction: 2 (core + one group) or 3 (+ pairs).")
    ] = 3,
    oracle: Oracle = "xtb",
    oracle_param: OracleParams = None,
    frame: Annotated[int, typer.Option(help="Frame of STRUCTURE.")] = 0,
    steps: Annotated[int, typer.Option(help="NVE steps to check energy conservation.")] = 0,
    timestep: Annotated[float, typer.Option(help="NVE time step, fs.")] = 0.5,
    temperature: Annotated[float, typer.Option(help="NVE initial temperature, K.")] = 300.0,
    seed: Annotated[int, typer.Option(help="Seed of the initial momenta.")] = 0,
    trust_code: TrustCode = False,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Evaluate a QM/ML hybrid: oracle in the core, model outside.

    The QM correction is switched on C²-smoothly between --r-core and --r-buffer. Prints
    the energy, the regions, the force mismatch ε_F between QM and ML forces in the
    interface, and ΔE_max, the largest energy jump when a group crosses the switch radii;
    with --steps, the energy drift of NVE MD with the hybrid and with MODEL alone.
    """
    import ase.io

    from mlpot.apps.qmml import load_qmml_calculator
    from mlpot.apps.qmml_diagnostics import diagnose, nve_drift

    with exit_on_bad_input():
        use_resources(threads, device)
        if not structure.exists():
            raise MlpotInputError("file not found", source=str(structure))
        atoms = ase.io.read(structure, frame)
        calc = load_qmml_calculator(
            model,
            oracle=oracle,
            oracle_params=parse_key_values(oracle_param),
            trust_code=trust_code,
            qm_atoms=parse_indices(qm_atoms),
            r_core=r_core,
            r_buffer=r_buffer,
            groups=groups,
            capping=capping,
            body_order=body_order,
            device=device,
        )
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        part = calc.partition(atoms)
        typer.echo(
            f"energy {energy:.6f} eV; {len(part.groups)} switched groups, "
            f"{len(part.active_groups())} inside r_buffer, "
            f"{len(part.interface_atoms())} interface atoms"
        )
        if part.groups:
            report = diagnose(calc, atoms)
            typer.echo(
                f"ε_F RMS {report.force_mismatch_rms:.4f} eV/Å, max "
                f"{report.force_mismatch_max:.4f} eV/Å ({report.n_interface_atoms} atoms); "
                f"ΔE_max {report.energy_jump_max:.2e} eV"
            )
        if steps > 0:
            settings = {"steps": steps, "timestep_fs": timestep, "temperature_K": temperature}
            for name, md_calc in (("hybrid", calc), ("ML alone", calc.ml)):
                run = nve_drift(atoms, md_calc, seed=seed, **settings)
                typer.echo(
                    f"NVE {name}: drift {run.drift:+.4f} meV/atom/ps, max deviation "
                    f"{run.max_deviation:.4f} meV/atom"
                )
