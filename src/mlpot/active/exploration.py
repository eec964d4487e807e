"""Exploration by molecular dynamics with ASE, watched by the model's uncertainty.

The dynamics are ASE's (Langevin, Bussi or velocity Verlet). Every ``check_interval``
steps the calibrated per-atom force uncertainty of the model (``forces_std`` from the
calculator, computed in the same pass as the forces) is read: above ``select`` the
configuration becomes a candidate for labelling; above ``stop`` the trajectory has left
the region the model knows and is stopped before it can blow up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as validated


@validated(config=ConfigDict(extra="forbid"))
class ExploreOptions:
    """MD settings of exploration.

    Args:
        temperatures: temperatures to explore at, K (trajectories cycle through them).
        steps: maximum MD steps per trajectory.
        timestep_fs: MD time step, fs.
        thermostat: ``langevin``, ``bussi`` or ``nve``.
        friction_per_fs: Langevin friction, 1/fs.
        bussi_tau_fs: Bussi thermostat time constant, fs.
        check_interval: steps between uncertainty checks.
    """

    temperatures: list[float] = Field(default_factory=lambda: [300.0, 600.0])
    steps: int = Field(400, ge=1)
    timestep_fs: float = Field(0.5, gt=0)
    thermostat: Literal["langevin", "bussi", "nve"] = "langevin"
    friction_per_fs: float = Field(0.02, gt=0)
    bussi_tau_fs: float = Field(50.0, gt=0)
    check_interval: int = Field(5, ge=1)


@dataclass
class Candidate:
    """A configuration flagged for labelling, with why."""

    atoms: Atoms
    force_std: float  # calibrated max per-atom force std, eV/Å
    in_domain: bool
    temperature: float
    step: int


@dataclass
class TrajectoryResult:
    candidates: list[Candidate] = field(default_factory=list)
    steps: int = 0
    stop_reason: str = "completed"
    max_force_std: float = 0.0


def make_dynamics(atoms: Atoms, temperature: float, options: ExploreOptions, seed: int):
    """The ASE dynamics object for ``options.thermostat``."""
    rng = np.random.default_rng(seed)
    dt = options.timestep_fs * units.fs
    if options.thermostat == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms,
            dt,
            temperature_K=temperature,
            friction=options.friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    if options.thermostat == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(
            atoms, dt, temperature_K=temperature, taut=options.bussi_tau_fs * units.fs, rng=rng
        )
    from ase.md.verlet import VelocityVerlet

    return VelocityVerlet(atoms, dt)


def run_trajectory(
    start: Atoms,
    calculator,
    temperature: float,
    options: ExploreOptions,
    *,
    select_threshold: float,
    stop_threshold: float,
    seed: int = 0,
    poll: Callable[[], bool] | None = None,
) -> TrajectoryResult:
    """Run one uncertainty-watched trajectory from ``start`` at ``temperature`` (K).

    ``calculator`` must give ``forces_std`` (per atom, calibrated) with the forces, and may
    give ``in_domain``. ``poll`` is called at every check; returning True ends the
    trajectory early (e.g. enough new labels arrived to retrain).
    """
    atoms = start.copy()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dynamics = make_dynamics(atoms, temperature, options, seed)
    result = TrajectoryResult()
    for step, _ in enumerate(dynamics.irun(options.steps)):
        result.steps = step
        if step % options.check_interval:
            continue
        force_std = float(np.max(atoms.calc.results["forces_std"]))
        in_domain = bool(atoms.calc.results.get("in_domain", True))
        result.max_force_std = max(result.max_force_std, force_std)
        if force_std > select_threshold or not in_domain:
            snapshot = atoms.copy()
            snapshot.calc = None
            result.candidates.append(Candidate(snapshot, force_std, in_domain, temperature, step))
        if force_std > stop_threshold:
            result.stop_reason = "uncertain"
            break
        if poll is not None and poll():
            result.stop_reason = "labels arrived"
            break
    return result
