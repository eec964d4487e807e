"""``mlpot boyle`` and ``mlpot torsion-fit``: second virial coefficients and Boyle
temperatures, and Bayesian torsion terms for classical force fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import (
    Device,
    OracleParams,
    Threads,
    TrustCode,
    exit_on_bad_input,
    parse_key_values,
    read_structures,
    use_resources,
)
from mlpot.errors import MlpotInputError

ModelPath = Annotated[
    Path | None, typer.Argument(metavar="[MODEL]", help="Energy model (model.pt).")
]
OracleInstead = Annotated[
    str | None,
    typer.Option("--oracle", metavar="NAME", help="Use this oracle instead of a model."),
]


def _calculator(
    model: Path | None, oracle: str | None, params: list[str] | None, trust: bool, device: str
):
    """The ASE calculator of ``model`` (on ``device``) or of ``oracle`` (exactly one)."""
    if (model is None) == (oracle is None):
        raise MlpotInputError("give a MODEL or --oracle NAME (one of them)", field="MODEL")
    if model is not None:
        from mlpot.calculators.ase_calculator import load_calculator

        return load_calculator(model, trust_code=trust, domain_scores=False, device=device)
    from mlpot.calculators.oracles import make_oracle

    return make_oracle(oracle, trust_code=trust, **parse_key_values(params))


def boyle(
    model: ModelPath = None,
    oracle: OracleInstead = None,
    oracle_param: OracleParams = None,
    element: Annotated[str, typer.Option(help="Atoms of the gas (pair potential).")] = "Ar",
    monomer: Annotated[
        Path | None, typer.Option(help="A rigid molecule (file) instead of atoms.")
    ] = None,
    orientations: Annotated[int, typer.Option(help="Orientations of molecules.", min=1)] = 32,
    r_min: Annotated[float, typer.Option(help="First distance, Å (closed core).")] = 2.7,
    r_max: Annotated[
        float | None, typer.Option(help="Last distance, Å (default: the model's cutoff).")
    ] = None,
    points: Annotated[int, typer.Option(help="Tabulated distances (geometric).", min=8)] = 400,
    c6: Annotated[
        float | None, typer.Option(help="-C6/r⁶ tail beyond --tail-start, eV Å⁶.")
    ] = None,
    fit_tail: Annotated[
        tuple[float, float] | None,
        typer.Option(help="Fit the -C6/r⁶ tail in this window (Å); it starts at its end."),
    ] = None,
    tail_start: Annotated[
        float | None, typer.Option(help="Start of a --c6 tail, Å (default: r_max).")
    ] = None,
    bracket: Annotated[
        tuple[float, float], typer.Option(help="Temperatures (K) bracketing T_B.")
    ] = (100.0, 1000.0),
    temperatures: Annotated[
        str | None, typer.Option(help="Comma-separated temperatures (K) for a B2 table.")
    ] = None,
    core_tolerance: Annotated[
        float, typer.Option(help="Largest <exp(-u/kT)> accepted at r_min.")
    ] = 1e-4,
    trust_code: TrustCode = False,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Compute second virial coefficients and the Boyle temperature.

    The interaction of two atoms (or two rigid molecules, averaged over orientations) is
    tabulated from r_min to r_max with MODEL or the oracle; below r_min the Mayer function
    is taken as -1 (checked), beyond r_max the interaction is zero unless a -C6/r⁶ tail is
    given (--c6) or fitted (--fit-tail).
    """
    import numpy as np

    from mlpot.apps import virial

    with exit_on_bad_input():
        use_resources(threads, device)
        calc = _calculator(model, oracle, oracle_param, trust_code, device)
        if r_max is None:
            if model is None:
                raise MlpotInputError("give --r-max with an oracle", field="--r-max")
            r_max = float(calc.model.cutoff)
        r = np.geomspace(r_min, r_max, points)  # denser where u changes fast
        if monomer is not None:
            molecule = read_structures(monomer, -1)
            curves = virial.dimer_curves(molecule, molecule, calc, r, orientations=orientations)
        else:
            curves = virial.pair_curves(calc, (element, element), r)
        tail = None
        if c6 is not None:
            tail = virial.DispersionTail(c6, tail_start or r_max)
        elif fit_tail is not None:
            tail = virial.fit_dispersion_tail(curves, fit_tail)
        t_boyle = virial.boyle_temperature(
            curves, bracket, tail=tail, core_tolerance=core_tolerance
        )
        typer.echo(f"Boyle temperature: {t_boyle:.2f} K")
        if tail is not None:
            typer.echo(f"tail: -C6/r^6 beyond {tail.start:.2f} Å, C6 = {tail.c6:.4g} eV Å^6")
        if temperatures:
            values = [float(t) for t in temperatures.split(",")]
            b2 = virial.second_virial(curves, values, tail=tail, core_tolerance=core_tolerance)
            typer.echo("   T/K    B2 (Å³)   B2 (cm³/mol)")
            for t, b in zip(values, b2, strict=True):
                typer.echo(f"{t:7.1f} {b:10.3f} {virial.to_cm3_per_mol(b):12.3f}")


def torsion_fit(
    molecule: Annotated[Path, typer.Argument(metavar="MOLECULE", help="Structure file.")],
    dihedral: Annotated[
        tuple[int, int, int, int], typer.Option(help="Atom indices i j k l (from 0).")
    ],
    model: Annotated[Path | None, typer.Option(help="Energy model (model.pt).")] = None,
    oracle: OracleInstead = None,
    oracle_param: OracleParams = None,
    step: Annotated[float, typer.Option(help="Scan step, degrees.")] = 15.0,
    fmax: Annotated[float, typer.Option(help="Relaxation convergence, eV/Å.")] = 0.01,
    periodicities: Annotated[str, typer.Option(help="Comma-separated n.")] = "1,2,3",
    free_phases: Annotated[
        bool, typer.Option("--free-phases", help="Fit sines too (phases not 0/180°).")
    ] = False,
    types: Annotated[tuple[str, str, str, str], typer.Option(help="Atom types for the files.")] = (
        "X",
        "X",
        "X",
        "X",
    ),
    gromacs: Annotated[Path | None, typer.Option(help="Write [ dihedraltypes ] here.")] = None,
    openmm: Annotated[Path | None, typer.Option(help="Write OpenMM XML here.")] = None,
    trust_code: TrustCode = False,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Fit Bayesian Fourier torsion terms to a relaxed dihedral scan.

    The dihedral is scanned over 360° in --step increments with everything else relaxed
    (MODEL or the oracle); energies and slopes dE/dφ are fitted by Bayesian linear
    regression, hyper-parameters by evidence maximisation. Prints the posterior means and
    stds (kJ/mol) and writes GROMACS and/or OpenMM files.
    """
    import numpy as np

    from mlpot.apps.torsion import fit_torsion
    from mlpot.apps.torsion_forcefield import (
        KJ_PER_MOL_PER_EV,
        gromacs_dihedraltypes,
        openmm_xml,
    )
    from mlpot.apps.torsion_scan import relaxed_scan

    with exit_on_bad_input():
        use_resources(threads, device)
        if not 0 < step <= 90:
            raise MlpotInputError(f"step must be in (0, 90] degrees, got {step}", field="--step")
        calc = _calculator(model, oracle, oracle_param, trust_code, device)
        atoms = read_structures(molecule, -1)
        scan = relaxed_scan(atoms, calc, dihedral, np.arange(0.0, 360.0, step), fmax=fmax)
        fit = fit_torsion(
            scan,
            periodicities=[int(n) for n in periodicities.split(",")],
            symmetric=not free_phases,
        )
        typer.echo(
            f"{len(scan.angles)} angles, {int(scan.converged.sum())} converged; noise "
            f"{fit.noise_energy * KJ_PER_MOL_PER_EV:.4f} kJ/mol"
        )
        for term in fit.terms():
            typer.echo(
                f"n={term.periodicity}  k = {term.k * KJ_PER_MOL_PER_EV:.4f} ± "
                f"{term.k_std * KJ_PER_MOL_PER_EV:.4f} kJ/mol  phase {term.phase:.1f}°"
            )
        if gromacs is not None:
            gromacs_dihedraltypes(fit.terms(), types, gromacs)
            typer.echo(f"wrote {gromacs}")
        if openmm is not None:
            openmm_xml(fit.terms(), types, openmm)
            typer.echo(f"wrote {openmm}")
