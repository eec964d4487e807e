"""What a validation produces: one :class:`CheckResult` per check, gathered in a report.

A check measures *figures* (plain floats whose names end in their unit, e.g.
``barrier_model_eV``) and judges some of them against a *tolerance*: a :class:`Bound` per
judged figure. It passes when every bound holds; a NaN figure never holds. A check that does
not apply to the system (stress of a molecule, a vacancy in a molecule) is *skipped*:
``passed is None`` and ``reason`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class Bound:
    """``lower <= value <= upper`` (either side may be open), in ``unit``."""

    upper: float | None = None
    lower: float | None = None
    unit: str = ""

    def holds(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.upper is not None and value > self.upper:
            return False
        return not (self.lower is not None and value < self.lower)

    def describe(self) -> str:
        """Human-readable bound, e.g. ``≤ 0.05 eV`` or ``0.5 … 2``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.lower is not None and self.upper is not None:
            return f"{self.lower:g} … {self.upper:g}{unit}"
        if self.upper is not None:
            return f"≤ {self.upper:g}{unit}"
        return f"≥ {self.lower:g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper, "unit": self.unit}


@dataclass
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: check name (``errors``, ``nve``, ``defects``, ...).
        figures: every number measured, names ending in their unit.
        tolerance: judged figures -> bound.
        passed: True/False, or None when skipped.
        details: series for the plots (lists of floats) and notes (strings).
        reason: why it was skipped or why it failed outright (an exception, unstable MD).
        wall_time_s: seconds spent in the check.
    """

    name: str
    figures: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, Bound] = field(default_factory=dict)
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    wall_time_s: float = 0.0

    @property
    def status(self) -> str:
        """``pass``, ``fail`` or ``skip``."""
        return SKIP if self.passed is None else (PASS if self.passed else FAIL)

    def failed_figures(self) -> list[str]:
        """Names of the judged figures whose bound does not hold."""
        return [k for k, b in self.tolerance.items() if not b.holds(self.figures.get(k))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "passed": self.passed,
            "reason": self.reason,
            "wall_time_s": self.wall_time_s,
            "figures": {k: _json_float(v) for k, v in self.figures.items()},
            "tolerance": {k: b.to_dict() for k, b in self.tolerance.items()},
            "failed": self.failed_figures() if self.passed is not None else [],
            "details": _jsonable(self.details),
        }


def judged(
    name: str,
    figures: dict[str, float],
    tolerance: dict[str, Bound],
    details: dict[str, Any] | None = None,
    *,
    reason: str = "",
) -> CheckResult:
    """A check result whose verdict is "every bound holds"."""
    figures = {k: float(v) for k, v in figures.items()}
    missing = [k for k in tolerance if k not in figures]
    if missing:
        raise KeyError(f"check {name!r}: judged figures {missing} were not measured")
    passed = all(b.holds(figures[k]) for k, b in tolerance.items())
    return CheckResult(name, figures, dict(tolerance), passed, details or {}, reason)


def skipped(name: str, reason: str) -> CheckResult:
    """A check that does not apply, with the reason."""
    return CheckResult(name, passed=None, reason=reason)


def failed(name: str, reason: str, details: dict[str, Any] | None = None) -> CheckResult:
    """A check that could not produce its figures (it raised, or the MD blew up)."""
    return CheckResult(name, passed=False, reason=reason, details=details or {})


@dataclass
class ValidationReport:
    """All checks of one validation, and what was validated against what.

    Attributes:
        model: description of the model (name, elements, cutoff, source path).
        oracle: description of the oracle (name and parameters, or calculator class).
        system: name and composition of the system.
        temperature_K: target temperature of the thermal checks, K.
        checks: results in the order they ran.
        wall_time_s: total seconds.
        extra_figures: figures supplied by the caller (e.g. calibration metrics).
        extra_plots: name -> PNG bytes supplied by the caller (e.g. a reliability diagram).
        settings: the settings and tolerances the checks ran with.
    """

    model: dict[str, Any]
    oracle: dict[str, Any]
    system: dict[str, Any]
    temperature_K: float
    checks: list[CheckResult]
    wall_time_s: float = 0.0
    extra_figures: dict[str, Any] = field(default_factory=dict)
    extra_plots: dict[str, bytes] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks do not count)."""
        return not any(c.passed is False for c in self.checks)

    def check(self, name: str) -> CheckResult:
        """The result of check ``name`` (KeyError if it did not run)."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"no check {name!r} in this report; ran {[c.name for c in self.checks]}")

    def counts(self) -> dict[str, int]:
        """Number of checks per status."""
        out = {PASS: 0, FAIL: 0, SKIP: 0}
        for result in self.checks:
            out[result.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types (the report's JSON file)."""
        return {
            "model": _jsonable(self.model),
            "oracle": _jsonable(self.oracle),
            "system": _jsonable(self.system),
            "temperature_K": self.temperature_K,
            "passed": self.passed,
            "counts": self.counts(),
            "wall_time_s": self.wall_time_s,
            "checks": [c.to_dict() for c in self.checks],
            "extra_figures": _jsonable(self.extra_figures),
            "extra_plots": sorted(self.extra_plots),
            "settings": _jsonable(self.settings),
        }


def _json_float(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Numpy arrays and scalars to lists and floats; NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _json_float(value)
    return value
