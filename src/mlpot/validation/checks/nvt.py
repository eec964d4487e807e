"""NVT: mean and variance of the kinetic temperature against the canonical expectation.

With all ``3N`` degrees of freedom thermalised (Langevin, no centre-of-mass constraint) the
canonical kinetic temperature has mean ``T`` and variance ``2T²/(3N)``. Both sample
estimates are compared with these values in units of their standard errors, which come from
the integrated autocorrelation time of the series (Sokal's automatic window), bounded below
by ``1/γ``: the total energy exchanges with the Langevin bath on that time scale, which a
short run cannot resolve from its own data. A short run is thus judged as leniently as its
statistics demand, and no more.
"""

from __future__ import annotations

import numpy as np

from mlpot.validation.context import MODEL, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "nvt"
MAX_POINTS = 2000


def autocorrelation_time(x: np.ndarray, window: float = 5.0) -> float:
    """Integrated autocorrelation time of ``x`` in steps (1 for uncorrelated samples)."""
    x = np.asarray(x, dtype=float) - np.mean(x)
    n = len(x)
    if n < 4 or not np.any(x):
        return 1.0
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    rho = acf / acf[0]
    tau = 1.0
    for m in range(1, n):
        tau += 2.0 * rho[m]
        if m >= window * tau:
            break
    return max(tau, 1.0)


def standard_error(x: np.ndarray, min_tau: float = 1.0) -> tuple[float, float]:
    """Standard error of the mean of a correlated series, and its autocorrelation time in
    steps (at least ``min_tau``)."""
    tau = max(autocorrelation_time(x), min_tau)
    return float(np.std(x, ddof=1) * np.sqrt(tau / len(x))), tau


def run(ctx: ValidationContext) -> CheckResult:
    md = ctx.nvt(MODEL)
    temperature = md.temperature_K  # (T,) K
    target = ctx.temperature_K
    n_dof = 3 * len(ctx.system.atoms)
    expected_variance = 2.0 * target**2 / n_dof
    mean = float(np.mean(temperature))
    squared = (temperature - mean) ** 2
    variance = float(np.mean(squared))
    s = ctx.settings
    bath_steps = 1.0 / (s.friction_per_fs * s.timestep_fs)  # 1/γ in steps
    se_mean, tau = standard_error(temperature, bath_steps)
    se_variance, tau_variance = standard_error(squared, bath_steps)
    z = ctx.tolerances.nvt_z
    figures = {
        "mean_K": mean,
        "expected_mean_K": target,
        "variance_K2": variance,
        "expected_variance_K2": expected_variance,
        "variance_ratio": variance / expected_variance,
        "mean_z": (mean - target) / se_mean if se_mean > 0 else float("nan"),
        "variance_z": (variance - expected_variance) / se_variance
        if se_variance > 0
        else float("nan"),
        "autocorrelation_time_fs": tau * s.timestep_fs,
        "effective_samples": len(temperature) / tau,
        "duration_ps": len(temperature) * s.timestep_fs * 1e-3,
    }
    tolerance = {
        "mean_z": Bound(z, -z, "standard errors"),
        "variance_z": Bound(z, -z, "standard errors"),
    }
    stride = max(1, len(temperature) // MAX_POINTS)
    details = {
        "time_fs": md.time_fs[::stride],
        "temperature_K": temperature[::stride],
        "n_dof": n_dof,
        "tau_variance_steps": tau_variance,
    }
    return judged(NAME, figures, tolerance, details)
