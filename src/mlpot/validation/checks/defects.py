"""Point defects of an elemental crystal: vacancy and interstitial formation energies.

``E_f(vacancy) = E_defect - (N-1) E_bulk/N`` and ``E_f(interstitial) = E_defect - (N+1)
E_bulk/N``, each structure relaxed (positions only, the cell of the system kept) with the
model and, separately, with the oracle. The interstitial starts at the point of the cell
farthest from every atom (the octahedral site of fcc).
"""

from __future__ import annotations

import numpy as np
from ase import Atom, Atoms
from ase.geometry import get_distances

from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "defects"
GRID = 16  # points along each cell vector searched for the interstitial site


def vacancy(bulk: Atoms) -> Atoms:
    """The bulk structure without atom 0."""
    atoms = bulk.copy()
    del atoms[0]
    return atoms


def largest_void(atoms: Atoms, grid: int = GRID) -> np.ndarray:
    """Cartesian point of a ``grid³`` fractional grid farthest from all atoms (images too).

    The grid includes the fractions 0, 1/4, 1/2, 3/4 (``grid`` a multiple of 4), where the
    high-symmetry voids of cubic cells lie.
    """
    axis = np.arange(grid) / grid
    fractional = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    points = fractional @ atoms.cell.array  # (P, 3)
    _, distances = get_distances(points, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return points[int(np.argmax(distances.min(axis=1)))]


def interstitial(bulk: Atoms) -> Atoms:
    """The bulk structure with one more atom of its element in its largest void."""
    atoms = bulk.copy()
    atoms.append(Atom(int(bulk.numbers[0]), largest_void(bulk)))
    return atoms


def formation_energies(ctx: ValidationContext, which: str) -> dict[str, float]:
    """Vacancy and interstitial formation energies with ``which``'s calculator, eV."""
    bulk = ctx.relaxed("bulk", ctx.system.atoms, which)
    n_atoms = len(bulk.atoms)
    vac = ctx.relaxed("vacancy", vacancy(ctx.system.atoms), which)
    inter = ctx.relaxed("interstitial", interstitial(ctx.system.atoms), which)
    return {
        "vacancy": vac.energy - (n_atoms - 1) * bulk.energy / n_atoms,
        "interstitial": inter.energy - (n_atoms + 1) * bulk.energy / n_atoms,
        "converged": float(bulk.converged and vac.converged and inter.converged),
    }


def run(ctx: ValidationContext) -> CheckResult:
    tol = ctx.tolerances.defect_energy
    model, oracle = formation_energies(ctx, MODEL), formation_energies(ctx, ORACLE)
    figures: dict[str, float] = {}
    tolerance: dict[str, Bound] = {}
    for kind in ("vacancy", "interstitial"):
        figures[f"{kind}_model_eV"] = model[kind]
        figures[f"{kind}_oracle_eV"] = oracle[kind]
        figures[f"{kind}_error_eV"] = model[kind] - oracle[kind]
        tolerance[f"{kind}_error_eV"] = Bound(tol, -tol, "eV")
    details = {
        "relaxations_converged": {
            "model": bool(model["converged"]),
            "oracle": bool(oracle["converged"]),
        },
        "interstitial_site_A": largest_void(ctx.system.atoms),
        "cell": "the system's cell, positions relaxed",
    }
    return judged(NAME, figures, tolerance, details)
