"""Exploration by molecular dynamics with ASE, watched by the model's uncertainty.

The dynamics are ASE's (Langevin, Bussi or velocity Verlet), on the model itself
(``mode: md``) or on the model plus a bias towards high uncertainty (``mode: adversarial``,
see :mod:`mlpot.active.adversarial`). Every ``check_interval`` steps two scores of the
configuration are read from the calculator (both from the same pass as the forces):

* ``forces_std``: the largest calibrated per-atom force standard deviation, eV/Å;
* ``t2``: the largest per-atom Mahalanobis ``T²`` of the model's features (domain of
  applicability; needs domain statistics in the checkpoint).

A score above its selection threshold makes the configuration a candidate for labelling,
with that score's name as the reason; above its stop threshold the trajectory has left the
region the model knows and is stopped before it can blow up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, ZeroRotation
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as validated

from mlpot.physics.velocities import thermalize_momenta


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
        mode: ``md`` (the model's own energy) or ``adversarial`` (plus an uncertainty bias).
        bias_strength: adversarial bias depth ``A``, eV.
        bias_width: adversarial bias width ``B``, eV/atom (energy std per sqrt(atom));
            None: per trajectory, the committee's ``σ_E / sqrt(N)`` at its start, so the
            bias adapts as the model improves.
        bias_form: ``gaussian`` (bounded) or ``quadratic``.
    """

    temperatures: list[float] = Field(default_factory=lambda: [300.0, 600.0])
    steps: int = Field(1000, ge=1)  # 1 ps at 1 fs: slow torsions get a chance to turn
    timestep_fs: float = Field(1.0, gt=0)
    thermostat: Literal["langevin", "bussi", "nve"] = "langevin"
    friction_per_fs: float = Field(0.02, gt=0)
    bussi_tau_fs: float = Field(50.0, gt=0)
    check_interval: int = Field(5, ge=1)
    mode: Literal["md", "adversarial"] = "md"
    bias_strength: float = Field(2.0, gt=0)
    bias_width: float | None = Field(None, gt=0)
    bias_form: Literal["gaussian", "quadratic"] = "gaussian"


FORCES_STD, T2, DOMAIN = "forces_std", "t2", "domain"  # selection and stop reasons


@dataclass(frozen=True)
class Thresholds:
    """When a configuration is selected and when a trajectory stops (None: not used).

    ``force_std``/``stop_force_std``: largest calibrated per-atom force std, eV/Å;
    ``t2``/``stop_t2``: largest per-atom Mahalanobis T² (dimensionless); ``domain``: also
    select configurations the calculator reports outside its domain (``in_domain``).
    """

    force_std: float | None = None
    stop_force_std: float | None = None
    t2: float | None = None
    stop_t2: float | None = None
    domain: bool = False

    def reasons(
        self, force_std: float, t2: float, in_domain: bool = True
    ) -> tuple[list[str], list[str]]:
        """Names of the scores over their selection and over their stop thresholds."""
        select, stop = [], []
        for name, value, limit, halt in (
            (FORCES_STD, force_std, self.force_std, self.stop_force_std),
            (T2, t2, self.t2, self.stop_t2),
        ):
            if limit is not None and value > limit:
                select.append(name)
            if halt is not None and value > halt:
                stop.append(name)
        if self.domain and not in_domain:
            select.append(DOMAIN)
        return select, stop


@dataclass
class Candidate:
    """A configuration flagged for labelling, with why."""

    atoms: Atoms
    force_std: float  # calibrated max per-atom force std, eV/Å
    in_domain: bool
    temperature: float
    step: int
    t2: float = float("nan")  # max per-atom Mahalanobis T² (nan without domain statistics)
    reasons: tuple[str, ...] = (FORCES_STD,)

    @property
    def reason(self) -> str:
        """The reasons joined by ``+`` (``forces_std``, ``t2``, ``forces_std+t2``, ...)."""
        return "+".join(self.reasons)


@dataclass
class TrajectoryResult:
    candidates: list[Candidate] = field(default_factory=list)
    steps: int = 0
    stop_reason: str = "completed"  # completed, forces_std, t2, forces_std+t2, labels arrived
    max_force_std: float = 0.0
    max_t2: float = float("nan")
    started: float = 0.0  # wall-clock time.time() at the first and after the last step, s
    ended: float = 0.0


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
    thresholds: Thresholds,
    seed: int = 0,
    poll: Callable[[], bool] | None = None,
) -> TrajectoryResult:
    """Run one uncertainty-watched trajectory from ``start`` at ``temperature`` (K).

    ``calculator`` must give ``forces_std`` (per atom, calibrated) with the forces, and may
    give ``mahalanobis`` (per-atom T²) and ``in_domain``. ``poll`` is called at every check;
    returning True ends the trajectory early (e.g. enough new labels arrived to retrain).
    The first check is at step ``check_interval``: step 0 is ``start`` itself, which every
    trajectory from it shares (selecting it would label the same structure again and again).
    """
    atoms = start.copy()
    atoms.calc = calculator
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dynamics = make_dynamics(atoms, temperature, options, seed)
    result = TrajectoryResult(started=time.time())
    for step, _ in enumerate(dynamics.irun(options.steps)):
        result.steps = step
        if step == 0 or step % options.check_interval:
            continue  # step 0 is ``start`` itself, the same in every trajectory from it
        scores = atoms.calc.results
        force_std = float(np.max(scores["forces_std"]))
        t2 = float(np.max(scores["mahalanobis"])) if "mahalanobis" in scores else float("nan")
        in_domain = bool(scores.get("in_domain", True))
        result.max_force_std = max(result.max_force_std, force_std)
        result.max_t2 = float(np.fmax(result.max_t2, t2))
        select, stop = thresholds.reasons(force_std, t2, in_domain)
        if select:
            snapshot = atoms.copy()
            snapshot.calc = None
            result.candidates.append(
                Candidate(snapshot, force_std, in_domain, temperature, step, t2, tuple(select))
            )
        if stop:
            result.stop_reason = "+".join(stop)
            break
        if poll is not None and poll():
            result.stop_reason = "labels arrived"
            break
    result.ended = time.time()
    return result
