"""The potential of mean force from umbrella windows, by MBAR (pymbar).

Each window's CV series is decorrelated first (pymbar's statistical inefficiency g; every
g-th sample kept), then MBAR solves for the windows' free energies with reduced potentials
u_k(x) = W_k(ξ(x)) / kT (the unbiased energy is common to all windows and cancels), and
the PMF F(ξ) = −kT ln p(ξ) is read on histogram bins with MBAR's analytical
uncertainties. For a distance the PMF includes the 4πr² Jacobian, as F(ξ) is defined.

Diagnostics: MBAR's overlap matrix (the smallest overlap of neighbouring windows tells
whether the windows are close enough; below ~0.03 the PMF between them is not to be
trusted) and the number of decorrelated samples per window.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units

from mlpot.apps.umbrella import UmbrellaRun
from mlpot.errors import MlpotInputError

MIN_NEIGHBOUR_OVERLAP = 0.03


@dataclass
class PMF:
    """F(ξ) on bins: ``cv`` (bin centres), ``free_energy`` and ``uncertainty`` (eV, the
    lowest bin is 0), ``counts`` (decorrelated samples per bin)."""

    cv_name: str
    cv_unit: str
    temperature_K: float
    cv: np.ndarray
    free_energy: np.ndarray
    uncertainty: np.ndarray
    counts: np.ndarray
    diagnostics: dict = field(default_factory=dict)

    def at(self, value: float) -> float:
        """F (eV) interpolated at CV ``value``."""
        return float(np.interp(value, self.cv, self.free_energy))

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([f"{self.cv_name} ({self.cv_unit})", "F (eV)", "dF (eV)", "samples"])
            for row in zip(self.cv, self.free_energy, self.uncertainty, self.counts, strict=True):
                writer.writerow([f"{row[0]:.6g}", f"{row[1]:.6g}", f"{row[2]:.3g}", int(row[3])])

    def to_dict(self) -> dict:
        return {
            "cv": self.cv_name,
            "cv_unit": self.cv_unit,
            "temperature_K": self.temperature_K,
            "bins": self.cv.tolist(),
            "free_energy_eV": self.free_energy.tolist(),
            "uncertainty_eV": self.uncertainty.tolist(),
            "samples": self.counts.astype(int).tolist(),
            "diagnostics": self.diagnostics,
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))


def _pymbar():
    """pymbar, imported without its notices (JAX missing, timeseries caveats): they go to
    its loggers, which are set to errors only."""
    import logging

    for name in ("pymbar", "pymbar.mbar_solvers", "pymbar.timeseries"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import pymbar
        import pymbar.timeseries  # noqa: F401
    except ImportError:
        raise MlpotInputError(
            "free energies need pymbar: pip install 'mlpot[free-energy]'"
        ) from None
    return pymbar


def decorrelated(series: np.ndarray) -> tuple[np.ndarray, float]:
    """Indices of uncorrelated samples of ``series`` and its statistical inefficiency."""
    pymbar = _pymbar()
    if len(series) < 4 or np.ptp(series) == 0.0:
        return np.arange(len(series)), 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = float(pymbar.timeseries.statistical_inefficiency(series))
        indices = np.asarray(pymbar.timeseries.subsample_correlated_data(series, g=g))
    return indices, g


@dataclass
class MBARInput:
    """Decorrelated samples of all windows: CV values ``x`` (n,), reduced bias potentials
    ``u_kn`` (K, n), samples per window ``n_k`` (K,), and which sample came from which
    window ``origin`` (n,) with its index ``sample`` in that window."""

    x: np.ndarray
    u_kn: np.ndarray
    n_k: np.ndarray
    origin: np.ndarray
    sample: np.ndarray
    inefficiency: list[float]


def mbar_input(run: UmbrellaRun) -> MBARInput:
    """Decorrelated CV samples of ``run`` and their reduced bias potentials in every
    window."""
    beta = 1.0 / (units.kB * run.plan.temperature_K)
    xs, origin, index, inefficiency = [], [], [], []
    for k, window in enumerate(run.windows):
        keep, g = decorrelated(window.cv)
        xs.append(window.cv[keep])
        origin.append(np.full(len(keep), k))
        index.append(keep)
        inefficiency.append(g)
    x = np.concatenate(xs)
    u_kn = np.array([beta * run.plan.restraint(k).energy(x) for k in range(len(run.windows))])
    n_k = np.array([len(v) for v in xs])
    return MBARInput(x, u_kn, n_k, np.concatenate(origin), np.concatenate(index), inefficiency)


def bin_edges(run: UmbrellaRun, bins: int) -> np.ndarray:
    """``bins`` equal bins spanning the sampled CV range."""
    values = np.concatenate([w.cv for w in run.windows])
    if run.plan.cv.periodic and np.ptp(values) > 1.9 * np.pi:
        return np.linspace(-np.pi, np.pi, bins + 1)
    low, high = float(values.min()), float(values.max())
    pad = 1e-9 * max(1.0, high - low)
    return np.linspace(low - pad, high + pad, bins + 1)


def fes_on_bins(data: MBARInput, edges: np.ndarray, u_n: np.ndarray | None = None):
    """MBAR's F (kT units, lowest bin 0) and its uncertainty on the bins with samples, and
    the overlap matrix of the windows: ``(centres, f, df, counts, overlap)``."""
    pymbar = _pymbar()
    u_n = np.zeros(len(data.x)) if u_n is None else u_n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fes = pymbar.FES(data.u_kn, data.n_k, verbose=False)
        counts, _ = np.histogram(data.x, bins=edges)
        filled = counts > 0
        fes.generate_fes(
            u_n, data.x, fes_type="histogram", histogram_parameters={"bin_edges": edges}
        )
        centres = 0.5 * (edges[1:] + edges[:-1])
        result = fes.get_fes(
            centres[filled], reference_point="from-lowest", uncertainty_method="analytical"
        )
        overlap = fes.get_mbar().compute_overlap()["matrix"]
    return centres[filled], result["f_i"], result["df_i"], counts[filled], overlap


def neighbour_overlaps(overlap: np.ndarray) -> np.ndarray:
    """Overlap of each window with the next, O[k, k+1]."""
    return np.array([overlap[k, k + 1] for k in range(len(overlap) - 1)])


def umbrella_pmf(run: UmbrellaRun, *, bins: int = 40) -> PMF:
    """The PMF of ``run`` by MBAR on ``bins`` histogram bins, with diagnostics."""
    if bins < 2:
        raise MlpotInputError("a PMF needs at least 2 bins", field="bins")
    kT = units.kB * run.plan.temperature_K
    data = mbar_input(run)
    centres, f, df, counts, overlap = fes_on_bins(data, bin_edges(run, bins))
    neighbours = neighbour_overlaps(overlap)
    diagnostics = {
        "windows": len(run.windows),
        "samples_per_window": data.n_k.tolist(),
        "statistical_inefficiency": [round(g, 2) for g in data.inefficiency],
        "neighbour_overlap": neighbours.round(4).tolist(),
        "min_neighbour_overlap": float(neighbours.min()),
        "overlap_ok": bool(neighbours.min() >= MIN_NEIGHBOUR_OVERLAP),
    }
    return PMF(
        str(run.plan.cv),
        run.plan.cv.unit,
        run.plan.temperature_K,
        centres,
        f * kT,
        df * kT,
        counts,
        diagnostics,
    )
