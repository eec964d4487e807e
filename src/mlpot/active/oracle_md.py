"""Oracle work done in the driver: relaxing the start, its Hessian, held-out oracle MD.

Every call goes through :class:`mlpot.calculators.checked.CheckedOracle`, so a non-finite
or misshapen answer is an error here as in the workers, never a step integrated or a
frame stored; a failing call is retried from the last good state, nudged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize import BFGS

from mlpot.active.labelling import response_results
from mlpot.calculators.checked import CheckedOracle, check_answer
from mlpot.md import labelled_snapshot, make_dynamics, start_momenta


@dataclass
class Relaxed:
    """An oracle-relaxed structure, the oracle calls it took, and the errors on the way."""

    atoms: Atoms
    calls: int
    errors: list[str]


def relax(
    atoms: Atoms,
    new_calculator: Callable[[], object],
    *,
    fmax: float = 0.05,
    steps: int = 200,
    attempts: int = 3,
    seed: int = 0,
) -> Relaxed:
    """Oracle-relaxed copy of ``atoms`` (BFGS to ``fmax`` eV/Å). When the oracle fails,
    BFGS restarts from the last geometry it answered for, nudged by 0.005 Å, with a fresh
    calculator from ``new_calculator`` (up to ``attempts`` failures). After that the last
    good geometry is returned with the errors; if the oracle never answered, the last
    error is raised."""
    rng = np.random.default_rng(seed)
    current = atoms.copy()
    calls, errors, answered = 0, [], False
    for _ in range(attempts + 1):
        work = current.copy()
        work.calc = CheckedOracle(new_calculator())
        optimizer = BFGS(work, logfile=None)
        try:
            for _ in optimizer.irun(fmax=fmax, steps=steps):
                answered = True
                current = work.copy()  # the last geometry the oracle answered for
            calls += optimizer.nsteps + 1
            break
        except Exception as err:  # any oracle failure: retry from the last good state
            calls += optimizer.nsteps + 1
            errors.append(f"{type(err).__name__}: {err}")
            current.positions += rng.normal(0.0, 0.005, current.positions.shape)
    if not answered:
        raise RuntimeError(f"the oracle failed on every relaxation step: {errors[-1]}")
    current.calc = None
    return Relaxed(current, calls, errors)


@dataclass
class LabelledFrame:
    atoms: Atoms
    results: dict

    def labelled(self) -> Atoms:
        """A copy of the frame carrying its oracle labels (a SinglePointCalculator)."""
        atoms = self.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, **self.results)
        return atoms


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
    response: Sequence[str] = (),
) -> Iterator[LabelledFrame]:
    """Frames of a Langevin trajectory run on the oracle itself (held-out test data); every
    answer is checked (a bad one is a failed step, retried by :func:`_run_resilient`).
    Frames are yielded as they are made, so a failure late in the run keeps the earlier ones.
    ``response``: properties (``dipole``, ``polarizability``) each frame's labels hold too,
    from the oracle's calculation of that frame, checked like the forces."""
    atoms = start.copy()
    atoms.calc = CheckedOracle(calculator)
    rng = np.random.default_rng(seed)
    start_momenta(atoms, temperature, rng=rng)
    dynamics = make_dynamics(
        atoms,
        thermostat="langevin",
        timestep_fs=timestep_fs,
        temperature_K=temperature,
        friction_per_fs=0.02,
        rng=rng,
    )
    _run_resilient(dynamics, atoms, equilibration, temperature, rng)
    for _ in range(frames):
        _run_resilient(dynamics, atoms, stride, temperature, rng)
        stress = bool(atoms.pbc.all()) and "stress" in atoms.calc.implemented_properties
        frame = labelled_snapshot(atoms, stress=stress)
        results, frame.calc = dict(frame.calc.results), None
        results.update(response_results(atoms.calc, atoms, response))
        check_answer(results, len(frame), required=response)
        yield LabelledFrame(frame, results)


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
