"""Validation as the loop's stopping rule: the verdict of a quick validation, and what the
failing checks steer.

Where the loop would stop (converged, ``max_iterations``, ``target_force_rmse``), the current
committee is validated against the oracle (:func:`mlpot.active.report.quick_validation`).
When every applicable check passes the run stops, ``validated``. Otherwise the failing
checks say what to explore next:

* ``errors``, ``nvt``, ``nve`` or ``rdf`` failing at the validation temperature ``T``: the
  next round explores at ``T`` only, and ``T`` stays among the run's exploration
  temperatures;
* ``dimers``: for every element pair whose curve fails (no wall, or holes), isolated dimers
  at a few short distances go to the oracle, reason ``dimers``: from the shortest distance
  where the oracle's dimer force is still thermal (:data:`DIMER_MAX_FORCE`) to the oracle's
  minimum. Labels at the wall itself (tens to hundreds of eV/Å) would dominate a force
  loss and spoil the fit (measured on ethanol: a few of them raise the test force error 2
  to 5 times); two or three gentle ones tame the learned term's extrapolation to the wall;
* ``target_force_rmse`` (when ``stop.target_force_rmse`` is set): the committee's force RMSE
  on the held-out test set is above it. The target is part of what "trustworthy" means for
  the run, so checks that all pass do not stop it before the target is met; the next round
  explores at ``T`` (the test set is oracle MD at ``T``);
* when a round then finds nothing over ``select.force_std`` while the committee still
  fails, the committee is surer than it is right: the selection threshold is halved for
  the rounds that follow, at most :data:`MAX_TIGHTENINGS` times.

The loop validates again after each retraining, until the checks pass or a budget is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

THERMAL = ("errors", "nvt", "nve", "rdf")  # checks of MD at the validation temperature
DIMERS_CHECK = "dimers"
DIMER_SPAN = 3  # distances per failing pair, up to the oracle's minimum
DIMER_MAX_FORCE = 10.0  # eV/Å: the largest oracle dimer force labelled
DIMER_BOX = 20.0  # Å, vacuum around a dimer (free boundary conditions)
MAX_TIGHTENINGS = 3  # halvings of select.force_std after rounds that find nothing
TARGET = "target_force_rmse"  # the accuracy target, judged beside the checks


@dataclass
class Verdict:
    """The stopping-rule validation of model ``version``.

    Attributes:
        version: the model version (iteration) validated.
        passed: every applicable check passed.
        failing: check -> ``{"figures": {figure: {"value", "bound"}}, "reason": str}``.
        figures: every judged figure, ``"check.figure" -> value`` (None when not finite).
        steer: what it asks for: ``temperature`` (K, or None) and ``dimers``
            (``[[z1, z2, [distances Å]], ...]``).
    """

    version: int
    passed: bool
    failing: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, float | None] = field(default_factory=dict)
    steer: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The failing checks and their figures on one line, e.g. ``errors
        (forces_relative 0.26, needs ≤ 0.15)``."""
        return describe_failing(self.failing)


def describe_failing(failing: dict[str, dict[str, Any]]) -> str:
    """``check (figure value, needs bound; ...)`` for each failing check, comma-joined."""
    parts = []
    for name, outcome in failing.items():
        figures = outcome.get("figures") or {}
        items = [f"{key} {_number(f['value'])}, needs {f['bound']}" for key, f in figures.items()]
        if not items and outcome.get("reason"):
            items = [outcome["reason"].splitlines()[0][:120]]
        parts.append(f"{name} ({'; '.join(items)})" if items else name)
    return ", ".join(parts)


def _number(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3g}"


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def verdict_of(
    report,
    version: int,
    temperature: float,
    *,
    test_force_rmse: float | None = None,
    target_force_rmse: float | None = None,
) -> Verdict:
    """The verdict of a :class:`~mlpot.validation.ValidationReport` of model ``version``,
    validated at ``temperature`` K, and what its failing checks steer. With a
    ``target_force_rmse`` (eV/Å), the model's ``test_force_rmse`` on the held-out test set
    is judged beside the checks (:data:`TARGET`)."""
    failing: dict[str, dict[str, Any]] = {}
    figures: dict[str, float | None] = {}
    if target_force_rmse is not None and test_force_rmse is not None:
        figures[f"{TARGET}.test_force_rmse"] = _finite(test_force_rmse)
        missed = target_missed(test_force_rmse, target_force_rmse)
        if missed:
            failing[TARGET] = missed
    for check in report.checks:
        for key in check.tolerance:
            figures[f"{check.name}.{key}"] = _finite(check.figures.get(key, math.nan))
        if check.passed is not False:
            continue
        failing[check.name] = {
            "figures": {
                key: {
                    "value": _finite(check.figures.get(key, math.nan)),
                    "bound": check.tolerance[key].describe(),
                }
                for key in check.failed_figures()
            },
            "reason": check.reason,
        }
    steer: dict[str, Any] = {
        "temperature": float(temperature) if set(failing) & {*THERMAL, TARGET} else None,
        "dimers": [],
    }
    if DIMERS_CHECK in failing:
        steer["dimers"] = dimer_targets(report.check(DIMERS_CHECK))
    return Verdict(version, not failing, failing, figures, steer)


def target_missed(test_force_rmse: float, target_force_rmse: float | None) -> dict | None:
    """The failing entry of :data:`TARGET` when ``test_force_rmse`` is above
    ``target_force_rmse`` (eV/Å), else None (also without a target)."""
    if target_force_rmse is None or test_force_rmse <= target_force_rmse:
        return None
    return {
        "figures": {
            "test_force_rmse": {
                "value": _finite(test_force_rmse),
                "bound": f"<= {target_force_rmse:g}",
            }
        },
        "reason": "the force RMSE on the held-out test set is above stop.target_force_rmse",
    }


def target_verdict(version: int, temperature: float, test_force_rmse: float, target: float):
    """The verdict of model ``version`` that misses the accuracy target, judged before (and
    instead of) a validation: only :data:`TARGET` fails, and the next round explores at the
    test set's ``temperature``."""
    failing = {TARGET: target_missed(test_force_rmse, target)}
    figures = {f"{TARGET}.test_force_rmse": _finite(test_force_rmse)}
    steer = {"temperature": float(temperature), "dimers": []}
    return Verdict(version, False, failing, figures, steer)


def dimer_targets(check) -> list[list]:
    """``[[z1, z2, [distances Å]], ...]`` for the pairs of a failed dimer check whose wall
    is too low or whose curve has holes: :data:`DIMER_SPAN` distances from the shortest one
    of the check's grid where the oracle's force is at most :data:`DIMER_MAX_FORCE` to the
    oracle's minimum. Empty when the check produced no curves (it raised); a pair whose
    oracle curve has no such point is left out."""
    wall = check.tolerance.get("min_wall_eV")
    targets = []
    for label, curve in (check.details.get("curves") or {}).items():
        pair_wall = check.figures.get(f"{label}_wall_eV", math.nan)
        holes = check.figures.get(f"{label}_hole_points", 0)
        if (wall is None or wall.holds(pair_wall)) and not holes:
            continue
        r = np.asarray(curve["r_A"], dtype=float)  # (R,) Å
        oracle = np.asarray(curve["oracle_eV"], dtype=float)  # (R,) eV, NaN where it failed
        known = np.isfinite(oracle)
        if known.sum() < 3:
            continue
        force = np.abs(np.gradient(oracle[known], r[known]))  # eV/Å
        r_eq = float(curve["r_eq_A"])
        gentle = r[known][(force <= DIMER_MAX_FORCE) & (r[known] <= r_eq)]
        if not gentle.size:
            continue
        distances = np.linspace(gentle.min(), r_eq, DIMER_SPAN)
        z1, z2 = (atomic_numbers[s] for s in label.split("-"))
        targets.append([z1, z2, sorted({round(float(d), 3) for d in distances})])
    return targets


def dimer(z1: int, z2: int, distance: float) -> Atoms:
    """Two atoms ``distance`` Å apart, free, in a :data:`DIMER_BOX` Å box."""
    atoms = Atoms(
        numbers=[z1, z2], positions=[[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], cell=[DIMER_BOX] * 3
    )
    atoms.center()
    atoms.pbc = False
    return atoms


@dataclass
class Steering:
    """What the verdicts so far ask of exploration.

    Attributes:
        temperatures: the run's exploration temperatures, K (the config's, plus those of
            failed thermal checks).
        focus: the next round's temperatures (once), None: ``temperatures``.
        force_std_scale: factor on ``select.force_std`` (halved by :meth:`tighten`).
        tightenings: how often it was halved.
    """

    temperatures: list[float]
    focus: list[float] | None = None
    force_std_scale: float = 1.0
    tightenings: int = 0

    def apply(self, steer: dict[str, Any]) -> None:
        """Explore at the failing temperature next, and keep it."""
        temperature = steer.get("temperature")
        if temperature is None:
            return
        if temperature not in self.temperatures:
            self.temperatures.append(temperature)
        self.focus = [temperature]

    def next_temperatures(self) -> list[float]:
        """The temperatures of the next round (the focus, once)."""
        temperatures, self.focus = self.focus or self.temperatures, None
        return list(temperatures)

    def tighten(self) -> bool:
        """Halve the selection threshold; False when it was halved often enough."""
        if self.tightenings >= MAX_TIGHTENINGS:
            return False
        self.tightenings += 1
        self.force_std_scale *= 0.5
        return True
