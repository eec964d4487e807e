"""Short-range sanity: the dimer curve of every element pair of the system, in vacuum.

Distances run from half the sum of the covalent radii to the model's cutoff. The model must

* be repulsive at the shortest distance: ``E(r_min) - E(∞) ≥ dimer_wall`` (``E(∞)`` is the
  energy of the two atoms beyond the cutoff, i.e. the isolated atoms);
* have no holes: at distances below the oracle's minimum (or the model's own, if the oracle
  cannot do dimers) the model's force must push the atoms apart. A hole is a distance where
  ``dE/dr > 0.05 eV/Å`` there.

The oracle's curves are drawn for comparison; an oracle that fails on a dimer (an SCF that
does not converge) leaves gaps, not a failure.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.data import chemical_symbols, covalent_radii

from mlpot.validation.context import MODEL, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "dimers"
SLOPE = 0.05  # eV/Å: attractive slope that counts as a hole
BOX = 20.0  # Å, vacuum box of the dimers (free boundary conditions)


def dimer(z1: int, z2: int, distance: float) -> Atoms:
    """Two atoms ``distance`` Å apart in a free box."""
    atoms = Atoms(numbers=[z1, z2], positions=[[0, 0, 0], [distance, 0, 0]], cell=[BOX] * 3)
    atoms.center()
    atoms.pbc = False
    return atoms


def curve(factory: Callable[[], BaseCalculator], z1: int, z2: int, distances) -> np.ndarray:
    """Energies (eV) at ``distances``, NaN where the calculator fails.

    Distances are visited from far to near (each SCF starts from a converged neighbour);
    after a failure the calculator is replaced by a fresh one, since a failed SCF can leave
    a calculator in a state that fails every later call.
    """
    calc = factory()
    energies = np.full(len(distances), np.nan)
    for k in np.argsort(distances)[::-1]:
        atoms = dimer(z1, z2, float(distances[k]))
        atoms.calc = calc
        try:
            energies[k] = float(atoms.get_potential_energy())
        except Exception:  # noqa: BLE001 - an oracle failing on one dimer leaves a gap
            calc = factory()
    return energies


def pair_figures(r: np.ndarray, model: np.ndarray, far: float, oracle: np.ndarray) -> dict:
    """Wall height (eV), equilibrium distance used (Å) and holes of one pair."""
    finite = np.isfinite(oracle)
    r_eq = float(r[np.nanargmin(oracle)]) if finite.sum() > 3 else float(r[np.argmin(model)])
    slope = np.gradient(model, r)  # (R,) eV/Å
    inner = r < 0.95 * r_eq
    holes = inner & (slope > SLOPE)
    return {
        "wall_eV": float(model[0] - far),
        "r_eq_A": r_eq,
        "hole_points": int(holes.sum()),
        "max_inner_slope_eV_per_A": float(slope[inner].max()) if inner.any() else float("nan"),
    }


def run(ctx: ValidationContext) -> CheckResult:
    numbers = sorted(set(ctx.system.atoms.numbers.tolist()))
    cutoff = ctx.model.cutoff
    model_calc = partial(ctx.calculator, MODEL)
    figures: dict[str, float] = {}
    curves = {}
    walls, holes = [], 0
    for z1, z2 in itertools.combinations_with_replacement(numbers, 2):
        label = f"{chemical_symbols[z1]}-{chemical_symbols[z2]}"
        r_min = 0.5 * (covalent_radii[z1] + covalent_radii[z2])
        r = np.linspace(r_min, cutoff, ctx.settings.dimer_points)
        model = curve(model_calc, z1, z2, r)
        far = float(curve(model_calc, z1, z2, np.array([cutoff + 1.0]))[0])
        oracle = curve(ctx.oracle.fresh, z1, z2, r)
        oracle_far = curve(ctx.oracle.fresh, z1, z2, np.array([max(cutoff + 1.0, 8.0)]))[0]
        if not np.isfinite(oracle_far) and np.isfinite(oracle).any():  # shift for the plot
            oracle_far = oracle[np.isfinite(oracle)][-1]
        pair = pair_figures(r, model, far, oracle)
        for key, value in pair.items():
            figures[f"{label}_{key}"] = value
        walls.append(pair["wall_eV"])
        holes += pair["hole_points"]
        curves[label] = {
            "r_A": r,
            "model_eV": model - far,
            "oracle_eV": oracle - oracle_far,
            "r_eq_A": pair["r_eq_A"],
        }
    figures["min_wall_eV"] = min(walls)
    figures["hole_points"] = holes
    tolerance = {
        "min_wall_eV": Bound(lower=ctx.tolerances.dimer_wall, unit="eV"),
        "hole_points": Bound(0, unit="points"),
    }
    return judged(NAME, figures, tolerance, {"curves": curves})
