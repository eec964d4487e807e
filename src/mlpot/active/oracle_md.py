"""Oracle work done in the driver: relaxing the start, its Hessian, held-out oracle MD."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.optimize import BFGS

from mlpot.physics.velocities import thermalize_momenta


def relax(atoms: Atoms, calculator, *, fmax: float = 0.05, steps: int = 200) -> tuple[Atoms, int]:
    """Oracle-relaxed copy of ``atoms`` (BFGS to ``fmax`` eV/Å) and the oracle calls used."""
    atoms = atoms.copy()
    atoms.calc = calculator
    optimizer = BFGS(atoms, logfile=None)
    optimizer.run(fmax=fmax, steps=steps)
    relaxed = atoms.copy()
    relaxed.calc = None
    return relaxed, optimizer.nsteps + 1


@dataclass
class LabelledFrame:
    atoms: Atoms
    results: dict


def oracle_md_frames(
    start: Atoms,
    calculator,
    *,
    temperature: float,
    frames: int,
    stride: int,
    equilibration: int,
    timestep_fs: float,
    seed: int,
) -> list[LabelledFrame]:
    """Frames of a Langevin trajectory run on the oracle itself (held-out test data)."""
    atoms = start.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    dynamics = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature,
        friction=0.02 / units.fs,
        fixcm=False,
        rng=rng,
    )
    _run_resilient(dynamics, atoms, equilibration, temperature, rng)
    out = []
    for _ in range(frames):
        _run_resilient(dynamics, atoms, stride, temperature, rng)
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        frame = atoms.copy()
        frame.calc = None
        out.append(LabelledFrame(frame, results))
    return out


def _run_resilient(
    dynamics, atoms: Atoms, steps: int, temperature: float, rng, attempts: int = 5
) -> None:
    """Run ``steps`` oracle-MD steps. When the oracle fails on a step, go back to the state
    before it, nudged by 0.005 Å, and try that step again (up to ``attempts`` times): the
    trajectory is only a source of test frames, and each frame keeps the oracle's labels."""
    for _ in range(steps):
        positions = atoms.get_positions()
        for attempt in range(attempts):
            try:
                dynamics.run(1)
                break
            except Exception:
                if attempt == attempts - 1:
                    raise
                atoms.set_positions(positions + rng.normal(0.0, 0.005, positions.shape))
