"""Elastic constants from stress-strain finite differences of the analytic stress.

``C_ij = (σ_i(+δ e_j) - σ_i(-δ e_j)) / 2δ`` in Voigt notation (engineering shear strain),
positions relaxed at each strain (relaxed-ion constants), the cell of the system as the
reference. ASE's sign: positive stress is tensile, so ``C`` is positive definite for a
stable crystal. Needs the oracle's stress.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.units import GPa

from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "elastic"


def voigt_strain(j: int, amount: float) -> np.ndarray:
    """Symmetric strain ``(3, 3)`` of Voigt component ``j`` (xx, yy, zz, yz, xz, xy)."""
    pairs = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    a, b = pairs[j]
    strain = np.zeros((3, 3))
    if a == b:
        strain[a, a] = amount
    else:  # engineering shear strain γ = 2 ε_ab
        strain[a, b] = strain[b, a] = 0.5 * amount
    return strain


def strained(atoms: Atoms, strain: np.ndarray) -> Atoms:
    """``atoms`` with cell and positions deformed by ``1 + strain``."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return out


def elastic_matrix(ctx: ValidationContext, which: str) -> np.ndarray:
    """The 6×6 relaxed-ion elastic matrix of ``which``, GPa."""
    delta = ctx.settings.strain
    matrix = np.zeros((6, 6))
    for j in range(6):
        stresses = []
        for sign in (1.0, -1.0):
            relaxed = ctx.relax(strained(ctx.system.atoms, voigt_strain(j, sign * delta)), which)
            atoms = relaxed.atoms
            atoms.calc = ctx.calculator(which)
            stresses.append(atoms.get_stress())  # Voigt, eV/Å³
        matrix[:, j] = (stresses[0] - stresses[1]) / (2.0 * delta) / GPa
    return matrix


def cubic_averages(c: np.ndarray) -> dict[str, float]:
    """``C11``, ``C12``, ``C44`` averaged over the cubic-equivalent entries, GPa."""
    return {
        "C11": float(np.mean(np.diag(c)[:3])),
        "C12": float(np.mean([c[0, 1], c[0, 2], c[1, 2], c[1, 0], c[2, 0], c[2, 1]])),
        "C44": float(np.mean(np.diag(c)[3:])),
    }


def run(ctx: ValidationContext) -> CheckResult:
    model, oracle = elastic_matrix(ctx, MODEL), elastic_matrix(ctx, ORACLE)
    scale = float(np.max(np.abs(oracle)))
    error = float(np.max(np.abs(model - oracle)))
    figures: dict[str, float] = {
        "max_error_GPa": error,
        "relative_error": error / scale if scale > 0 else float("nan"),
    }
    for label, matrix in ((MODEL, model), (ORACLE, oracle)):
        for key, value in cubic_averages(matrix).items():
            figures[f"{key}_{label}_GPa"] = value
    tolerance = {"relative_error": Bound(ctx.tolerances.elastic_relative)}
    details = {
        "model_GPa": model,
        "oracle_GPa": oracle,
        "note": "C11, C12, C44 are cubic averages; full matrices in details",
    }
    return judged(NAME, figures, tolerance, details)
