"""Reweighting an ML umbrella run to the oracle: the sampling is driven by the learned
potential, the free energy is corrected back to the reference.

A subset of the stored frames (spread over all windows) is labelled by the oracle; with
ΔE = E_oracle − E_ML, MBAR over the windows gives each frame its weight in the unbiased ML
ensemble, and exp(−ΔE/kT) turns that into its weight in the oracle's ensemble
(free-energy perturbation through MBAR). In each bin of the ML PMF the correction is
F_oracle − F_ML = −kT ln⟨exp(−ΔE/kT)⟩ over the bin's frames (ML weights), with a bootstrap
error, and it is added to the full ML PMF.

Trust: the Kish effective sample size of the oracle weights, N_eff = (Σw)²/Σw², in each
bin of the PMF (the correction of a bin rests on its frames alone), summed over the bins.
When ΔE fluctuates by more than ~kT between frames a few frames carry
all the weight: below ``min_effective_samples`` the reweighting is refused with the reason
(the remedy is a better potential there, or more frames). For an ensemble model, the mean
calibrated ``energy_std`` of each bin's frames is reported next to the bin's correction,
and so is the spread that matters here: the members' energies with each member's mean
over the frames removed (an offset common to all frames does not change the weights), its
RMS against the measured spread of ΔE, and the rank correlations of both with |ΔE|.

Oracle energies are cached in the run directory (``oracle_energies.npz``) as they come, so
a killed reweighting resumes without repeating a calculation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from scipy.special import logsumexp
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from mlpot.apps.mbar import PMF, MBARInput, _pymbar
from mlpot.apps.umbrella import UmbrellaRun
from mlpot.errors import MlpotInputError

CACHE = "oracle_energies.npz"


class ReweightingUnreliable(RuntimeError):
    """Too few effective samples for the reweighted free energy to be trusted."""


@dataclass
class ReweightedPMF:
    """The ML PMF, the oracle-corrected one on the same bins, and the evidence."""

    ml: PMF
    reference: PMF
    correction_cv: np.ndarray  # bin centres (those of ``ml``)
    correction: np.ndarray  # F_oracle − F_ML per bin, eV (NaN: too few samples)
    correction_uncertainty: np.ndarray  # eV, bootstrap over the bin's frames
    bin_effective_samples: np.ndarray
    bin_model_energy_std: np.ndarray  # eV, mean calibrated std of the frames in the bin
    summary: dict = field(default_factory=dict)


def select_frames(run: UmbrellaRun, max_frames: int) -> list[tuple[int, int]]:
    """Up to ``max_frames`` (window, frame) pairs, as many from each window, spread in time."""
    counts = [len(w.frame_cv) for w in run.windows]
    if sum(counts) == 0:
        raise MlpotInputError("the umbrella run stored no frames (frame_every > steps?)")
    per_window = max(1, max_frames // len(run.windows))
    chosen = []
    for k, n in enumerate(counts):
        take = min(n, per_window)
        chosen += [(k, int(i)) for i in np.unique(np.linspace(0, n - 1, take).round())]
    return chosen


def oracle_energies(
    run: UmbrellaRun, frames: list[tuple[int, int]], oracle: Calculator, *, progress: bool
) -> np.ndarray:
    """The oracle energy (eV) of each frame, cached in the run directory as computed."""
    cache = run.directory / CACHE if run.directory is not None else None
    known: dict[str, float] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            known = dict(zip(data["keys"].tolist(), data["energies"].tolist(), strict=True))
    energies = []
    for k, i in tqdm(frames, desc="oracle energies", disable=not progress):
        key = f"{k}:{i}"
        if key not in known:
            atoms = Atoms(numbers=run.atoms.numbers, positions=run.windows[k].frame_positions[i],
                          cell=run.atoms.cell, pbc=run.atoms.pbc)  # fmt: skip
            atoms.calc = oracle
            known[key] = float(atoms.get_potential_energy())
            if cache is not None:
                tmp = cache.with_name("oracle_energies.tmp.npz")
                np.savez(tmp, keys=np.array(list(known)), energies=np.array(list(known.values())))
                os.replace(tmp, cache)
        energies.append(known[key])
    return np.array(energies)


def _frame_input(run: UmbrellaRun, frames: list[tuple[int, int]]) -> MBARInput:
    beta = 1.0 / (units.kB * run.plan.temperature_K)
    x = np.array([run.windows[k].frame_cv[i] for k, i in frames])
    origin = np.array([k for k, _ in frames])
    u_kn = np.array([beta * run.plan.restraint(k).energy(x) for k in range(len(run.windows))])
    n_k = np.bincount(origin, minlength=len(run.windows))
    return MBARInput(x, u_kn, n_k, origin, np.array([i for _, i in frames]), [])


def _unbiased_log_weights(data: MBARInput) -> np.ndarray:
    """log of each frame's MBAR weight in the unbiased ensemble (up to a constant)."""
    pymbar = _pymbar()
    mbar = pymbar.MBAR(data.u_kn, data.n_k, verbose=False)
    with np.errstate(divide="ignore"):
        log_n = np.log(data.n_k)[:, None]
    return -logsumexp(log_n + mbar.f_k[:, None] - data.u_kn, axis=0)


def kish(log_weights: np.ndarray) -> float:
    """Kish effective sample size of weights given by their logarithms."""
    if len(log_weights) == 0:
        return 0.0
    return float(np.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights)))


def reweight_to_oracle(
    run: UmbrellaRun,
    ml_pmf: PMF,
    oracle: Calculator,
    *,
    max_frames: int = 100,
    min_effective_samples: float = 20.0,
    min_bin_effective_samples: float = 3.0,
    progress: bool = True,
) -> ReweightedPMF:
    """Correct ``ml_pmf`` (the PMF of ``run``) to ``oracle`` from up to ``max_frames``
    labelled frames, bin by bin of ``ml_pmf`` (bins with fewer than
    ``min_bin_effective_samples`` are NaN in the reweighted PMF).
    Raises :class:`ReweightingUnreliable` when the effective sample size of the oracle
    weights is below ``min_effective_samples``."""
    frames = select_frames(run, max_frames)
    kT = units.kB * run.plan.temperature_K
    oracle_e = oracle_energies(run, frames, oracle, progress=progress)
    ml_e = np.array([run.windows[k].frame_energy[i] for k, i in frames])
    model_std = np.array([run.windows[k].frame_energy_std[i] for k, i in frames])
    relative_std = _relative_std(run, frames, model_std)
    delta = oracle_e - ml_e
    delta = delta - delta.mean()
    data = _frame_input(run, frames)
    log_w_ml = _unbiased_log_weights(data)
    which, _ = _bins_of(ml_pmf, data.x)
    correction, df, bin_eff, bin_std = _bin_corrections(
        which, len(ml_pmf.cv), log_w_ml, delta / kT, model_std, rng_seed=0
    )
    bin_eff_ml = np.array([kish(log_w_ml[which == b]) for b in range(len(ml_pmf.cv))])
    n_eff, n_eff_ml = float(bin_eff.sum()), float(bin_eff_ml.sum())
    rms_std = float(np.sqrt(np.nanmean(model_std**2))) if np.isfinite(model_std).any() else None
    summary = {
        "frames": len(frames),
        "effective_samples": n_eff,
        "effective_samples_ml_weights": n_eff_ml,
        "effective_fraction": n_eff / n_eff_ml if n_eff_ml > 0 else 0.0,
        "delta_energy_std_eV": float(delta.std()),
        "delta_energy_std_kT": float(delta.std() / kT),
        "model_energy_std_rms_eV": rms_std,
        "uncertainty_error_spearman": _spearman(model_std, np.abs(delta)),
        "relative_std_rms_eV": _rms(relative_std),
        "relative_std_error_spearman": _spearman(relative_std, np.abs(delta)),
        "min_effective_samples": min_effective_samples,
    }
    if n_eff < min_effective_samples:
        raise ReweightingUnreliable(
            f"reweighting to the oracle refused: {n_eff:.1f} effective samples of "
            f"{len(frames)} frames (at least {min_effective_samples:g} needed). The oracle "
            f"and the ML potential differ by ΔE with a spread of {delta.std():.3g} eV "
            f"({delta.std() / kT:.1f} kT) between frames, so a few frames carry all the "
            "weight. Improve the potential where the run went (label these frames and "
            "retrain), or reweight more frames."
        )
    correction, df = correction * kT, df * kT
    usable = bin_eff >= min_bin_effective_samples
    if usable.sum() < 2:
        raise ReweightingUnreliable(
            f"reweighting to the oracle refused: fewer than 2 bins of the PMF hold "
            f"{min_bin_effective_samples:g} effective samples of the {len(frames)} frames; "
            "reweight more frames"
        )
    summary["bins_corrected"] = int(usable.sum())
    summary["bins_without_enough_samples"] = int((~usable).sum())
    reference = _corrected(ml_pmf, usable, correction, df)
    return ReweightedPMF(ml_pmf, reference, ml_pmf.cv, np.where(usable, correction, np.nan),
                         np.where(usable, df, np.nan), bin_eff, bin_std, summary)  # fmt: skip


def _bins_of(pmf: PMF, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The PMF bin of each CV value in ``x`` (-1 outside), and the bin edges."""
    width = np.diff(pmf.cv).min() if len(pmf.cv) > 1 else 1.0
    which = np.full(len(x), -1)
    for b, centre in enumerate(pmf.cv):
        which[np.abs(x - centre) <= 0.5 * width + 1e-12] = b
    return which, np.append(pmf.cv - 0.5 * width, pmf.cv[-1] + 0.5 * width)


def _bin_corrections(which, n_bins, log_w_ml, beta_delta, model_std, *, rng_seed: int,
                     resamples: int = 200):  # fmt: skip
    """Per bin: −ln⟨exp(−βΔE)⟩ over its frames with their unbiased ML weights (kT units),
    its bootstrap standard error, the Kish N_eff of the oracle weights, and the mean model
    energy_std (eV)."""
    rng = np.random.default_rng(rng_seed)
    correction = np.full(n_bins, np.nan)
    error = np.full(n_bins, np.nan)
    n_eff = np.zeros(n_bins)
    std = np.full(n_bins, np.nan)
    for b in range(n_bins):
        members = np.flatnonzero(which == b)
        if len(members) == 0:
            continue
        lw, bd = log_w_ml[members], beta_delta[members]
        correction[b] = logsumexp(lw) - logsumexp(lw - bd)
        n_eff[b] = kish(lw - bd)
        std[b] = _mean(model_std[members])
        picks = rng.integers(len(members), size=(resamples, len(members)))
        boot = logsumexp(lw[picks], axis=1) - logsumexp((lw - bd)[picks], axis=1)
        error[b] = boot.std()
    return correction, error, n_eff, std


def _relative_std(run: UmbrellaRun, frames, model_std: np.ndarray) -> np.ndarray:
    """Per frame, the calibrated spread of the ensemble members' energies after removing
    each member's mean over the frames (eV; NaN without members). Reweighting depends on
    how ΔE varies between frames, not on an offset common to all of them, which dominates
    ``energy_std``: this is the spread that predicts ΔE's."""
    members = [run.windows[k].frame_member_energy[i] for k, i in frames]
    if not members or min(len(m) for m in members) < 2:
        return np.full(len(frames), np.nan)
    energies = np.array(members)  # (n_frames, K)
    raw = energies.std(axis=1)
    scale = np.nanmedian(model_std / np.where(raw > 0, raw, np.nan))  # the calibration
    return scale * (energies - energies.mean(axis=0)).std(axis=1)


def _rms(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(finite**2))) if len(finite) else None


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0.0:
        return None
    return float(spearmanr(a[ok], b[ok]).statistic)


def _corrected(ml: PMF, usable: np.ndarray, correction: np.ndarray, df: np.ndarray) -> PMF:
    """``ml`` plus the correction on the bins with enough effective samples; the others
    are NaN (the oracle's weights there rest on too few frames). Lowest bin back to 0."""
    free = np.where(usable, ml.free_energy + correction, np.nan)
    error = np.where(usable, np.sqrt(np.nan_to_num(ml.uncertainty) ** 2 + df**2), np.nan)
    return PMF(ml.cv_name, ml.cv_unit, ml.temperature_K, ml.cv, free - np.nanmin(free), error,
               ml.counts, {**ml.diagnostics, "reweighted_to": "oracle"})  # fmt: skip
