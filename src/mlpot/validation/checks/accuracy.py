"""Prediction accuracy: errors of energy per atom, forces and stress on thermal structures,
set against kT. The check is named ``errors`` in reports and in ``checks=[...]``.

The structures are the frames of both Langevin runs (oracle-driven and model-driven) at the
target temperature, so the model is also tested where its own dynamics takes it. Each error
is expressed in units of ``kT``:

* energy: RMSE per atom / kT;
* forces: RMSE / RMS oracle force. In a harmonic well equipartition gives the thermal
  displacement ``u = kT / F_rms``, so this is ``RMSE_F · u / kT``;
* stress: RMSE · (V/N) / kT, the work error per atom of a unit strain, in kT.

When the model is a committee, the force standard deviations are kept for the
uncertainty-against-error and reliability plots (informative figures, not judged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.units import GPa

from mlpot.md import MDUnstable
from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "errors"  # the name in reports, figures and checks=[...]
MAX_POINTS = 4000  # force components kept for the plots


@dataclass
class Labels:
    """Energy (eV), forces ``(N, 3)`` eV/Å and Voigt stress ``(6,)`` eV/Å³ or None."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None


def labels_of(atoms: Atoms, *, stress: bool) -> Labels:
    """The results held by (or computed by) ``atoms.calc``."""
    return Labels(
        float(atoms.get_potential_energy()),
        np.asarray(atoms.get_forces(), dtype=float),
        np.asarray(atoms.get_stress(), dtype=float) if stress else None,
    )


def _frames(ctx: ValidationContext, driver: str, notes: list[str]) -> list[Atoms]:
    """Frames of ``driver``'s run; none (and a note) when the model's MD was unstable."""
    if driver == ORACLE:
        return ctx.nvt(ORACLE).frames
    try:
        return ctx.nvt(MODEL).frames
    except MDUnstable as err:
        notes.append(f"only oracle-MD frames: {err}")
        return []


def _pairs(
    ctx: ValidationContext, stress: bool, notes: list[str]
) -> tuple[list[Labels], list[Labels], list[str]]:
    """Model and oracle labels on the frames of both runs, and which run each came from."""
    model, oracle, source = [], [], []
    for driver, other in ((ORACLE, MODEL), (MODEL, ORACLE)):
        for frame in _frames(ctx, driver, notes):
            own = labels_of(frame, stress=stress)
            copy = frame.copy()
            copy.calc = ctx.calculator(other)
            theirs = labels_of(copy, stress=stress)
            model.append(own if driver == MODEL else theirs)
            oracle.append(theirs if driver == MODEL else own)
            source.append(f"{driver} MD")
    return model, oracle, source


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _subsample(*arrays: np.ndarray, seed: int) -> list[np.ndarray]:
    n = arrays[0].size
    keep = np.arange(n)
    if n > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))
    return [a.reshape(-1)[keep] for a in arrays]


def run(ctx: ValidationContext) -> CheckResult:
    stress = ctx.system.is_crystal and ctx.oracle.has_stress
    notes: list[str] = []
    model, oracle, source = _pairs(ctx, stress, notes)
    n_atoms = len(ctx.system.atoms)
    kT, tol = ctx.kT, ctx.tolerances
    e_model = np.array([m.energy for m in model]) / n_atoms  # (F,) eV/atom
    e_oracle = np.array([o.energy for o in oracle]) / n_atoms
    f_model = np.stack([m.forces for m in model])  # (F, N, 3)
    f_oracle = np.stack([o.forces for o in oracle])
    e_rmse, f_rmse = _rmse(e_model - e_oracle), _rmse(f_model - f_oracle)
    f_rms = _rmse(f_oracle)
    figures = {
        "n_frames": len(model),
        "kT_meV": kT * 1e3,
        "energy_rmse_meV_per_atom": e_rmse * 1e3,
        "energy_mae_meV_per_atom": float(np.mean(np.abs(e_model - e_oracle))) * 1e3,
        "energy_rmse_per_atom_kT": e_rmse / kT,
        "forces_rmse_eV_per_A": f_rmse,
        "forces_mae_eV_per_A": float(np.mean(np.abs(f_model - f_oracle))),
        "forces_rms_oracle_eV_per_A": f_rms,
        "forces_relative": f_rmse / f_rms if f_rms > 0 else float("nan"),
    }
    tolerance = {
        "energy_rmse_per_atom_kT": Bound(tol.energy_per_atom_kT, unit="kT"),
        "forces_relative": Bound(tol.forces_relative),
    }
    fm, fo = _subsample(f_model, f_oracle, seed=ctx.settings.seed)
    details = {
        "energy_oracle": e_oracle,
        "energy_model": e_model,
        "source": source,
        "forces_oracle": fo,
        "forces_model": fm,
    }
    if stress:
        s_model = np.stack([m.stress for m in model]) / GPa  # (F, 6) GPa
        s_oracle = np.stack([o.stress for o in oracle]) / GPa
        s_rmse = _rmse(s_model - s_oracle)
        volume_per_atom = ctx.system.atoms.get_volume() / n_atoms
        figures["stress_rmse_GPa"] = s_rmse
        figures["stress_kT"] = s_rmse * GPa * volume_per_atom / kT
        tolerance["stress_kT"] = Bound(tol.stress_kT, unit="kT")
        details.update(stress_oracle=s_oracle.ravel(), stress_model=s_model.ravel())
    else:
        why = (
            "the system is not a 3D crystal"
            if not ctx.system.is_crystal
            else f"oracle {ctx.oracle.name} has no stress"
        )
        notes.append(f"stress not compared: {why}")
    figures.update(_uncertainty(ctx, model, oracle, details))
    if notes:
        details["note"] = "; ".join(notes)
    return judged(NAME, figures, tolerance, details)


def _uncertainty(
    ctx: ValidationContext, model: list[Labels], oracle: list[Labels], details: dict
) -> dict[str, float]:
    """Committee force spread against the force error, when the model is a committee."""
    if not ctx.model.member_models():
        return {}
    from mlpot.validation.uncertainty import force_spread

    frames = [f for driver in (ORACLE, MODEL) for f in _frames(ctx, driver, [])]
    std = np.stack([force_spread(ctx.model, f, ctx.uncertainty_scale) for f in frames])
    error = np.stack([m.forces - o.forces for m, o in zip(model, oracle, strict=True)])
    abs_error, sigma = _subsample(np.abs(error), std, seed=ctx.settings.seed)
    details["uncertainty"] = {"abs_error": abs_error, "std": sigma}
    z = error / np.maximum(std, 1e-12)
    return {
        "forces_std_mean_eV_per_A": float(np.mean(std)),
        "forces_z_rms": _rmse(z),
        "forces_std_error_spearman": _spearman(np.abs(error).ravel(), std.ravel()),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])
