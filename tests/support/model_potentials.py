"""Analytic potentials whose free energies and quantum statistics are known exactly."""

from __future__ import annotations

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator, all_changes


class DoubleWellBond(Calculator):
    """Two atoms bound by V(r) = h ((r − c)²/w² − 1)²: minima at c ± w, barrier h (eV) at
    c. The PMF of the distance at temperature T is V(r) − 2kT ln r (the 4πr² Jacobian)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, height: float = 0.1, centre: float = 1.5, width: float = 0.3,
                 fail_after: list | None = None) -> None:  # fmt: skip
        super().__init__()
        self.h, self.c, self.w = height, centre, width
        self.fail_after = fail_after  # [n]: shared countdown; raise when it reaches 0

    def potential(self, r):
        return self.h * (((np.asarray(r) - self.c) / self.w) ** 2 - 1.0) ** 2

    def pmf(self, r, temperature_K: float):
        """Exact PMF (eV) of the distance, up to a constant."""
        return self.potential(r) - 2.0 * units.kB * temperature_K * np.log(r)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.fail_after is not None:
            self.fail_after[0] -= 1
            if self.fail_after[0] < 0:
                raise RuntimeError("injected failure: the run is killed here")
        d = self.atoms.positions[1] - self.atoms.positions[0]
        r = float(np.linalg.norm(d))
        x = (r - self.c) / self.w
        dv_dr = 4.0 * self.h * (x**2 - 1.0) * x / self.w
        force = dv_dr * d / r
        self.results = {"energy": float(self.potential(r)), "forces": np.array([force, -force])}


class Harmonic(Calculator):
    """Isotropic harmonic wells ½ k |r − r₀|² for every atom around its start, k in eV/Å²."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, k: float, origin) -> None:
        super().__init__()
        self.k, self.origin = k, np.asarray(origin, dtype=float)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions - self.origin
        self.results = {"energy": 0.5 * self.k * float((d**2).sum()), "forces": -self.k * d}


def harmonic_quantum_kinetic_energy(k: float, mass: float, temperature_K: float,
                                    beads: int | None = None) -> float:  # fmt: skip
    """Kinetic energy (eV) of a 3D isotropic harmonic oscillator (k eV/Å², mass amu):
    exact (3ħω/4) coth(βħω/2), or with ``beads`` the exact value of the P-bead path
    integral, (3kT/2)(1 + Σ_k ω²/(ω_P² 4 sin²(πk/P) + ω²)), ω_P = P kT/ħ."""
    omega = np.sqrt(k * units._e / 1e-20 / (mass * units._amu))  # 1/s
    hbar_omega = units._hbar * omega / units._e  # eV
    kT = units.kB * temperature_K
    if beads is None:
        return 0.75 * hbar_omega / np.tanh(hbar_omega / (2.0 * kT))
    ratio = beads * kT / hbar_omega  # ω_P / ω
    modes = 4.0 * np.sin(np.pi * np.arange(1, beads) / beads) ** 2
    return 1.5 * kT * (1.0 + float(np.sum(1.0 / (ratio**2 * modes + 1.0))))


def double_well_factory(height: float, centre: float, width: float):
    """A picklable factory (for windows in other processes)."""
    from functools import partial

    return partial(DoubleWellBond, height, centre, width)
