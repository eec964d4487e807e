"""Quantum free-energy barriers and kinetic isotope effects: umbrella sampling of the
ring-polymer centroid along a reaction coordinate, for each isotope, by PIMD (i-PI).

Each window restrains the centroid's CV (:mod:`mlpot.apps.pimd`); MBAR turns the centroid
CV samples into the centroid PMF F(ξ) (:mod:`mlpot.apps.mbar`). With one bead the same
machinery gives the classical PMF, so classical and quantum barriers come from one code
path.

Rates by centroid-density transition-state theory:

    k = sqrt(G‡ / (2π β)) · exp(−β F(ξ‡)) / ∫_reactant exp(−β F(ξ)) dξ,

with ξ‡ the given dividing surface (0 for a symmetric transfer) or the PMF maximum between
the reactant and product minima, and G‡ = Σ_i |∇_i ξ|²/m_i
at the transition-state structure (the mass-weighted metric of the coordinate; it carries
the isotope's mass into the prefactor). The KIE is k_light/k_heavy; its uncertainty
propagates MBAR's uncertainty of F(ξ‡) relative to the reactant minimum for both
isotopes (δ ln KIE = β (δF_light² + δF_heavy²)^½).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from tqdm.auto import tqdm

from mlpot.apps.mbar import PMF, umbrella_pmf
from mlpot.apps.pimd import PIMDSettings, run_pimd
from mlpot.apps.umbrella import (
    UmbrellaPlan,
    UmbrellaRun,
    WindowSamples,
    make_potential,
    starting_structures,
)
from mlpot.errors import MlpotInputError


@dataclass
class Barrier:
    """The barrier of one PMF: transition state, reactant minimum, barrier height (eV)
    with its uncertainty, and the TST rate (1/fs) with ln-uncertainty."""

    transition_state: float
    reactant_minimum: float
    barrier: float
    barrier_uncertainty: float
    rate_per_fs: float
    ln_rate_uncertainty: float
    metric: float  # G‡, Å²/amu (or rad²/(Å² amu))


@dataclass
class IsotopeEffect:
    """Centroid PMFs per isotope label (``classical`` for one bead), their barriers and the
    kinetic isotope effect ``light``/``heavy`` with its uncertainty."""

    pmfs: dict[str, PMF]
    barriers: dict[str, Barrier]
    kie: float
    kie_uncertainty: float
    summary: dict = field(default_factory=dict)


def centroid_umbrella(
    potential: Calculator,
    atoms: Atoms,
    plan: UmbrellaPlan,
    settings: PIMDSettings,
    directory: str | Path,
    *,
    masses=None,
    starts: np.ndarray | None = None,
    progress: bool = True,
) -> UmbrellaRun:
    """Umbrella sampling of the centroid CV: one PIMD run per window of ``plan`` (its
    temperature, steps and seed are those of ``settings``), each resumable in
    ``directory/window_NNN``. ``starts``: one structure per window (default: restrained
    relaxations on ``potential``)."""
    directory = Path(directory)
    plan.cv.check_atoms(atoms)
    if starts is None:
        starts = starting_structures(atoms, potential, plan)
    windows = []
    for k in tqdm(range(len(plan.centres)), desc="PIMD windows", disable=not progress):
        start = atoms.copy()
        start.calc = None
        start.positions = starts[k]
        result = run_pimd(potential, start, settings, directory / f"window_{k:03d}",
                          masses=masses, restraint=plan.restraint(k), progress=False)  # fmt: skip
        cv = result.centroid_cv
        empty = np.zeros(0)
        windows.append(WindowSamples(plan.centres[k], cv, np.full(len(cv), np.nan),
                                     np.full(len(cv), np.nan), np.zeros((0, len(atoms), 3)),
                                     empty, empty, empty, np.zeros((0, 0))))  # fmt: skip
    return UmbrellaRun(plan, atoms, windows, directory)


def barrier(
    pmf: PMF,
    atoms: Atoms,
    cv_at_ts: Atoms | None = None,
    *,
    masses=None,
    reactant_side: str = "lower",
    cv=None,
    transition_state: float | None = None,
) -> Barrier:
    """TST barrier and rate of ``pmf``. The dividing surface is ``transition_state`` (e.g.
    0 for a symmetric transfer) or, by default, the highest point between the two deepest
    minima; the reactant is the basin on ``reactant_side`` (``lower``/``higher`` CV values).
    ``cv``: the collective variable (for the metric G‡, evaluated on ``cv_at_ts`` or
    ``atoms`` with ``masses``)."""
    x, f, df = pmf.cv, pmf.free_energy, np.nan_to_num(pmf.uncertainty)
    beta = 1.0 / (units.kB * pmf.temperature_K)
    if transition_state is None:
        ts = _transition_state(x, f)
    else:
        ts = int(np.argmin(np.abs(x - transition_state)))
    reactant = x < x[ts] if reactant_side == "lower" else x > x[ts]
    if not reactant.any():
        raise MlpotInputError(f"no reactant basin on the {reactant_side} side of the PMF")
    r_min = np.flatnonzero(reactant)[np.argmin(f[reactant])]
    width = float(np.diff(x).mean())
    log_q = np.log(np.sum(np.exp(-beta * (f[reactant] - f[r_min]))) * width)
    metric = _metric(cv, cv_at_ts if cv_at_ts is not None else atoms, masses)
    # ASE units: kT in eV, masses in amu, lengths in Å -> time in ASE units; 1/fs below
    prefactor = np.sqrt(metric / (2.0 * np.pi * beta))
    rate = prefactor * np.exp(-beta * (f[ts] - f[r_min]) - log_q) * units.fs
    error = float(np.hypot(df[ts], df[r_min]))
    return Barrier(float(x[ts]), float(x[r_min]), float(f[ts] - f[r_min]), error,
                   float(rate), beta * error, metric)  # fmt: skip


def _transition_state(x: np.ndarray, f: np.ndarray) -> int:
    """Index of the highest bin between the two deepest local minima of ``f``."""
    minima = [i for i in range(len(f)) if (i == 0 or f[i] <= f[i - 1])
              and (i == len(f) - 1 or f[i] <= f[i + 1])]  # fmt: skip
    if len(minima) < 2:
        raise MlpotInputError(
            "the PMF has a single minimum: no barrier between two basins on the sampled range"
        )
    a, b = sorted(sorted(minima, key=lambda i: f[i])[:2])
    return a + int(np.argmax(f[a : b + 1]))


def _metric(cv, atoms: Atoms, masses) -> float:
    """G = Σ_i |∇_i ξ|² / m_i (CV units² / (Å² amu) · Å²)."""
    if cv is None:
        return 1.0
    _, gradient = cv.evaluate(atoms)
    m = atoms.get_masses() if masses is None else np.asarray(masses, dtype=float)
    return float(np.sum(np.sum(gradient**2, axis=1) / m))


def kinetic_isotope_effect(
    potential,
    atoms: Atoms,
    plan: UmbrellaPlan,
    settings: PIMDSettings,
    directory: str | Path,
    *,
    light_masses,
    heavy_masses,
    classical: bool = True,
    bins: int = 30,
    reactant_side: str = "lower",
    transition_state: float | None = None,
    progress: bool = True,
) -> IsotopeEffect:
    """Centroid umbrella sampling for the light and the heavy isotopologue (and, with
    ``classical``, one bead), their PMFs, barriers and the KIE k_light/k_heavy.
    ``transition_state``: the dividing surface (CV value) if known, e.g. 0 by symmetry."""
    potential = make_potential(potential) if isinstance(potential, str | Path) else potential
    directory = Path(directory)
    starts = starting_structures(atoms, potential, plan)
    runs = {"light": (light_masses, settings), "heavy": (heavy_masses, settings)}
    if classical:
        one_bead = PIMDSettings(**{**settings.__dict__, "beads": 1})
        runs["classical"] = (light_masses, one_bead)
    pmfs, barriers = {}, {}
    for label, (masses, run_settings) in runs.items():
        run = centroid_umbrella(potential, atoms, plan, run_settings, directory / label,
                                masses=masses, starts=starts, progress=progress)  # fmt: skip
        pmfs[label] = umbrella_pmf(run, bins=bins)
        ts_atoms = _structure_near(atoms, starts, plan, pmfs[label], transition_state)
        barriers[label] = barrier(pmfs[label], atoms, ts_atoms, masses=masses,
                                  reactant_side=reactant_side, cv=plan.cv,
                                  transition_state=transition_state)  # fmt: skip
    light, heavy = barriers["light"], barriers["heavy"]
    kie = light.rate_per_fs / heavy.rate_per_fs
    error = kie * float(np.hypot(light.ln_rate_uncertainty, heavy.ln_rate_uncertainty))
    summary = {
        "kie": kie,
        "kie_uncertainty": error,
        **{f"barrier_{k}_eV": b.barrier for k, b in barriers.items()},
        **{f"barrier_{k}_uncertainty_eV": b.barrier_uncertainty for k, b in barriers.items()},
        "beads": settings.beads,
        "temperature_K": settings.temperature_K,
    }
    return IsotopeEffect(pmfs, barriers, kie, error, summary)


def _structure_near(atoms: Atoms, starts: np.ndarray, plan: UmbrellaPlan, pmf: PMF,
                    transition_state: float | None) -> Atoms:  # fmt: skip
    """The starting structure of the window closest to the transition state."""
    ts = transition_state
    if ts is None:
        ts = pmf.cv[_transition_state(pmf.cv, pmf.free_energy)]
    k = int(np.argmin(np.abs(np.asarray(plan.centres) - ts)))
    copy = atoms.copy()
    copy.positions = starts[k]
    return copy
