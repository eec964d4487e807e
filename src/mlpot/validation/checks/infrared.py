"""Harmonic IR intensities of a molecule: the model's (autograd Hessian at its own minimum,
a learned dipole model) against the oracle's (finite-difference Hessian and dipole
derivatives at the oracle's minimum, as ASE's ``Infrared`` computes them).

Bands are paired in order of frequency (the vibrations check judges the frequencies) and
grouped where the oracle's lie within ``RESOLUTION`` of each other: near-degenerate modes
(e.g. water's two O-H stretches, 8 cm⁻¹ apart) mix differently under small Hessian
differences, and a spectrum resolves only their sum. Group intensities are compared
relative to each spectrum's strongest group, over the oracle's groups above a tenth of it.
Runs when the validation is given a dipole model (``response``), the system is a molecule
and the oracle gives dipoles.
"""

from __future__ import annotations

import numpy as np

from mlpot.validation.checks.vibrations import model_hessian_at, oracle_hessian
from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged
from mlpot.validation.spectra import harmonic_ir

NAME = "infrared"
STRONG = 0.1  # groups above this fraction of the strongest are compared
RESOLUTION = 25.0  # cm⁻¹: oracle bands closer than this form one group


def groups(frequencies: np.ndarray) -> list[list[int]]:
    """Indices of ascending ``frequencies`` in runs whose neighbours lie within
    ``RESOLUTION`` cm⁻¹."""
    out = [[0]]
    for k in range(1, len(frequencies)):
        if frequencies[k] - frequencies[k - 1] <= RESOLUTION:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def not_applicable(ctx: ValidationContext) -> str | None:
    """Why the check does not fit, or None."""
    if ctx.response is None or getattr(ctx.response, "kind", None) != "dipole":
        return "needs a dipole model (response)"
    if ctx.baseline is not None:
        return "a delta-learned model's Hessian needs its baseline's; not supported yet"
    if ctx.system.atoms.pbc.any():
        return "needs a molecule (a periodic cell's dipole is defined modulo a quantum)"
    if "dipole" not in getattr(ctx.oracle.calc, "implemented_properties", []):
        return f"oracle {ctx.oracle.name} gives no dipole"
    return None


def run(ctx: ValidationContext) -> CheckResult:
    model_atoms = ctx.relaxed("minimum", ctx.system.atoms, MODEL).atoms
    oracle_atoms = ctx.relaxed("minimum", ctx.system.atoms, ORACLE).atoms
    oracle, delta = ctx.calculator(ORACLE), ctx.settings.vib_delta
    # the Hessians are the vibrations check's (computed once per validation)
    model = harmonic_ir(model_atoms, model_hessian_at(ctx, model_atoms), ctx.response)
    reference = harmonic_ir(oracle_atoms, oracle_hessian(ctx, oracle_atoms), oracle, delta=delta)
    bands = groups(reference.frequencies)
    ref = np.array([reference.intensities[g].sum() for g in bands])
    got = np.array([model.intensities[g].sum() for g in bands])
    ref, got = ref / ref.max(), got / got.max()
    strong = ref > STRONG
    errors = np.abs(got[strong] - ref[strong]) / ref[strong]
    figures = {
        "max_relative_error": float(errors.max()),
        "median_relative_error": float(np.median(errors)),
        "bands_compared": int(strong.sum()),
        "modes_grouped": int(len(reference.frequencies) - len(bands)),
    }
    tolerance = {"max_relative_error": Bound(ctx.tolerances.ir_relative)}
    details = {
        "model_cm1": model.frequencies,
        "oracle_cm1": reference.frequencies,
        "model_relative_intensity": got,
        "oracle_relative_intensity": ref,
        "note": (
            f"groups of bands within {RESOLUTION:g} cm⁻¹, those above {STRONG:g} of the "
            "strongest; paired in order of frequency"
        ),
    }
    return judged(NAME, figures, tolerance, details)
