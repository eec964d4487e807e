"""Molecular dynamics set-up, the one place that does it: ASE's integrators from thermostat
options, initial momenta, and observers that guard a run.

mlpot has no MD engine of its own. Every run is an ASE ``MolecularDynamics`` object
(``Langevin``, ``Bussi`` or ``VelocityVerlet``); logging, recording and checks are
observers attached with its ``attach(observer, interval)``, or the caller steps it with
``irun``. Units: fs, K, Å (converted to ASE's units here).

Langevin runs without the centre-of-mass constraint (``fixcm=False``), so all ``3N``
degrees of freedom are thermalised and the kinetic temperature has the canonical mean
``T`` and variance ``2T²/(3N)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import Stationary, ZeroRotation

from mlpot.errors import MlpotInputError
from mlpot.physics.velocities import thermalize_momenta

Thermostat = Literal["langevin", "bussi", "nve"]
THERMOSTATS: tuple[str, ...] = ("langevin", "bussi", "nve")


class MDUnstable(RuntimeError):
    """The temperature ran away or became NaN, or atoms were driven onto each other: the
    potential is not fit for MD here."""


def make_dynamics(
    atoms: Atoms,
    *,
    thermostat: Thermostat,
    timestep_fs: float,
    temperature_K: float | None = None,
    friction_per_fs: float = 0.02,
    bussi_tau_fs: float = 50.0,
    rng: np.random.Generator | None = None,
) -> MolecularDynamics:
    """ASE dynamics for ``atoms`` (which carry their calculator).

    Args:
        thermostat: ``langevin`` (friction ``friction_per_fs``, 1/fs), ``bussi``
            (stochastic velocity rescaling, time constant ``bussi_tau_fs``, fs) or ``nve``
            (velocity Verlet, no thermostat).
        timestep_fs: time step, fs.
        temperature_K: thermostat temperature, K (not used by ``nve``).
        rng: the thermostat's random numbers (``numpy.random.Generator``).
    """
    dt = timestep_fs * units.fs
    if thermostat == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    if temperature_K is None:
        raise ValueError(f"the {thermostat} thermostat needs a temperature")
    if thermostat == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms,
            dt,
            temperature_K=temperature_K,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    if thermostat == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, temperature_K=temperature_K, taut=bussi_tau_fs * units.fs, rng=rng)
    raise ValueError(f"unknown thermostat {thermostat!r}: one of {', '.join(THERMOSTATS)}")


def start_momenta(
    atoms: Atoms,
    temperature_K: float,
    *,
    rng: np.random.Generator,
    zero_rotation: bool = False,
) -> None:
    """Maxwell–Boltzmann momenta at ``temperature_K`` (K) drawn with ``rng``, without
    centre-of-mass motion; with ``zero_rotation`` a non-periodic system also loses its
    angular momentum (a free molecule would otherwise spin, unthermalised)."""
    thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    if zero_rotation and not atoms.pbc.any():
        ZeroRotation(atoms)


class TemperatureGuard:
    """Observer: the kinetic temperature of ``atoms`` (K), raising :class:`MDUnstable`
    when it is not finite or above ``limit_K``. ``label`` names the run in the message."""

    def __init__(self, atoms: Atoms, limit_K: float, label: str) -> None:
        self.atoms, self.limit_K, self.label = atoms, limit_K, label

    def __call__(self) -> float:
        temperature = float(self.atoms.get_temperature())
        if not np.isfinite(temperature) or temperature > self.limit_K:
            raise MDUnstable(
                f"{self.label} MD unstable: T = {temperature:.0f} K (limit {self.limit_K:.0f} K)"
            )
        return temperature


def run_guarded(dynamics: MolecularDynamics, steps: int, label: str) -> None:
    """Run ``steps``; atoms driven onto each other (or to NaN positions), which the model's
    calculator refuses, count as :class:`MDUnstable` MD."""
    try:
        dynamics.run(steps)
    except MlpotInputError as err:
        if err.field != "positions":
            raise
        raise MDUnstable(f"{label} MD unstable: {err}") from None


def labelled_snapshot(atoms: Atoms, *, stress: bool) -> Atoms:
    """A copy of ``atoms`` holding the current energy, forces (and stress) of its
    calculator in a ``SinglePointCalculator`` (eV, eV/Å, eV/Å³)."""
    copy = atoms.copy()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress()
    copy.calc = SinglePointCalculator(copy, **results)
    return copy
