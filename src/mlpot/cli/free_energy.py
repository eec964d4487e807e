"""``mlpot free-energy`` (umbrella sampling + MBAR, reweighted to the oracle) and
``mlpot pimd`` (path-integral MD through i-PI)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from mlpot.cli.options import (
    Device,
    Threads,
    exit_on_bad_input,
    parse_key_values,
    read_structures,
    use_resources,
)
from mlpot.errors import MlpotInputError

Model = Annotated[Path, typer.Argument(metavar="MODEL", help="Energy model (model.pt).")]
Structure = Annotated[
    Path, typer.Argument(metavar="STRUCTURE", help="Starting structure (any ASE format).")
]


def _model_calculator(model: Path, trust_code: bool, device: str = "cpu"):
    """The calculator of ``model`` on ``device`` (picklable as a partial: it travels to
    the worker processes of free-energy windows)."""
    from mlpot.calculators.ase_calculator import load_calculator

    if not model.is_file():
        raise MlpotInputError("file not found", source=str(model))
    return load_calculator(model, trust_code=trust_code, force_uncertainty=False,
                           domain_scores=False, device=device)  # fmt: skip


def free_energy(
    model: Model,
    structure: Structure,
    cv: Annotated[
        str,
        typer.Option(
            help="kind:i,j[,k[,l]] (0-based): distance, angle, dihedral, distance-difference."
        ),
    ],
    start: Annotated[float, typer.Option("--from", help="First window centre (Å or rad).")],
    stop: Annotated[float, typer.Option("--to", help="Last window centre (Å or rad).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory.")],
    windows: Annotated[int, typer.Option(help="Umbrella windows.", min=2)] = 16,
    k: Annotated[float, typer.Option(help="Force constant, eV/Å² or eV/rad².")] = 5.0,
    temperature: Annotated[float, typer.Option(help="Temperature, K.")] = 300.0,
    steps: Annotated[int, typer.Option(help="Production steps per window.")] = 4000,
    equilibration: Annotated[int, typer.Option(help="Equilibration steps per window.")] = 500,
    timestep: Annotated[float, typer.Option(help="Time step, fs.")] = 0.5,
    bins: Annotated[int, typer.Option(help="PMF histogram bins.")] = 40,
    frame_every: Annotated[
        int, typer.Option(help="Store a structure every N steps (frames for reweighting).")
    ] = 20,
    workers: Annotated[int, typer.Option(help="Windows run in parallel processes.")] = 1,
    oracle: Annotated[
        str | None, typer.Option(help="Reweight to this oracle (emt, xtb, lj, pyscf).")
    ] = None,
    oracle_param: Annotated[
        list[str] | None, typer.Option(help="Oracle parameter key=value (repeatable).")
    ] = None,
    reweight: Annotated[int, typer.Option(help="Frames labelled by the oracle.")] = 100,
    min_effective_samples: Annotated[
        float, typer.Option(help="Refuse the reweighting below this effective sample size.")
    ] = 20.0,
    seed: Annotated[int, typer.Option(help="Seed of the thermostats.")] = 0,
    trust_code: Annotated[
        bool, typer.Option(help="Allow a checkpoint whose baseline names code.")
    ] = False,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Compute a free-energy profile by umbrella sampling and MBAR.

    Windows of harmonic restraints from --from to --to run Langevin MD with MODEL (resumed
    when OUTPUT holds the same run); MBAR (pymbar) gives the PMF with its uncertainty and
    the windows' overlap. With --oracle, --reweight frames are labelled by the oracle and
    the PMF is reweighted to it (refused when the effective sample size is too small).
    Writes pmf.csv/json (and pmf_oracle.csv/json, reweighting.json) in OUTPUT.
    """
    from mlpot.apps.colvars import parse_cv
    from mlpot.apps.mbar import umbrella_pmf
    from mlpot.apps.umbrella import UmbrellaPlan, run_umbrella

    with exit_on_bad_input():
        use_resources(threads, device)
        atoms = read_structures(structure, 0)
        plan = UmbrellaPlan.evenly(
            parse_cv(cv), start, stop, windows, k=k, temperature_K=temperature,
            timestep_fs=timestep, equilibration_steps=equilibration, steps=steps, seed=seed,
            frame_every=frame_every,
        )  # fmt: skip
        oracle_calc = _oracle(oracle, oracle_param) if oracle else None
        if not model.is_file():
            raise MlpotInputError("file not found", source=str(model))
        potential = partial(_model_calculator, model, trust_code, device)
        run = run_umbrella(potential, atoms, plan, output, workers=workers)
        pmf = umbrella_pmf(run, bins=bins)
    pmf.write_csv(output / "pmf.csv")
    pmf.write_json(output / "pmf.json")
    d = pmf.diagnostics
    typer.echo(
        f"PMF of {pmf.cv_name} at {temperature:g} K: {len(pmf.cv)} bins, range "
        f"{pmf.free_energy.max():.3f} eV; smallest neighbour overlap "
        f"{d['min_neighbour_overlap']:.3f}"
        + ("" if d["overlap_ok"] else " (too small: add windows or lower k)")  # fmt: skip
    )
    if oracle_calc is not None:
        _reweight(run, pmf, oracle_calc, reweight, min_effective_samples, output)
    typer.echo(f"wrote {output / 'pmf.csv'}")


def _oracle(name: str, params: list[str] | None):
    from mlpot.calculators.oracles import make_oracle

    return make_oracle(name, **parse_key_values(params))


def _reweight(run, pmf, oracle, frames: int, min_effective: float, output: Path) -> None:
    from mlpot.apps.reweight import ReweightingUnreliable, reweight_to_oracle

    try:
        result = reweight_to_oracle(run, pmf, oracle, max_frames=frames,
                                    min_effective_samples=min_effective)  # fmt: skip
    except ReweightingUnreliable as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(3) from None
    result.reference.write_csv(output / "pmf_oracle.csv")
    result.reference.write_json(output / "pmf_oracle.json")
    (output / "reweighting.json").write_text(json.dumps(result.summary, indent=1))
    s = result.summary
    typer.echo(
        f"reweighted to the oracle: {s['effective_samples']:.0f} effective samples of "
        f"{s['frames']} frames; ΔE spread {s['delta_energy_std_kT']:.2f} kT; "
        f"wrote {output / 'pmf_oracle.csv'}"
    )


def pimd(
    model: Model,
    structure: Structure,
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory.")],
    beads: Annotated[int, typer.Option(help="Ring-polymer beads.", min=1)] = 16,
    temperature: Annotated[float, typer.Option(help="Temperature, K.")] = 300.0,
    steps: Annotated[int, typer.Option(help="Production steps.")] = 2000,
    equilibration: Annotated[int, typer.Option(help="Equilibration steps.")] = 200,
    timestep: Annotated[float, typer.Option(help="Time step, fs.")] = 0.25,
    thermostat: Annotated[str, typer.Option(help="pile_l or pile_g.")] = "pile_l",
    tau: Annotated[float, typer.Option(help="Centroid thermostat time, fs.")] = 100.0,
    mass: Annotated[
        list[str] | None,
        typer.Option(help="Isotope: INDEX=MASS in amu, e.g. 5=2.014 (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of i-PI's random numbers.")] = 12345,
    trust_code: Annotated[
        bool, typer.Option(help="Allow a checkpoint whose baseline names code.")
    ] = False,
    threads: Threads = None,
    device: Device = "cpu",
) -> None:
    """Run path-integral MD through i-PI (nuclear quantum effects).

    i-PI integrates the ring polymer (PILE thermostat); MODEL gives the forces on each
    bead. Prints per atom the centroid-virial quantum kinetic energy (and its ratio to
    the classical 3kT/2) and the radius of gyration; writes pimd.json in OUTPUT. A killed
    run resumes from OUTPUT.
    """
    from mlpot.apps.pimd import PIMDSettings, run_pimd

    with exit_on_bad_input():
        use_resources(threads, device)
        atoms = read_structures(structure, 0)
        masses = atoms.get_masses()
        for index, value in parse_key_values(mass, option="--mass").items():
            if not str(index).isdigit() or not 0 <= int(index) < len(atoms):
                raise MlpotInputError(f"no atom {index}", field="--mass")
            masses[int(index)] = float(value)
        settings = PIMDSettings(
            beads=beads, temperature_K=temperature, timestep_fs=timestep, steps=steps,
            equilibration_steps=equilibration, thermostat=thermostat, tau_fs=tau, seed=seed,
        )  # fmt: skip
        result = run_pimd(_model_calculator(model, trust_code, device), atoms, settings,
                          output, masses=masses)  # fmt: skip
    summary = result.summary()
    (output / "pimd.json").write_text(json.dumps(summary, indent=1))
    typer.echo(f"{'atom':>5} {'mass':>7} {'K (eV)':>14} {'K/K_cl':>7} {'R_g (Å)':>14}")
    for a in summary["atoms"]:
        typer.echo(
            f"{a['index']:>3} {a['symbol']:<2}{a['mass_amu']:>6.3f} "
            f"{a['kinetic_energy_eV']:.4f}±{a['kinetic_energy_error_eV']:.4f} "
            f"{a['kinetic_over_classical']:>6.2f} "
            f"{a['gyration_radius_A']:.4f}±{a['gyration_radius_error_A']:.4f}"
        )
    typer.echo(f"wrote {output / 'pimd.json'}")
