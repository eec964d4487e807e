"""Plots of the thermal checks: parity, error histograms, uncertainty, T trace, drift, RDF."""

from __future__ import annotations

import numpy as np

from mlpot.validation.plots.common import MODEL_COLOUR, ORACLE_COLOUR, figure, parity, to_png
from mlpot.validation.result import CheckResult
from mlpot.validation.uncertainty import reliability_curve

Plot = tuple[str, bytes]  # (caption, PNG)


def _quantities(d: dict) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    out = [
        ("energy", "eV/atom", np.asarray(d["energy_oracle"]), np.asarray(d["energy_model"])),
        ("forces", "eV/Å", np.asarray(d["forces_oracle"]), np.asarray(d["forces_model"])),
    ]
    if "stress_oracle" in d:
        out.append(("stress", "GPa", np.asarray(d["stress_oracle"]), np.asarray(d["stress_model"])))
    return out


def errors(result: CheckResult) -> list[Plot]:
    quantities = _quantities(result.details)
    fig, axes = figure(len(quantities))
    for ax, (label, unit, ref, pred) in zip(axes, quantities, strict=True):
        parity(ax, ref, pred, label=label, unit=unit)
    plots = [("Parity: model against oracle on frames of both MD runs", to_png(fig))]
    fig, axes = figure(len(quantities))
    for ax, (label, unit, ref, pred) in zip(axes, quantities, strict=True):
        scale = 1e3 if label == "energy" else 1.0
        shown = "meV/atom" if label == "energy" else unit
        ax.hist((pred - ref) * scale, bins=40, color=MODEL_COLOUR, alpha=0.8)
        ax.axvline(0.0, color="0.3", lw=0.8)
        ax.set_xlabel(f"model - oracle ({shown})")
        ax.set_ylabel("count")
        ax.set_title(f"{label} error")
    plots.append(("Error histograms", to_png(fig)))
    if "uncertainty" in result.details:
        plots.append(_uncertainty(result.details["uncertainty"]))
    return plots


def _uncertainty(data: dict) -> Plot:
    abs_error, std = np.asarray(data["abs_error"]), np.asarray(data["std"])
    fig, (left, right) = figure(2)
    left.loglog(std, abs_error, ".", ms=2, alpha=0.4, color=MODEL_COLOUR)
    lo = max(min(std.min(), abs_error[abs_error > 0].min(initial=1.0)), 1e-6)
    hi = max(std.max(), abs_error.max())
    left.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, label="|error| = σ")
    left.set_xlabel("committee σ (eV/Å)")
    left.set_ylabel("|force error| (eV/Å)")
    left.set_title("uncertainty against error")
    left.legend(frameon=False)
    levels, observed = reliability_curve(abs_error, std)
    right.plot([0, 1], [0, 1], color="0.3", lw=0.8, label="calibrated")
    right.plot(levels, observed, "o-", color=MODEL_COLOUR, ms=3, label="model")
    right.set_xlabel("expected coverage")
    right.set_ylabel("observed coverage")
    right.set_title("reliability diagram (force components)")
    right.legend(frameon=False)
    return ("Committee uncertainty: error against σ, and reliability", to_png(fig))


def nvt(result: CheckResult) -> list[Plot]:
    d, f = result.details, result.figures
    t, temperature = np.asarray(d["time_fs"]), np.asarray(d["temperature_K"])
    target, sigma = f["expected_mean_K"], np.sqrt(f["expected_variance_K2"])
    fig, (left, right) = figure(2)
    left.plot(t * 1e-3, temperature, color=MODEL_COLOUR, lw=0.7)
    left.axhline(target, color="0.2", lw=1)
    left.axhspan(target - sigma, target + sigma, color=ORACLE_COLOUR, alpha=0.2, label="T ± σ")
    left.set_xlabel("time (ps)")
    left.set_ylabel("temperature (K)")
    left.legend(frameon=False)
    right.hist(temperature, bins=40, density=True, color=MODEL_COLOUR, alpha=0.7, label="model")
    grid = np.linspace(temperature.min(), temperature.max(), 200)
    gauss = np.exp(-0.5 * ((grid - target) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    right.plot(grid, gauss, color=ORACLE_COLOUR, label="canonical (Gaussian approx.)")
    right.set_xlabel("temperature (K)")
    right.set_ylabel("density")
    right.legend(frameon=False)
    return [("Langevin temperature and its distribution", to_png(fig))]


def nve(result: CheckResult) -> list[Plot]:
    d = result.details
    t = np.asarray(d["time_fs"]) * 1e-3
    slope, intercept = d["fit"]
    fig, (ax,) = figure(1, width=6.5)
    ax.plot(t, d["total_meV_per_atom"], color=MODEL_COLOUR, lw=0.8, label="total")
    ax.plot(t, slope * t + intercept, color="0.2", lw=1, ls="--", label=f"drift {slope:.3g}")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("E - E(0) (meV/atom)")
    ax.set_title("NVE total energy (drift in meV/atom/ps)")
    ax.legend(frameon=False)
    return [("Energy drift of velocity-Verlet MD", to_png(fig))]


def rdf(result: CheckResult) -> list[Plot]:
    d = result.details
    fig, (ax,) = figure(1, width=6.5)
    ax.plot(d["r_A"], d["g_oracle"], color=ORACLE_COLOUR, lw=1.5, label="oracle MD")
    ax.plot(d["r_A"], d["g_model"], color=MODEL_COLOUR, lw=1.2, ls="--", label="model MD")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel(d["normalisation"])
    ax.legend(frameon=False)
    return [("Radial distribution overlay", to_png(fig))]
