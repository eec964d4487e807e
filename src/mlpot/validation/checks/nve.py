"""NVE: energy drift (meV/atom/ps) and fluctuation of velocity-Verlet MD with the model.

The run starts from the end of the model's Langevin run (thermalised at the target
temperature). The drift is the slope of a straight line fitted to the total energy per atom;
the fluctuation is the standard deviation about that line, judged relative to the standard
deviation of the kinetic energy (the part of the energy exchange the integrator resolves).
"""

from __future__ import annotations

import numpy as np
from ase.units import kB

from mlpot.validation.context import MODEL, ValidationContext
from mlpot.validation.md import run_nve
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "nve"
MAX_POINTS = 2000  # points of the drift curve kept for the plot


def run(ctx: ValidationContext) -> CheckResult:
    s, tol = ctx.settings, ctx.tolerances
    start = ctx.nvt(MODEL).final
    nve = run_nve(
        start,
        ctx.calculator(MODEL),
        timestep_fs=s.timestep_fs,
        steps=s.nve_steps,
        max_temperature=s.max_temperature_factor * ctx.temperature_K,
        label="model NVE",
        progress=ctx.progress,
    )
    n_atoms = len(start)
    time_ps = nve.time_fs * 1e-3
    total = (nve.total_eV - nve.total_eV[0]) / n_atoms * 1e3  # (T,) meV/atom
    slope, intercept = np.polyfit(time_ps, total, 1)  # meV/atom/ps, meV/atom
    fluctuation = float(np.std(total - (slope * time_ps + intercept)))
    kinetic_std = float(np.std(nve.kinetic_eV / n_atoms * 1e3))
    figures = {
        "drift_meV_per_atom_per_ps": float(slope),
        "fluctuation_meV_per_atom": fluctuation,
        "fluctuation_ratio": fluctuation / kinetic_std if kinetic_std > 0 else float("nan"),
        "timestep_fs": s.timestep_fs,
        "duration_ps": float(time_ps[-1]),
        "mean_temperature_K": float(np.mean(nve.kinetic_eV) * 2 / (3 * n_atoms * kB)),
    }
    tolerance = {
        "drift_meV_per_atom_per_ps": Bound(tol.nve_drift, -tol.nve_drift, "meV/atom/ps"),
        "fluctuation_ratio": Bound(tol.nve_fluctuation),
    }
    stride = max(1, len(time_ps) // MAX_POINTS)
    details = {
        "time_fs": nve.time_fs[::stride],
        "total_meV_per_atom": total[::stride],
        "potential_meV_per_atom": ((nve.potential_eV - nve.potential_eV[0]) / n_atoms * 1e3)[
            ::stride
        ],
        "fit": [float(slope), float(intercept)],
    }
    return judged(NAME, figures, tolerance, details)
