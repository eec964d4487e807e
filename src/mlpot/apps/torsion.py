"""Bayesian fitting of the Fourier torsion terms of a classical force field.

The torsion profile of a dihedral ``φ`` is modelled as::

    V(φ) = Σ_n k_n (1 + cos(n φ - δ_n)) + c = Σ_n (a_n cos nφ + b_n sin nφ) + c'

with ``a_n = k_n cos δ_n``, ``b_n = k_n sin δ_n``; the model is linear in ``(a, b)``, so a
Gaussian prior gives a Gaussian posterior in closed form. Periodicity constraints:

* ``periodicities`` (e.g. ``(1, 2, 3)``) are the only ``n`` allowed;
* ``symmetric=True`` (default) keeps only the cosines, i.e. phases ``δ_n ∈ {0°, 180°}``:
  right for a profile with ``V(φ) = V(-φ)`` (an achiral molecule such as butane or
  ethanol's C-C-O-H); ``k_n = |a_n|``, ``δ_n = 0°`` for ``a_n ≥ 0`` and ``180°`` otherwise.

Data are relaxed scans (:mod:`mlpot.apps.torsion_scan`) of one or more related molecules
sharing the torsion term, each with its own energy offset: the energies (eV) and, where
given, the slopes ``dE/dφ`` (eV/rad) as observations, each kind with its own Gaussian noise.
The design matrix has energy rows ``[1_s, cos nφ, sin nφ]`` and derivative rows
``[0, -n sin nφ, n cos nφ]``. The Fourier coefficients have a zero-mean Gaussian prior of
precision ``α`` (eV⁻²); each offset a broad one (std 10 eV about its scan's mean energy).
``α`` and the noise precisions are stated or chosen by maximising the evidence (MacKay's
fixed-point iterations, Bishop's *Pattern Recognition and Machine Learning* §3.5 with one
noise precision per kind of observation: ``γ = M - α tr S``, ``α = γ / |m|²``,
``β_k = (N_k - γ_k) / |y_k - Φ_k m|²`` with ``γ_k = β_k tr(Φ_kᵀ Φ_k S)``).

What the posterior std measures: the uncertainty of the coefficients given the scan, whose
noise is what the Fourier series cannot follow (incomplete relaxation, higher harmonics,
the rest of the molecule changing shape along the scan). The learned potential's own error
is not in it; to carry that too, fit the scans of each member of a committee and compare.

The fitted ``V`` is the whole torsional part of the scanned profile: subtract the force
field's own non-torsional energy along the scan first (:func:`subtract_baseline`) when the
terms are to sit next to its other terms (1-4 Lennard-Jones and Coulomb, angles, ...).
Writers for GROMACS and OpenMM are in :mod:`mlpot.apps.torsion_forcefield`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.stats import norm
from scipy.stats import t as student_t

from mlpot.apps.torsion_scan import TorsionScan
from mlpot.errors import MlpotInputError

__all__ = [
    "FourierBasis",
    "TorsionBand",
    "TorsionFit",
    "TorsionScan",
    "TorsionTerm",
    "coverage",
    "fit_torsion",
    "subtract_baseline",
]

#: prior standard deviation of each scan's energy offset about its mean energy, eV
OFFSET_PRIOR_STD = 10.0


@dataclass(frozen=True)
class FourierBasis:
    """Which Fourier terms are fitted: ``periodicities`` and (``symmetric=False``) the sines."""

    periodicities: tuple[int, ...] = (1, 2, 3)
    symmetric: bool = True

    def __post_init__(self) -> None:
        ns = tuple(int(n) for n in self.periodicities)
        if not ns or len(set(ns)) != len(ns) or min(ns) < 1 or ns != tuple(self.periodicities):
            raise MlpotInputError(
                f"periodicities must be distinct positive integers, got {self.periodicities}",
                field="periodicities",
            )

    @property
    def names(self) -> list[str]:
        """Coefficient names: ``a<n>`` (cosines), then ``b<n>`` (sines), eV."""
        names = [f"a{n}" for n in self.periodicities]
        return names if self.symmetric else names + [f"b{n}" for n in self.periodicities]

    @property
    def size(self) -> int:
        return len(self.names)

    def energy_rows(self, angles: np.ndarray) -> np.ndarray:
        """``∂V/∂(a, b)`` at ``angles`` (rad): ``(n, size)``, dimensionless."""
        nphi = np.outer(angles, self.periodicities)  # (n, P)
        rows = [np.cos(nphi)] if self.symmetric else [np.cos(nphi), np.sin(nphi)]
        return np.hstack(rows)

    def derivative_rows(self, angles: np.ndarray) -> np.ndarray:
        """``∂(dV/dφ)/∂(a, b)`` at ``angles`` (rad): ``(n, size)``, 1/rad."""
        n = np.asarray(self.periodicities, dtype=float)
        nphi = np.outer(angles, n)
        rows = [-n * np.sin(nphi)] if self.symmetric else [-n * np.sin(nphi), n * np.cos(nphi)]
        return np.hstack(rows)


@dataclass(frozen=True)
class TorsionTerm:
    """One force-field term ``k (1 + cos(n φ - δ))``: ``k`` and its std in eV, ``δ`` and its
    std in degrees. With phases fixed at 0°/180° (``symmetric``), ``k_std`` is the posterior
    std of the signed cosine coefficient and ``phase_std`` is 0."""

    periodicity: int
    k: float
    phase: float
    k_std: float
    phase_std: float


@dataclass(frozen=True)
class TorsionBand:
    """A predicted profile at ``angles`` (rad): posterior ``mean`` (eV), ``std`` of the mean
    (eV, from the coefficients) and ``std_observed`` (eV, adding the energy noise)."""

    angles: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    std_observed: np.ndarray


@dataclass(frozen=True)
class TorsionFit:
    """The posterior of a torsion fit.

    Args:
        basis: the fitted Fourier terms.
        mean: posterior mean of the Fourier coefficients (``basis.names``), eV, ``(M,)``.
        covariance: their posterior covariance, eV², ``(M, M)``.
        offsets: posterior mean of each scan's energy offset, eV, ``(S,)``.
        alpha: prior precision of the coefficients, eV⁻².
        noise_energy: std of the energy noise, eV.
        noise_derivative: std of the slope noise, eV/rad (None: slopes not used).
        log_evidence: log marginal likelihood of the data at these hyper-parameters.
        optimised: which hyper-parameters maximised the evidence (the rest were stated).
        dof: degrees of freedom of the intervals: ``inf`` when the noise is stated; with
            estimated noise the Student-t of an unknown noise level, ``ν = N_k - γ_k`` of
            the observation kind with the fewest (conservative when there are two kinds).
        full_mean, full_covariance: posterior over ``[offsets, coefficients]``.
    """

    basis: FourierBasis
    mean: np.ndarray
    covariance: np.ndarray
    offsets: np.ndarray
    alpha: float
    noise_energy: float
    noise_derivative: float | None
    log_evidence: float
    optimised: tuple[str, ...]
    dof: float
    full_mean: np.ndarray
    full_covariance: np.ndarray

    @property
    def std(self) -> np.ndarray:
        """Posterior std of the Fourier coefficients, eV, ``(M,)``."""
        return np.sqrt(np.diag(self.covariance))

    def quantile(self, level: float) -> float:
        """Half-width of the central ``level`` interval in units of the posterior std
        (``1.0`` for 68.3 % and ``2.0`` for 95.4 % when ``dof`` is infinite)."""
        if not 0 < level < 1:
            raise MlpotInputError(f"level must be in (0, 1), got {level}", field="level")
        q = 0.5 * (1.0 + level)
        return float(norm.ppf(q) if math.isinf(self.dof) else student_t.ppf(q, self.dof))

    def coefficients(self) -> dict[str, tuple[float, float]]:
        """``{name: (mean, std)}`` of the Fourier coefficients, eV."""
        return {
            n: (float(m), float(s))
            for n, m, s in zip(self.basis.names, self.mean, self.std, strict=True)
        }

    def terms(self) -> list[TorsionTerm]:
        """The force-field terms ``k_n (1 + cos(nφ - δ_n))`` (see :class:`TorsionTerm`); for
        free phases, ``k`` and ``δ`` std by linear propagation of the covariance."""
        ns = self.basis.periodicities
        p = len(ns)
        terms = []
        for q, n in enumerate(ns):
            a, var_a = self.mean[q], self.covariance[q, q]
            if self.basis.symmetric:
                phase = 0.0 if a >= 0 else 180.0
                terms.append(TorsionTerm(n, abs(float(a)), phase, math.sqrt(var_a), 0.0))
                continue
            b = self.mean[p + q]
            block = self.covariance[np.ix_([q, p + q], [q, p + q])]
            k = math.hypot(a, b)
            jac_k = np.array([a, b]) / max(k, 1e-300)
            jac_phase = np.array([-b, a]) / max(k * k, 1e-300)
            terms.append(
                TorsionTerm(
                    n,
                    k,
                    math.degrees(math.atan2(b, a)) % 360.0,
                    math.sqrt(jac_k @ block @ jac_k),
                    math.degrees(math.sqrt(jac_phase @ block @ jac_phase)),
                )
            )
        return terms

    def predict(self, angles: Sequence[float], *, scan: int = 0) -> TorsionBand:
        """The profile of ``scan`` (its offset included) at ``angles`` (rad)."""
        angles = np.asarray(angles, dtype=float)
        n_scans = len(self.offsets)
        if not 0 <= scan < n_scans:
            raise MlpotInputError(f"scan {scan} outside 0..{n_scans - 1}", field="scan")
        rows = np.zeros((len(angles), n_scans + self.basis.size))
        rows[:, scan] = 1.0
        rows[:, n_scans:] = self.basis.energy_rows(angles)
        mean = rows @ self.full_mean
        var = np.einsum("ij,jk,ik->i", rows, self.full_covariance, rows)
        std = np.sqrt(np.maximum(var, 0.0))
        return TorsionBand(angles, mean, std, np.sqrt(std**2 + self.noise_energy**2))

    def torsion_energy(self, angles: Sequence[float]) -> np.ndarray:
        """``Σ_n k_n (1 + cos(nφ - δ_n))`` at the posterior mean, eV, at ``angles`` (rad)."""
        angles = np.asarray(angles, dtype=float)
        return sum(
            t.k * (1.0 + np.cos(t.periodicity * angles - math.radians(t.phase)))
            for t in self.terms()
        )


def subtract_baseline(
    scan: TorsionScan, energies: Sequence[float], derivatives: Sequence[float] | None = None
) -> TorsionScan:
    """The scan minus a baseline (e.g. the force field's energy without the fitted torsion at
    the scan's geometries): energies in eV, slopes in eV/rad (dropped if not given)."""
    energies = np.asarray(energies, dtype=float)
    if energies.shape != scan.energies.shape:
        raise MlpotInputError("one baseline energy per scan point is needed", field="energies")
    slopes = None
    if derivatives is not None and scan.derivatives is not None:
        slopes = scan.derivatives - np.asarray(derivatives, dtype=float)
    return TorsionScan(
        scan.angles, scan.energies - energies, slopes, scan.dihedral, scan.converged, scan.frames
    )


@dataclass
class _Design:
    """Centred observations and design rows of every scan; columns ``[offsets, Fourier]``."""

    energy_rows: np.ndarray  # (N_E, S + M)
    energies: np.ndarray  # (N_E,) eV, each scan's mean removed
    slope_rows: np.ndarray  # (N_D, S + M)
    slopes: np.ndarray  # (N_D,) eV/rad
    scan_means: np.ndarray  # (S,) eV


def _design(scans: Sequence[TorsionScan], basis: FourierBasis, use_slopes: bool) -> _Design:
    n_scans, size = len(scans), basis.size
    e_rows, e_obs, d_rows, d_obs, means = [], [], [], [], []
    for s, scan in enumerate(scans):
        rows = np.zeros((len(scan.angles), n_scans + size))
        rows[:, s] = 1.0
        rows[:, n_scans:] = basis.energy_rows(scan.angles)
        means.append(scan.energies.mean())
        e_rows.append(rows)
        e_obs.append(scan.energies - means[-1])
        if use_slopes and scan.derivatives is not None:
            rows = np.zeros((len(scan.angles), n_scans + size))
            rows[:, n_scans:] = basis.derivative_rows(scan.angles)
            d_rows.append(rows)
            d_obs.append(scan.derivatives)
    empty = np.zeros((0, n_scans + size))
    return _Design(
        np.vstack(e_rows),
        np.concatenate(e_obs),
        np.vstack(d_rows) if d_rows else empty,
        np.concatenate(d_obs) if d_obs else np.zeros(0),
        np.array(means),
    )


def _check_data(scans: Sequence[TorsionScan], basis: FourierBasis, use_slopes: bool) -> None:
    if not scans:
        raise MlpotInputError("no torsion scans given", field="scans")
    for s, scan in enumerate(scans):
        if not isinstance(scan, TorsionScan):
            raise MlpotInputError(f"scan {s} is not a TorsionScan", field="scans")
        distinct = len(np.unique(np.round(np.mod(scan.angles, 2 * np.pi), 6)))
        per_angle = 2 if use_slopes and scan.derivatives is not None else 1
        needed = math.ceil((2 * max(basis.periodicities) + 1) / per_angle)
        if len(scans) == 1 and distinct < needed:
            raise MlpotInputError(
                f"scan {s} has {distinct} distinct angles; periodicity "
                f"{max(basis.periodicities)} needs at least {needed}",
                field="periodicities",
            )


def _positive(value: float | None, name: str) -> float | None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise MlpotInputError(f"{name} must be a positive number, got {value}", field=name)
    return value


def _noise_precision(value: float | None, name: str) -> float | None:
    """``1/σ²`` of a stated noise std ``σ`` (None stays None)."""
    return None if _positive(value, name) is None else 1.0 / value**2


def fit_torsion(
    scans: TorsionScan | Sequence[TorsionScan],
    *,
    periodicities: Sequence[int] = (1, 2, 3),
    symmetric: bool = True,
    use_derivatives: bool = True,
    alpha: float | None = None,
    noise_energy: float | None = None,
    noise_derivative: float | None = None,
    max_iterations: int = 500,
    tolerance: float = 1e-9,
) -> TorsionFit:
    """Bayesian linear regression of the Fourier torsion terms on relaxed scans.

    Args:
        scans: one scan, or scans of related molecules sharing the torsion term (each has
            its own energy offset).
        periodicities: the ``n`` of the terms.
        symmetric: phases fixed at 0°/180° (cosines only); False adds the sines.
        use_derivatives: use the scans' slopes ``dE/dφ`` as observations too.
        alpha: prior precision of the coefficients, eV⁻² (None: maximise the evidence).
        noise_energy: energy noise std, eV (None: maximise the evidence).
        noise_derivative: slope noise std, eV/rad (None: maximise the evidence).
        max_iterations, tolerance: of the evidence fixed-point iterations (relative change
            of every hyper-parameter).
    """
    scans = [scans] if isinstance(scans, TorsionScan) else list(scans)
    basis = FourierBasis(tuple(periodicities), symmetric)
    _check_data(scans, basis, use_derivatives)
    design = _design(scans, basis, use_derivatives)
    n_scans, n_params = len(scans), len(scans) + basis.size
    n_obs = len(design.energies) + len(design.slopes)
    if n_obs <= n_params:
        raise MlpotInputError(
            f"{n_obs} observations for {n_params} parameters: scan more angles",
            field="scans",
        )
    hyper = {
        "alpha": _positive(alpha, "alpha"),
        "beta_energy": _noise_precision(noise_energy, "noise_energy"),
        "beta_derivative": _noise_precision(noise_derivative, "noise_derivative"),
    }
    if len(design.slopes) == 0:
        hyper["beta_derivative"] = 0.0
    free = tuple(name for name, value in hyper.items() if value is None)
    state = _initial(design, hyper)
    for _ in range(max_iterations):
        posterior = _posterior(design, state, n_scans)
        updated = _mackay_update(design, state, posterior, free, n_scans)
        change = max(abs(updated[k] / state[k] - 1.0) for k in free) if free else 0.0
        state = updated
        if change < tolerance:
            break
    else:
        warnings.warn(
            f"evidence iterations stopped after {max_iterations} steps (relative change "
            f"{change:.1e} > {tolerance:.0e})",
            RuntimeWarning,
            stacklevel=2,
        )
    mean, cov = _posterior(design, state, n_scans)
    return TorsionFit(
        basis=basis,
        mean=mean[n_scans:],
        covariance=cov[n_scans:, n_scans:],
        offsets=mean[:n_scans] + design.scan_means,
        alpha=state["alpha"],
        noise_energy=state["beta_energy"] ** -0.5,
        noise_derivative=(
            state["beta_derivative"] ** -0.5 if state["beta_derivative"] > 0 else None
        ),
        log_evidence=_log_evidence(design, state, mean, cov, n_scans),
        optimised=free,
        dof=_dof(design, state, cov, free),
        full_mean=np.concatenate([mean[:n_scans] + design.scan_means, mean[n_scans:]]),
        full_covariance=cov,
    )


def _initial(design: _Design, hyper: dict[str, float | None]) -> dict[str, float]:
    """Starting hyper-parameters: noise a tenth of each observation kind's spread."""
    spread_e = max(float(np.std(design.energies)), 1e-6)
    spread_d = max(float(np.std(design.slopes)) if len(design.slopes) else 1.0, 1e-6)
    start = {
        "alpha": 1.0 / spread_e**2,
        "beta_energy": 100.0 / spread_e**2,
        "beta_derivative": 100.0 / spread_d**2,
    }
    return {k: (start[k] if v is None else v) for k, v in hyper.items()}


def _prior(state: dict[str, float], n_scans: int, n_params: int) -> np.ndarray:
    prior = np.full(n_params, state["alpha"])
    prior[:n_scans] = OFFSET_PRIOR_STD**-2
    return prior


def _posterior(
    design: _Design, state: dict[str, float], n_scans: int
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and covariance over ``[offsets, coefficients]``."""
    phi_e, phi_d = design.energy_rows, design.slope_rows
    be, bd = state["beta_energy"], state["beta_derivative"]
    precision = np.diag(_prior(state, n_scans, phi_e.shape[1]))
    precision += be * phi_e.T @ phi_e + bd * phi_d.T @ phi_d
    factor = cho_factor(precision)
    cov = cho_solve(factor, np.eye(len(precision)))
    mean = cho_solve(factor, be * phi_e.T @ design.energies + bd * phi_d.T @ design.slopes)
    return mean, 0.5 * (cov + cov.T)


def _mackay_update(
    design: _Design,
    state: dict[str, float],
    posterior: tuple[np.ndarray, np.ndarray],
    free: tuple[str, ...],
    n_scans: int,
) -> dict[str, float]:
    """One fixed-point step of the evidence maximisation for the ``free`` hyper-parameters."""
    mean, cov = posterior
    new = dict(state)
    coefficients = mean[n_scans:]
    if "alpha" in free:
        gamma = len(coefficients) - state["alpha"] * np.trace(cov[n_scans:, n_scans:])
        new["alpha"] = max(gamma, 1e-12) / max(float(coefficients @ coefficients), 1e-300)
    groups = {
        "beta_energy": (design.energy_rows, design.energies),
        "beta_derivative": (design.slope_rows, design.slopes),
    }
    for name, (rows, observed) in groups.items():
        if name not in free:
            continue
        gamma = state[name] * np.trace(rows.T @ rows @ cov)
        residual = observed - rows @ mean
        rss = max(float(residual @ residual), 1e-30 * len(observed))
        new[name] = max(len(observed) - gamma, 1e-12) / rss
    return new


def _dof(design: _Design, state: dict[str, float], cov: np.ndarray, free: tuple[str, ...]):
    """Residual degrees of freedom ``N_k - γ_k`` of the estimated noise levels (the
    smallest), ``inf`` when every noise level was stated."""
    groups = {
        "beta_energy": design.energy_rows,
        "beta_derivative": design.slope_rows,
    }
    dofs = [
        len(rows) - state[name] * np.trace(rows.T @ rows @ cov)
        for name, rows in groups.items()
        if name in free
    ]
    return max(min(dofs), 1.0) if dofs else math.inf


def _log_evidence(
    design: _Design, state: dict[str, float], mean: np.ndarray, cov: np.ndarray, n_scans: int
) -> float:
    """``ln p(y | α, β)`` of the Gaussian linear model (Bishop eq. 3.86, generalised)."""
    prior = _prior(state, n_scans, len(mean))
    total = 0.5 * float(np.sum(np.log(prior))) - 0.5 * float(prior @ mean**2)
    groups = [
        (state["beta_energy"], design.energy_rows, design.energies),
        (state["beta_derivative"], design.slope_rows, design.slopes),
    ]
    for beta, rows, observed in groups:
        if len(observed) == 0:
            continue
        residual = observed - rows @ mean
        total += 0.5 * len(observed) * (math.log(beta) - math.log(2 * math.pi))
        total -= 0.5 * beta * float(residual @ residual)
    _, logdet_cov = np.linalg.slogdet(cov)
    return total + 0.5 * logdet_cov


def coverage(fit: TorsionFit, truth: Sequence[float], level: float = 0.6827) -> np.ndarray:
    """Which Fourier coefficients lie inside their central ``level`` posterior interval
    (bool, ``(M,)``; see :meth:`TorsionFit.quantile`); ``truth`` in ``fit.basis.names``
    order, eV."""
    truth = np.asarray(truth, dtype=float)
    if truth.shape != fit.mean.shape:
        raise MlpotInputError(
            f"truth has {truth.size} values for {fit.mean.size} coefficients", field="truth"
        )
    return np.abs(truth - fit.mean) <= fit.quantile(level) * fit.std
