"""The checks: one module each, listed in :data:`CHECKS` in the order they run.

Each check is ``run(ctx) -> CheckResult``. :func:`not_applicable` says why a check does not
fit a system (it is then skipped with that reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlpot.validation.checks import (
    accuracy,
    defects,
    dimers,
    elastic,
    eos,
    infrared,
    neb,
    nve,
    nvt,
    rdf,
    vibrations,
)
from mlpot.validation.context import ValidationContext
from mlpot.validation.result import CheckResult


@dataclass(frozen=True)
class Check:
    """A named check.

    Attributes:
        name: its name in reports and in ``checks=[...]``.
        run: the check.
        title: a heading for the report.
        crystal: needs a 3D-periodic system.
        elemental: needs a single element (formation energies without chemical potentials).
        oracle_stress: needs the oracle's stress.
        min_atoms: needs at least this many atoms (a defect needs a supercell).
    """

    name: str
    run: Callable[[ValidationContext], CheckResult]
    title: str
    crystal: bool = False
    elemental: bool = False
    oracle_stress: bool = False
    min_atoms: int = 1


DEFECT = {"crystal": True, "elemental": True, "min_atoms": 8}

CHECKS: dict[str, Check] = {
    c.name: c
    for c in (
        Check(accuracy.NAME, accuracy.run, "Errors on thermal structures, against kT", min_atoms=2),
        Check(nvt.NAME, nvt.run, "NVT temperature against the canonical ensemble", min_atoms=2),
        Check(nve.NAME, nve.run, "NVE energy conservation", min_atoms=2),
        Check(rdf.NAME, rdf.run, "Radial distribution functions", min_atoms=2),
        Check(defects.NAME, defects.run, "Point-defect formation energies", **DEFECT),
        Check(neb.NAME, neb.run, "Vacancy migration barrier (climbing-image NEB)", **DEFECT),
        Check(vibrations.NAME, vibrations.run, "Vibrational frequencies", min_atoms=2),
        Check(infrared.NAME, infrared.run, "Harmonic IR intensities", min_atoms=2),
        Check(elastic.NAME, elastic.run, "Elastic constants", True, oracle_stress=True),
        Check(eos.NAME, eos.run, "Equation of state and bulk modulus", True),
        Check(dimers.NAME, dimers.run, "Dimer curves: short-range repulsion"),
    )
}


def not_applicable(check: Check, ctx: ValidationContext) -> str | None:
    """Why ``check`` does not fit this system and oracle, or None when it does."""
    system = ctx.system
    if check.crystal and not system.is_crystal:
        return f"needs a 3D-periodic crystal; {system.name} is a {system.kind}"
    if check.elemental and not system.is_elemental:
        return "formation energies of compounds need chemical potentials; elemental only"
    if len(system.atoms) < check.min_atoms:
        return f"needs at least {check.min_atoms} atoms; {system.name} has {len(system.atoms)}"
    if check.oracle_stress and not ctx.oracle.has_stress:
        return f"oracle {ctx.oracle.name} cannot compute stress"
    if check.name == infrared.NAME and infrared.not_applicable(ctx) is not None:
        return infrared.not_applicable(ctx)
    if check.name in (vibrations.NAME, infrared.NAME) and (
        len(system.atoms) > ctx.settings.vib_max_atoms
    ):
        return (
            f"{len(system.atoms)} atoms: more than vib_max_atoms = {ctx.settings.vib_max_atoms}"
            " for a finite-difference Hessian"
        )
    return None
