"""Plots of the static checks: defects, NEB, frequencies, elastic constants, EOS, dimers."""

from __future__ import annotations

import numpy as np

from mlpot.validation.plots.common import MODEL_COLOUR, ORACLE_COLOUR, figure, parity, to_png
from mlpot.validation.result import CheckResult

Plot = tuple[str, bytes]


def _bars(ax, labels: list[str], model: list[float], oracle: list[float], unit: str) -> None:
    x = np.arange(len(labels))
    ax.bar(x - 0.2, oracle, 0.4, color=ORACLE_COLOUR, label="oracle")
    ax.bar(x + 0.2, model, 0.4, color=MODEL_COLOUR, label="model")
    ax.set_xticks(x, labels)
    ax.set_ylabel(unit)
    ax.legend(frameon=False)


def defects(result: CheckResult) -> list[Plot]:
    f = result.figures
    kinds = ["vacancy", "interstitial"]
    fig, (ax,) = figure(1)
    _bars(
        ax, kinds, [f[f"{k}_model_eV"] for k in kinds], [f[f"{k}_oracle_eV"] for k in kinds], "eV"
    )
    ax.set_title("formation energies")
    return [("Point-defect formation energies", to_png(fig))]


def neb(result: CheckResult) -> list[Plot]:
    d = result.details
    fig, (ax,) = figure(1, width=6.5)
    ax.plot(d["path_oracle_A"], d["energy_oracle_eV"], "o-", color=ORACLE_COLOUR, label="oracle")
    ax.plot(d["path_model_A"], d["energy_model_eV"], "s--", color=MODEL_COLOUR, label="model")
    ax.set_xlabel("path length (Å)")
    ax.set_ylabel("E - E(initial) (eV)")
    ax.set_title("vacancy hop, climbing-image NEB")
    ax.legend(frameon=False)
    return [("NEB energy profile", to_png(fig))]


def vibrations(result: CheckResult) -> list[Plot]:
    d = result.details
    model, oracle = np.asarray(d["model_cm1"]), np.asarray(d["oracle_cm1"])
    fig, (left, right) = figure(2)
    parity(left, oracle, model, label="frequency", unit="cm⁻¹")
    modes = np.arange(1, len(model) + 1)
    right.plot(modes, oracle, "o", ms=4, color=ORACLE_COLOUR, label="oracle")
    right.plot(modes, model, "x", ms=4, color=MODEL_COLOUR, label="model")
    right.set_xlabel("mode")
    right.set_ylabel("frequency (cm⁻¹)")
    right.legend(frameon=False)
    return [("Vibrational frequencies (imaginary as negative)", to_png(fig))]


def elastic(result: CheckResult) -> list[Plot]:
    f, d = result.figures, result.details
    keys = ["C11", "C12", "C44"]
    fig, (left, right) = figure(2)
    _bars(
        left, keys, [f[f"{k}_model_GPa"] for k in keys], [f[f"{k}_oracle_GPa"] for k in keys], "GPa"
    )
    left.set_title("cubic averages")
    diff = np.asarray(d["model_GPa"]) - np.asarray(d["oracle_GPa"])
    limit = max(float(np.abs(diff).max()), 1e-9)
    image = right.imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit)
    right.set_title("C(model) - C(oracle), GPa")
    right.set_xticks(range(6), ["xx", "yy", "zz", "yz", "xz", "xy"])
    right.set_yticks(range(6), ["xx", "yy", "zz", "yz", "xz", "xy"])
    fig.colorbar(image, ax=right)
    return [("Elastic constants", to_png(fig))]


def eos(result: CheckResult) -> list[Plot]:
    d = result.details
    fig, (ax,) = figure(1, width=6.5)
    v = d["volume_A3_per_atom"]
    ax.plot(v, d["energy_oracle_eV_per_atom"], "o-", color=ORACLE_COLOUR, label="oracle")
    ax.plot(v, d["energy_model_eV_per_atom"], "s--", color=MODEL_COLOUR, label="model")
    ax.set_xlabel("volume (Å³/atom)")
    ax.set_ylabel("energy (eV/atom)")
    ax.legend(frameon=False)
    return [("Equation of state", to_png(fig))]


def dimers(result: CheckResult) -> list[Plot]:
    curves = result.details["curves"]
    fig, axes = figure(min(len(curves), 3), height=3.2)
    plots = []
    for k, (label, c) in enumerate(curves.items()):
        if k and k % 3 == 0:
            plots.append((f"Dimer curves ({k // 3})", to_png(fig)))
            fig, axes = figure(min(len(curves) - k, 3), height=3.2)
        ax = axes[k % 3]
        model = np.asarray(c["model_eV"], dtype=float)
        oracle = np.asarray(c["oracle_eV"], dtype=float)
        ax.plot(c["r_A"], oracle, color=ORACLE_COLOUR, label="oracle")
        ax.plot(c["r_A"], model, color=MODEL_COLOUR, ls="--", label="model")
        finite = np.concatenate([model[np.isfinite(model)], oracle[np.isfinite(oracle)]])
        low = float(finite.min()) if finite.size else -1.0
        ax.set_ylim(low - 0.5, max(5.0, 0.5 - 2 * low))
        ax.axvline(c["r_eq_A"], color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("E - E(∞) (eV)")
        ax.set_title(label)
        ax.legend(frameon=False)
    plots.append(("Dimer curves" if not plots else f"Dimer curves ({len(plots) + 1})", to_png(fig)))
    return plots
