"""Harmonic frequencies: the model's autograd Hessian against the oracle's finite differences.

Each calculator's structure is relaxed first (its own minimum). The oracle Hessian comes
from ASE's :class:`~ase.vibrations.Vibrations` (central differences of ``vib_delta`` Å); the
model's from :func:`mlpot.validation.hessian.model_hessian`. Both are diagonalised by ASE's
:class:`~ase.vibrations.VibrationsData`. Rigid-body modes are dropped, the rest are compared
in sorted order. For a crystal the frequencies are those of the Γ point of the cell.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.vibrations import VibrationsData

from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.hessian import (
    finite_difference_hessian,
    model_hessian,
    vibrational_frequencies,
)
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "vibrations"
FLOOR = 50.0  # cm⁻¹: modes softer than this are left out of the relative error
IMAGINARY = 20.0  # cm⁻¹: imaginary modes weaker than this count as numerical noise


def oracle_hessian(ctx: ValidationContext, atoms: Atoms) -> np.ndarray:
    """The oracle's finite-difference Hessian at its minimum ``atoms``, computed once per
    validation (the infrared check uses it too)."""
    calc, delta = ctx.calculator(ORACLE), ctx.settings.vib_delta
    return ctx.cached("hessian/oracle", lambda: finite_difference_hessian(atoms, calc, delta))


def model_hessian_at(ctx: ValidationContext, atoms: Atoms) -> np.ndarray:
    """The model's autograd Hessian at its minimum ``atoms`` (plus, for a delta-learned
    model, its baseline's finite-difference Hessian), computed once per validation."""

    def compute() -> np.ndarray:
        hessian = model_hessian(ctx.model, atoms)
        baseline = ctx.baseline_calculator()
        if baseline is not None:
            hessian = hessian + finite_difference_hessian(atoms, baseline, ctx.settings.vib_delta)
        return hessian

    return ctx.cached("hessian/model", compute)


def _frequencies(atoms: Atoms, hessian: np.ndarray) -> np.ndarray:
    return vibrational_frequencies(VibrationsData.from_2d(atoms, hessian), atoms)


def run(ctx: ValidationContext) -> CheckResult:
    model_atoms = ctx.relaxed("minimum", ctx.system.atoms, MODEL).atoms
    oracle_atoms = ctx.relaxed("minimum", ctx.system.atoms, ORACLE).atoms
    model = _frequencies(model_atoms, model_hessian_at(ctx, model_atoms))
    oracle = _frequencies(oracle_atoms, oracle_hessian(ctx, oracle_atoms))
    stiff = oracle >= FLOOR
    relative = np.abs(model[stiff] - oracle[stiff]) / oracle[stiff]
    imaginary = {k: int(np.sum(f < -IMAGINARY)) for k, f in ((MODEL, model), (ORACLE, oracle))}
    figures = {
        "mean_relative_error": float(np.mean(relative)) if relative.size else float("nan"),
        "mae_cm1": float(np.mean(np.abs(model - oracle))),
        "max_error_cm1": float(np.max(np.abs(model - oracle))),
        "highest_model_cm1": float(model.max()),
        "highest_oracle_cm1": float(oracle.max()),
        "imaginary_modes_model": imaginary[MODEL],
        "imaginary_modes_oracle": imaginary[ORACLE],
        "extra_imaginary_modes": max(0, imaginary[MODEL] - imaginary[ORACLE]),
        "modes_compared": int(stiff.sum()),
    }
    tolerance = {
        "mean_relative_error": Bound(ctx.tolerances.frequency_relative),
        "extra_imaginary_modes": Bound(0, unit="modes"),
    }
    details = {
        "model_cm1": model,
        "oracle_cm1": oracle,
        "note": f"relative error over modes ≥ {FLOOR:g} cm⁻¹; imaginary shown negative",
    }
    return judged(NAME, figures, tolerance, details)
