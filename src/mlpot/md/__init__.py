"""Molecular dynamics set-up on ASE's integrators: thermostats, initial momenta, observers.

Used by active-learning exploration, the oracle MD of the held-out test set, and the
validation's MD checks. Sits between ``calculators`` and ``training`` in the import order.
"""

from mlpot.md.dynamics import (
    THERMOSTATS,
    MDUnstable,
    TemperatureGuard,
    Thermostat,
    labelled_snapshot,
    make_dynamics,
    run_guarded,
    start_momenta,
)

__all__ = [
    "THERMOSTATS",
    "MDUnstable",
    "TemperatureGuard",
    "Thermostat",
    "labelled_snapshot",
    "make_dynamics",
    "run_guarded",
    "start_momenta",
]
