"""Oracles for failure injection: real EMT that fails on a deterministic subset of calls."""

from __future__ import annotations

import hashlib

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
