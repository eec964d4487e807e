"""Calibration of predicted standard deviations, and the scores that judge them.

**The predictive distribution.** For each quantity (energy, forces, stress) an error ``e``
with raw ensemble standard deviation ``σ̂`` is modelled as ``e = s σ̂ · T_ν``: ``s`` a
dimensionless scale factor and ``T_ν`` a Student-t variable with ``ν > 2`` degrees of
freedom rescaled to unit variance (``T_ν = t_ν · sqrt((ν - 2) / ν)``). So ``σ = s σ̂`` is the
predictive *standard deviation*, whatever ``ν`` is, and every ``*_std`` output, threshold
and selection keeps its meaning; ``ν`` only sets the shape. ``ν = ∞`` is the Gaussian
``N(0, σ²)`` (what checkpoints without degrees of freedom mean).

**Why not a Gaussian.** ``σ̂`` is itself estimated from a handful of members, so even if
the error were Gaussian given the true spread, ``e / σ̂`` would be a ratio with a noisy
denominator, whose distribution is t-like: too many small ratios and too many large ones.
Members (or heads) are correlated and the model errs more wildly where it extrapolates, so
measured tails are heavier still. One Gaussian scale then cannot match both the centre and
the tails: if it fits the variance, the central intervals are too wide. The Student-t keeps
the variance and puts the right share of the mass in the centre and the tails.

**Fitting.** ``(s, ν)`` maximise the likelihood of validation errors
(:func:`fit_student_t`; :func:`fit_calibration` for every quantity at once); ``ν`` runs
over ``[2.5, 1000]``, and a fit that runs to the upper bound, or whose likelihood does not
beat the Gaussian's by a likelihood-ratio test at 95 %, is reported as ``ν = ∞`` with the
Gaussian closed form ``s² = mean(e² / σ̂²)`` (:func:`gaussian_scale`). The lower bound
keeps the standard deviation meaningful: as ``ν → 2`` at fixed interval widths ``s`` grows
like ``1 / sqrt(ν - 2)``, so errors with tails too heavy for a finite variance would
otherwise drive ``ν`` to 2 and ``s`` to whatever the optimiser's bound allows.

**Scores**, on ``z = e / σ`` under the calibrated predictive (:func:`score`):

* **reliability curve**: for a confidence ``p`` the fraction of errors inside the central
  interval ``|z| <= q_ν((1 + p) / 2)``, ``q_ν`` the quantile function of ``T_ν``
  (the Gaussian's ``Φ⁻¹`` when ``ν = ∞``); it is ``p`` when calibrated;
* **ECE** (expected calibration error): mean ``|observed(p) - p|`` over ten confidence
  bins ``p = 0.05, 0.15, ..., 0.95``;
* **miscalibration area**: area between the reliability curve and the diagonal over
  ``p ∈ [0, 1]`` (trapezoids on a grid of 101 levels);
* **NLL**: mean negative log-likelihood of the errors under the predictive (in the error's
  units, so NLLs of different ``ν`` compare);
* **Spearman**: rank correlation between ``σ`` and ``|e|`` (does the model know *where*
  it is wrong, independently of the scale?).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from mlpot.errors import MlpotInputError

QUANTITIES = ("energy", "forces", "stress")
ECE_LEVELS = (np.arange(10) + 0.5) / 10
AREA_LEVELS = np.linspace(0.0, 1.0, 101)
METHOD = "maximum likelihood (Student-t)"
MAX_DOF = 1000.0  # fits reaching this many degrees of freedom are Gaussian (ν = ∞)
MIN_DOF = 2.5  # heaviest tails fitted; below, the variance (the std outputs) is ill-determined
GAUSSIAN_REJECTED = stats.chi2.ppf(0.95, 1)  # 2 Δlog L of the likelihood-ratio test for ν


def _dof_from_field(value: Any, key: str) -> float:
    """A stored degrees-of-freedom value (``None``, missing or ``inf``: Gaussian)."""
    if value is None:
        return math.inf
    try:
        dof = float(value)
    except (TypeError, ValueError):
        raise MlpotInputError(f"not a number: {value!r}", field=f"calibration.{key}") from None
    if not dof > 2:
        raise MlpotInputError(
            f"degrees of freedom must exceed 2 (finite variance), got {dof}",
            field=f"calibration.{key}",
        )
    return dof


def format_dof(dof: float | None) -> str:
    """Degrees of freedom for people: ``∞`` for the Gaussian (``inf`` or ``None``)."""
    return "∞" if dof is None or math.isinf(dof) else f"{dof:.3g}"


@dataclass
class Calibration:
    """Per quantity, the factor multiplying the raw ensemble standard deviation (so the
    result is the predictive std) and the Student-t degrees of freedom of the predictive
    (``math.inf``: Gaussian)."""

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 1.0
    energy_dof: float = math.inf
    forces_dof: float = math.inf
    stress_dof: float = math.inf

    def scale_of(self, quantity: str) -> float:
        return float(getattr(self, quantity))

    def dof_of(self, quantity: str) -> float:
        return float(getattr(self, f"{quantity}_dof"))

    def describe(self) -> str:
        """One line, e.g. ``energy s=1.2 ν=∞, forces s=2.67 ν=4.13, stress s=1 ν=∞``."""
        return ", ".join(
            f"{q} s={self.scale_of(q):.4g} ν={format_dof(self.dof_of(q))}" for q in QUANTITIES
        )

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``calibration`` field: ``{"method", "energy_scale",
        "energy_dof", "forces_scale", ...}`` (other readers look for the ``*_scale`` keys);
        an infinite ``*_dof`` (Gaussian) is written as ``None`` (JSON ``null``)."""
        data: dict[str, Any] = {"method": METHOD}
        for q in QUANTITIES:
            dof = self.dof_of(q)
            data[f"{q}_scale"] = self.scale_of(q)
            data[f"{q}_dof"] = None if math.isinf(dof) else dof
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibration:
        """From a checkpoint's ``calibration`` field (``None``: uncalibrated, all 1 and
        Gaussian; a quantity without its ``*_scale`` key: 1; without its ``*_dof`` key, or
        with ``None``: Gaussian, as in checkpoints written before the Student-t)."""
        if not data:
            return cls()
        values: dict[str, float] = {}
        for q in QUANTITIES:
            values[q] = float(data.get(f"{q}_scale", 1.0))
            values[f"{q}_dof"] = _dof_from_field(data.get(f"{q}_dof"), f"{q}_dof")
        return cls(**values)


@dataclass
class CalibrationScores:
    """How well the predictive (std ``scale · σ̂``, ``dof`` degrees of freedom) describes
    the errors (see module docstring); ``n`` errors scored."""

    ece: float
    miscalibration_area: float
    nll: float
    spearman: float
    rmse: float
    rms_std: float
    n: int
    scale: float = 1.0
    dof: float = math.inf

    def to_dict(self) -> dict[str, float | None]:
        """Plain dict; an infinite ``dof`` (Gaussian) becomes ``None`` (JSON ``null``)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["dof"] = None if math.isinf(self.dof) else self.dof
        return data


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
            f"{np.sum(stds <= 0)} of {stds.size} predicted {what} standard deviations are "
            "zero: the ensemble members agree exactly. Identical members, or float32 members "
            "that differ by less than their numbers resolve (per-atom energies with offsets "
            "of hundreds of eV are stored to ~1e-5 eV; a float64 model resolves them)",
            field=what,
        )
    return errors, stds


def _checked_dof(dof: float) -> float:
    dof = float(dof)
    if not dof > 2:
        raise ValueError(f"Student-t degrees of freedom must exceed 2, got {dof}")
    return dof


def gaussian_scale(errors: np.ndarray, stds: np.ndarray, *, what: str = "errors") -> float:
    """Maximum-likelihood ``s`` for ``errors ~ N(0, (s · stds)²)``: ``sqrt(mean(e²/σ²))``."""
    errors, stds = _checked(errors, stds, what)
    return float(np.sqrt(np.mean((errors / stds) ** 2)))


def predictive_quantile(p: np.ndarray | float, dof: float = math.inf) -> np.ndarray:
    """Quantile function of the unit-variance predictive ``T_ν`` (``N(0, 1)`` at ν = ∞)."""
    p = np.asarray(p, dtype=np.float64)
    if math.isinf(dof):
        return stats.norm.ppf(p)
    dof = _checked_dof(dof)
    return stats.t.ppf(p, dof) * math.sqrt((dof - 2.0) / dof)


def observed_coverage(z: np.ndarray, levels: np.ndarray, dof: float = math.inf) -> np.ndarray:
    """Fraction of ``|z|`` (errors over predictive stds) inside the central interval of
    each confidence level of the unit-variance predictive with ``dof`` degrees of freedom."""
    bounds = predictive_quantile(0.5 + 0.5 * np.asarray(levels), dof)  # (L,), inf at level 1
    return np.mean(np.abs(np.ravel(z))[:, None] <= bounds[None, :], axis=0)


def predictive_nll(errors: np.ndarray, stds: np.ndarray, dof: float = math.inf) -> float:
    """Mean negative log-likelihood of ``errors`` under the predictive with standard
    deviations ``stds`` (same units) and ``dof`` degrees of freedom.

    Gaussian (ν = ∞): ``0.5 log(2π σ²) + e² / (2σ²)``. Student-t with unit-variance shape:
    ``log Γ(ν/2) - log Γ((ν+1)/2) + 0.5 log(π (ν-2) σ²) + (ν+1)/2 log(1 + e² / ((ν-2) σ²))``.
    """
    errors = np.asarray(errors, dtype=np.float64)
    variance = np.asarray(stds, dtype=np.float64) ** 2
    if math.isinf(dof):
        return float(np.mean(0.5 * np.log(2 * np.pi * variance) + 0.5 * errors**2 / variance))
    dof = _checked_dof(dof)
    const = special.gammaln(dof / 2) - special.gammaln((dof + 1) / 2)
    excess = dof - 2.0
    per_error = 0.5 * np.log(np.pi * excess * variance) + 0.5 * (dof + 1) * np.log1p(
        errors**2 / (excess * variance)
    )
    return float(const + np.mean(per_error))


def _t_objective(
    params: np.ndarray, ratio2: np.ndarray, log_stds: float
) -> tuple[float, np.ndarray]:
    """Mean NLL at ``(log s, log(ν - 2))`` and its gradient; ``ratio2 = (e / σ̂)²``."""
    log_s, log_excess = params
    excess = math.exp(log_excess)
    dof = 2.0 + excess
    q = ratio2 * math.exp(-2.0 * log_s) / excess  # e² / ((ν - 2) σ²)
    log1p_q = np.log1p(q)
    share = np.mean(q / (1.0 + q))
    value = (
        special.gammaln(dof / 2)
        - special.gammaln((dof + 1) / 2)
        + 0.5 * math.log(math.pi * excess)
        + log_s
        + log_stds
        + 0.5 * (dof + 1) * np.mean(log1p_q)
    )
    d_log_s = 1.0 - (dof + 1) * share
    d_dof = (
        0.5 * special.digamma(dof / 2)
        - 0.5 * special.digamma((dof + 1) / 2)
        + 0.5 / excess
        + 0.5 * np.mean(log1p_q)
        - 0.5 * (dof + 1) * share / excess
    )
    return float(value), np.array([d_log_s, d_dof * excess])


def fit_student_t(
    errors: np.ndarray, stds: np.ndarray, *, what: str = "errors"
) -> tuple[float, float]:
    """Maximum-likelihood ``(s, ν)`` of ``errors = s · stds · T_ν`` (``T_ν``: unit-variance
    Student-t), so ``s · stds`` is the predictive standard deviation.

    Minimises the mean NLL over ``log s`` and ``log(ν - 2)`` (L-BFGS-B, ``ν`` from
    ``MIN_DOF`` = 2.5 to ``MAX_DOF`` = 1000), starting from the Gaussian closed form.
    ``ν`` is returned as ``math.inf``, with the Gaussian ``s``, when the fit runs to the
    upper bound or a likelihood-ratio test does not reject the Gaussian at 95 % (the errors
    are Gaussian as far as the data can tell: few errors, e.g. a few dozen structure
    energies, keep the Gaussian); errors with heavier tails than ``ν = 2.5`` get ``ν = 2.5``.
    """
    errors, stds = _checked(errors, stds, what)
    s_gauss = float(np.sqrt(np.mean((errors / stds) ** 2)))
    if s_gauss == 0.0:  # every error is exactly zero
        return 0.0, math.inf
    ratio2 = (errors / stds) ** 2
    log_stds = float(np.mean(np.log(stds)))
    gauss_nll = predictive_nll(errors, s_gauss * stds)
    bounds = [
        (math.log(s_gauss) - 10.0, math.log(s_gauss) + 10.0),
        (math.log(MIN_DOF - 2.0), math.log(MAX_DOF - 2.0)),
    ]
    best = None
    for start_dof in (4.0, 30.0):  # heavy- and light-tailed starts
        result = optimize.minimize(
            _t_objective,
            np.array([math.log(s_gauss), math.log(start_dof - 2.0)]),
            args=(ratio2, log_stds),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
        )
        if best is None or result.fun < best.fun:
            best = result
    scale, dof = math.exp(best.x[0]), max(MIN_DOF, 2.0 + math.exp(best.x[1]))
    # the extra parameter must earn its place: likelihood-ratio test against the Gaussian
    gain = errors.size * (gauss_nll - best.fun)  # total log-likelihood gained
    if dof >= 0.999 * MAX_DOF or gain < 0.5 * GAUSSIAN_REJECTED:
        return s_gauss, math.inf
    return scale, dof


def fit_calibration(errors_and_stds: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Calibration:
    """The calibration of an ensemble, fitted to its errors: for each quantity given
    (``energy``, ``forces``, ``stress``) as ``(errors, raw stds)`` of one shape, the
    maximum-likelihood std scale factor and Student-t degrees of freedom
    (:func:`fit_student_t`). A quantity not given keeps scale 1, Gaussian."""
    values: dict[str, float] = {}
    for quantity, (errors, stds) in errors_and_stds.items():
        if quantity not in QUANTITIES:
            raise ValueError(f"unknown quantity {quantity!r}: one of {', '.join(QUANTITIES)}")
        scale, dof = fit_student_t(errors, stds, what=quantity)
        values[quantity], values[f"{quantity}_dof"] = scale, dof
    return Calibration(**values)


def score(
    errors: np.ndarray,
    stds: np.ndarray,
    *,
    scale: float = 1.0,
    dof: float = math.inf,
    rank_errors: np.ndarray | None = None,
    rank_stds: np.ndarray | None = None,
    what: str = "errors",
) -> CalibrationScores:
    """Scores of ``errors`` against the predictive with standard deviations ``scale · stds``
    (same shape) and ``dof`` Student-t degrees of freedom (``math.inf``: Gaussian).

    ``rank_errors``/``rank_stds`` are what the Spearman correlation ranks when it should
    not be the raw components, e.g. per-atom force-error norms against per-atom stds.
    """
    errors, stds = _checked(errors, stds, what)
    stds = scale * stds
    z = errors / stds
    ece = float(np.mean(np.abs(observed_coverage(z, ECE_LEVELS, dof) - ECE_LEVELS)))
    gap = np.abs(observed_coverage(z, AREA_LEVELS, dof) - AREA_LEVELS)
    area = float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(AREA_LEVELS)))
    rank_e = np.abs(errors) if rank_errors is None else np.ravel(rank_errors)
    rank_s = stds if rank_stds is None else np.ravel(rank_stds)
    rho = stats.spearmanr(rank_s, rank_e).statistic if rank_e.size > 1 else float("nan")
    return CalibrationScores(
        ece=ece,
        miscalibration_area=area,
        nll=predictive_nll(errors, stds, dof),
        spearman=float(rho),
        rmse=float(np.sqrt(np.mean(errors**2))),
        rms_std=float(np.sqrt(np.mean(stds**2))),
        n=int(errors.size),
        scale=float(scale),
        dof=float(dof),
    )
