"""Oracles for failure injection: real EMT that fails on a deterministic subset of calls."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
from ase.calculators.emt import EMT


class FlakyEMT(EMT):
    """EMT that raises on about ``rate`` of configurations (chosen by a hash of the
    positions, so every retry of a failing configuration fails again: a permanent failure)."""

    def __init__(self, rate: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate = rate

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        digest = hashlib.sha256(atoms.positions.round(6).tobytes()).digest()
        if digest[0] / 256.0 < self.rate:
            raise RuntimeError("injected oracle failure (SCF did not converge)")
        super().calculate(atoms, properties, system_changes or ["positions"])


def flaky_emt(rate: float = 0.2) -> FlakyEMT:
    return FlakyEMT(rate=rate)


def _hit(atoms, rate: float, salt: bytes) -> bool:
    """A deterministic choice of about ``rate`` of configurations (by their positions)."""
    digest = hashlib.sha256(salt + atoms.positions.round(6).tobytes()).digest()
    return digest[0] / 256.0 < rate


class FaultyEMT(EMT):
    """EMT whose answer is broken on about ``rate`` of configurations: ``fault="nan"``
    gives NaN forces, ``fault="shape"`` forces with one row missing. The call succeeds: only
    checking the answer catches it."""

    def __init__(self, rate: float = 0.2, fault: str = "nan", **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate, self.fault = rate, fault

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes or ["positions"])
        if _hit(self.atoms, self.rate, b"faulty"):
            forces = self.results["forces"]
            self.results["forces"] = forces[:-1] if self.fault == "shape" else forces * np.nan


def faulty_emt(rate: float = 0.2, fault: str = "nan") -> FaultyEMT:
    return FaultyEMT(rate=rate, fault=fault)


class SlowEMT(EMT):
    """EMT that takes ``delay`` seconds longer per call (a run that stays live a while)."""

    def __init__(self, delay: float = 0.3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes or ["positions"])


def slow_emt(delay: float = 0.3) -> SlowEMT:
    return SlowEMT(delay=delay)


class WorkerFailingEMT(EMT):
    """EMT that fails whenever it runs outside the main thread (in a labelling thread):
    every label fails while the driver's own oracle work succeeds."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("injected oracle failure in a worker")
        super().calculate(atoms, properties, system_changes or ["positions"])


def worker_failing_emt() -> WorkerFailingEMT:
    return WorkerFailingEMT()
