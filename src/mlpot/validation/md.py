"""The validation's MD runs: Langevin NVT and velocity-Verlet NVE, set up by
:mod:`mlpot.md` (ASE's integrators, observers attached with ``attach``).

NVT thermalises all ``3N`` degrees of freedom (see :mod:`mlpot.md.dynamics`). Velocities
start at ``2T``: from a structure near a minimum, equipartition hands half of that kinetic
energy to the potential within a few vibrations, so equilibration is short.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from tqdm.auto import tqdm

from mlpot.md import TemperatureGuard, labelled_snapshot, make_dynamics, run_guarded, start_momenta


@dataclass
class NVTRun:
    """A Langevin run.

    Attributes:
        time_fs: ``(n_steps,)`` time of each production step, fs.
        temperature_K: ``(n_steps,)`` kinetic temperature, K.
        frames: structures every ``sample_interval`` steps, with the energy, forces (and
            stress) of the calculator that drove the run.
        positions: ``(n, N, 3)`` Å, positions every ``structure_interval`` steps (for
            structural averages such as the RDF).
        final: the last structure, with velocities.
    """

    time_fs: np.ndarray
    temperature_K: np.ndarray
    frames: list[Atoms] = field(default_factory=list)
    positions: np.ndarray | None = None
    final: Atoms | None = None

    def structures(self) -> list[Atoms]:
        """The structures of ``positions`` as ``Atoms`` (cell and pbc of the run)."""
        template = self.final.copy()
        template.calc = None
        out = []
        for positions in self.positions:
            atoms = template.copy()
            atoms.positions = positions
            out.append(atoms)
        return out


@dataclass
class NVERun:
    """A velocity-Verlet run: ``(n_steps + 1,)`` arrays of time (fs) and energies (eV)."""

    time_fs: np.ndarray
    potential_eV: np.ndarray
    kinetic_eV: np.ndarray

    @property
    def total_eV(self) -> np.ndarray:
        return self.potential_eV + self.kinetic_eV


def run_nvt(
    atoms: Atoms,
    calc: BaseCalculator,
    *,
    temperature_K: float,
    timestep_fs: float,
    friction_per_fs: float,
    equilibration_steps: int,
    steps: int,
    sample_interval: int,
    seed: int,
    stress: bool,
    structure_interval: int = 5,
    max_temperature_factor: float = 10.0,
    label: str = "NVT",
    progress: bool = False,
) -> NVTRun:
    """Equilibrate, then run ``steps`` Langevin steps at ``temperature_K`` from ``atoms``.

    Labelled frames are kept every ``sample_interval`` steps, positions every
    ``structure_interval`` steps.
    """
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    start_momenta(atoms, 2.0 * temperature_K, rng=rng)
    dynamics = make_dynamics(
        atoms,
        thermostat="langevin",
        timestep_fs=timestep_fs,
        temperature_K=temperature_K,
        friction_per_fs=friction_per_fs,
        rng=rng,
    )
    guard = TemperatureGuard(atoms, max_temperature_factor * temperature_K, label)
    temperatures: list[float] = []
    frames: list[Atoms] = []
    positions: list[np.ndarray] = []
    total = equilibration_steps + steps
    bar = tqdm(total=total + 1, desc=f"{label} MD", unit="step", leave=False, disable=not progress)

    def observe() -> None:
        bar.update(1)
        step = dynamics.nsteps
        temperature = guard()
        if step <= equilibration_steps:
            return
        temperatures.append(temperature)
        if (step - equilibration_steps) % sample_interval == 0:
            frames.append(labelled_snapshot(atoms, stress=stress))
        if (step - equilibration_steps) % structure_interval == 0:
            positions.append(atoms.get_positions())

    dynamics.attach(observe, interval=1)
    try:
        run_guarded(dynamics, total, label)
    finally:
        bar.close()
    time = timestep_fs * np.arange(1, len(temperatures) + 1)
    final = atoms.copy()
    final.set_velocities(atoms.get_velocities())
    return NVTRun(time, np.asarray(temperatures), frames, np.asarray(positions), final)


def run_nve(
    atoms: Atoms,
    calc: BaseCalculator,
    *,
    timestep_fs: float,
    steps: int,
    max_temperature: float,
    label: str = "NVE",
    progress: bool = False,
) -> NVERun:
    """Velocity Verlet from ``atoms`` (with its velocities), recording energies each step."""
    atoms = atoms.copy()
    atoms.calc = calc
    dynamics = make_dynamics(atoms, thermostat="nve", timestep_fs=timestep_fs)
    guard = TemperatureGuard(atoms, max_temperature, label)
    potential: list[float] = []
    kinetic: list[float] = []
    bar = tqdm(total=steps + 1, desc=f"{label} MD", unit="step", leave=False, disable=not progress)

    def observe() -> None:
        bar.update(1)
        guard()
        potential.append(atoms.get_potential_energy())
        kinetic.append(atoms.get_kinetic_energy())

    dynamics.attach(observe, interval=1)  # also called once before the first step
    try:
        run_guarded(dynamics, steps, label)
    finally:
        bar.close()
    time = timestep_fs * np.arange(len(potential))
    return NVERun(time, np.asarray(potential), np.asarray(kinetic))
