"""Calibration of predicted standard deviations, and the scores that judge them.

The model says ``error ~ N(0, (s σ)²)`` with its predicted ``σ`` and one scale factor ``s``
per quantity. Maximising the Gaussian likelihood of validation errors ``e`` over ``s``
gives the closed form ``s² = mean(e² / σ²)``. Scores, on ``z = e / (s σ)``:

* **reliability curve**: for a confidence ``p`` the fraction of errors inside the central
  interval ``|z| <= Φ⁻¹((1 + p) / 2)``, which is ``p`` when calibrated;
* **ECE** (expected calibration error): mean ``|observed(p) - p|`` over ten confidence
  bins ``p = 0.05, 0.15, ..., 0.95``;
* **miscalibration area**: area between the reliability curve and the diagonal over
  ``p ∈ [0, 1]`` (trapezoids on a grid of 101 levels);
* **NLL**: mean Gaussian negative log-likelihood of the errors (in the error's units);
* **Spearman**: rank correlation between ``σ`` and ``|e|`` (does the model know *where*
  it is wrong, independently of the scale?).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from mlpot.errors import MlpotInputError

QUANTITIES = ("energy", "forces", "stress")
ECE_LEVELS = (np.arange(10) + 0.5) / 10
AREA_LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass
class Calibration:
    """Dimensionless factors multiplying the predicted standard deviations, per quantity."""

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``calibration`` field: ``{"energy_scale", "forces_scale",
        "stress_scale", "method"}`` (other readers look for these keys)."""
        scales = {f"{q}_scale": value for q, value in asdict(self).items()}
        return {"method": "maximum likelihood (Gaussian)", **scales}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibration:
        """From a checkpoint's ``calibration`` field (``None``: uncalibrated, all 1; a
        quantity without its ``*_scale`` key: 1)."""
        if not data:
            return cls()
        return cls(**{q: float(data.get(f"{q}_scale", 1.0)) for q in QUANTITIES})


@dataclass
class CalibrationScores:
    """How well ``σ`` describes the errors (see module docstring); ``n`` errors scored."""

    ece: float
    miscalibration_area: float
    nll: float
    spearman: float
    rmse: float
    rms_std: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _checked(errors: np.ndarray, stds: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    errors, stds = np.asarray(errors, dtype=np.float64), np.asarray(stds, dtype=np.float64)
    if errors.shape != stds.shape:
        raise ValueError(f"{what}: errors {errors.shape} and stds {stds.shape} differ in shape")
    keep = np.isfinite(errors) & np.isfinite(stds)
    errors, stds = errors[keep], stds[keep]
    if errors.size == 0:
        raise MlpotInputError(f"no labelled {what} to calibrate on", field=what)
    if np.any(stds <= 0):
        raise MlpotInputError(
            f"{np.sum(stds <= 0)} predicted {what} standard deviations are zero: the ensemble "
            "members agree exactly (identical members?)",
            field=what,
        )
    return errors, stds


def fit_scale(errors: np.ndarray, stds: np.ndarray, *, what: str = "errors") -> float:
    """Maximum-likelihood ``s`` for ``errors ~ N(0, (s · stds)²)``: ``sqrt(mean(e²/σ²))``."""
    errors, stds = _checked(errors, stds, what)
    return float(np.sqrt(np.mean((errors / stds) ** 2)))


def observed_coverage(z: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Fraction of ``|z|`` inside the central Gaussian interval of each confidence level."""
    bounds = stats.norm.ppf(0.5 + 0.5 * np.asarray(levels))  # (L,), inf at level 1
    return np.mean(np.abs(np.ravel(z))[:, None] <= bounds[None, :], axis=0)


def gaussian_nll(errors: np.ndarray, stds: np.ndarray) -> float:
    """Mean ``0.5 log(2π σ²) + e² / (2σ²)``."""
    variance = np.asarray(stds, dtype=np.float64) ** 2
    return float(np.mean(0.5 * np.log(2 * np.pi * variance) + 0.5 * errors**2 / variance))


def score(
    errors: np.ndarray,
    stds: np.ndarray,
    *,
    scale: float = 1.0,
    rank_errors: np.ndarray | None = None,
    rank_stds: np.ndarray | None = None,
    what: str = "errors",
) -> CalibrationScores:
    """Scores of ``errors`` against ``scale · stds`` (same shape).

    ``rank_errors``/``rank_stds`` are what the Spearman correlation ranks when it should
    not be the raw components, e.g. per-atom force-error norms against per-atom stds.
    """
    errors, stds = _checked(errors, stds, what)
    stds = scale * stds
    z = errors / stds
    ece = float(np.mean(np.abs(observed_coverage(z, ECE_LEVELS) - ECE_LEVELS)))
    gap = np.abs(observed_coverage(z, AREA_LEVELS) - AREA_LEVELS)
    area = float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(AREA_LEVELS)))
    rank_e = np.abs(errors) if rank_errors is None else np.ravel(rank_errors)
    rank_s = stds if rank_stds is None else np.ravel(rank_stds)
    rho = stats.spearmanr(rank_s, rank_e).statistic if rank_e.size > 1 else float("nan")
    return CalibrationScores(
        ece=ece,
        miscalibration_area=area,
        nll=gaussian_nll(errors, stds),
        spearman=float(rho),
        rmse=float(np.sqrt(np.mean(errors**2))),
        rms_std=float(np.sqrt(np.mean(stds**2))),
        n=int(errors.size),
    )
