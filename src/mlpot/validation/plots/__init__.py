"""Plots of the report, one function per check: ``CheckResult -> [(caption, PNG bytes)]``."""

from __future__ import annotations

from collections.abc import Callable

from mlpot.validation.plots import static, thermal
from mlpot.validation.result import CheckResult

PLOTTERS: dict[str, Callable[[CheckResult], list[tuple[str, bytes]]]] = {
    "errors": thermal.errors,
    "nvt": thermal.nvt,
    "nve": thermal.nve,
    "rdf": thermal.rdf,
    "defects": static.defects,
    "neb": static.neb,
    "vibrations": static.vibrations,
    "elastic": static.elastic,
    "eos": static.eos,
    "dimers": static.dimers,
}


def plots_of(result: CheckResult) -> list[tuple[str, bytes]]:
    """The plots of one check (none when it was skipped or produced no figures)."""
    plotter = PLOTTERS.get(result.name)
    if plotter is None or result.passed is None or not result.figures:
        return []
    return plotter(result)
