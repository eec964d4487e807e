"""Reliability diagram (PNG) of calibrated uncertainties; needs matplotlib (``report`` extra).

Left: the reliability curve, observed against expected coverage of the central intervals
of the calibrated predictive (Student-t or Gaussian, see :mod:`mlpot.uncertainty.calibration`;
the diagonal is perfect calibration). Right: error-based calibration, the RMS
error against the RMS predicted std in bins of equal count of the predicted std (log axes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlpot.uncertainty.assess import Residuals
from mlpot.uncertainty.calibration import (
    AREA_LEVELS,
    Calibration,
    format_dof,
    observed_coverage,
)


def _series(
    res: Residuals, calibration: Calibration
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{quantity: (errors, calibrated stds, degrees of freedom)}``, flattened, labelled
    entries only."""
    series = {}
    if res.energy_std is not None:
        series["energy (eV)"] = (
            res.energy_error,
            calibration.energy * res.energy_std,
            calibration.energy_dof,
        )
    if res.forces_std is not None:
        stds = np.broadcast_to(res.forces_std[:, None], res.force_error.shape)
        series["force components (eV/Å)"] = (
            res.force_error,
            calibration.forces * stds,
            calibration.forces_dof,
        )
    out = {}
    for name, (errors, stds, dof) in series.items():
        errors, stds = np.ravel(errors), np.ravel(stds)
        keep = np.isfinite(errors) & (stds > 0)
        out[name] = (errors[keep], stds[keep], dof)
    return out


def binned_rmse(
    errors: np.ndarray, stds: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """RMS std and RMS error in ``n_bins`` equal-count bins of the predicted std."""
    order = np.argsort(stds)
    bins = np.array_split(order, min(n_bins, len(order)))
    rmv = np.array([np.sqrt(np.mean(stds[b] ** 2)) for b in bins])
    rmse = np.array([np.sqrt(np.mean(errors[b] ** 2)) for b in bins])
    return rmv, rmse


def reliability_diagram(
    res: Residuals, path: str | Path, *, calibration: Calibration | None = None, title: str = ""
) -> Path:
    """Write the reliability diagram of ``res`` under ``calibration`` to ``path`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "the reliability diagram needs matplotlib: pip install 'mlpot[report]'"
        ) from None
    series = _series(res, calibration or Calibration())
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    left.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    bounds = []
    for name, (errors, stds, dof) in series.items():
        coverage = observed_coverage(errors / stds, AREA_LEVELS, dof)
        left.plot(AREA_LEVELS, coverage, label=f"{name}, ν = {format_dof(dof)}")
        rmv, rmse = binned_rmse(errors, stds)
        right.loglog(rmv, rmse, "o-", label=name)
        bounds += [rmv.min(), rmse.min(), rmv.max(), rmse.max()]
    if bounds:
        span = [max(min(bounds), 1e-12), max(bounds)]
        right.plot(span, span, "k--", lw=1, label="ideal")
    left.set(xlabel="expected coverage", ylabel="observed coverage", title="reliability")
    right.set(xlabel="RMS predicted std", ylabel="RMS error", title="error vs std (binned)")
    left.legend()
    right.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
