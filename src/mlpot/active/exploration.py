"""Exploration by molecular dynamics with ASE, watched by the model's uncertainty.

The dynamics are ASE's (Langevin, Bussi or velocity Verlet), on the model itself
(``mode: md``) or on the model plus a bias towards high uncertainty (``mode: adversarial``,
see :mod:`mlpot.active.adversarial`). Every ``check_interval`` steps two scores of the
configuration are read from the calculator (both from the same pass as the forces):

* ``forces_std``: the largest calibrated per-atom force standard deviation, eV/Å;
* ``t2``: the largest per-atom Mahalanobis ``T²`` of the model's features (domain of
  applicability; needs domain statistics in the checkpoint).

A score above its selection threshold makes the configuration a candidate for labelling,
with that score's name as the reason.

Stops are watched at *every* MD step (the calculator gives forces and scores in one pass,
so reading them costs nothing): a score above its stop threshold, a per-atom force above
the physical bound ``max_force``, two atoms closer than ``min_distance_fraction`` of the
sum of their covalent radii, non-finite energy/forces/scores, or an exception raised by the
calculator or the dynamics. Any of them ends *that* trajectory with a ``stop_reason``;
:func:`run_trajectory` never raises (except ``KeyboardInterrupt``/``SystemExit``). The
configuration that tripped a stop is beyond what the model knows and is not labelled as an
ordinary candidate (see ``Thresholds.label_beyond_stop``); the step before it, when a
score selected it and the stop is a score or a hard limit, is: the most uncertain
configuration still short of the stop.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import vesin
from ase import Atoms
from ase.data import covalent_radii
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as validated

from mlpot.md import Thermostat, make_dynamics, start_momenta
from mlpot.physics.outputs import ENERGY, FORCES, FORCES_STD, IN_DOMAIN, MAHALANOBIS


@validated(config=ConfigDict(extra="forbid"))
class ExploreOptions:
    """MD settings of exploration.

    Args:
        temperatures: temperatures to explore at, K (trajectories cycle through them, each
            iteration starting one further).
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

    temperatures: list[float] = Field(default_factory=lambda: [600.0, 300.0])
    steps: int = Field(1000, ge=1)  # 1 ps at 1 fs: slow torsions get a chance to turn
    timestep_fs: float = Field(1.0, gt=0)
    thermostat: Thermostat = "langevin"
    friction_per_fs: float = Field(0.02, gt=0)
    bussi_tau_fs: float = Field(50.0, gt=0)
    check_interval: int = Field(5, ge=1)
    mode: Literal["md", "adversarial"] = "md"
    bias_strength: float = Field(2.0, gt=0)
    bias_width: float | None = Field(None, gt=0)
    bias_form: Literal["gaussian", "quadratic"] = "gaussian"


T2, DOMAIN = "t2", "domain"  # selection and stop reasons, with FORCES_STD (its output name)
EXPLORED = "explored"  # every checked configuration (``Thresholds.every_check``)
COMPLETED, LABELS_ARRIVED = "completed", "labels arrived"  # a trajectory's ordinary ends
MAX_FORCE, MIN_DISTANCE = "max_force", "min_distance"  # hard stops, checked every step
BEYOND_STOP = "beyond_stop"  # a candidate past a stop threshold (``label_beyond_stop``)
NON_FINITE, ERROR = "non-finite", "error"  # stop reason prefixes: never labelled


@dataclass(frozen=True)
class Thresholds:
    """When a configuration is selected and when a trajectory stops (None: not used).

    ``force_std``/``stop_force_std``: largest calibrated per-atom force std, eV/Å;
    ``t2``/``stop_t2``: largest per-atom Mahalanobis T² (dimensionless); ``domain``: also
    select configurations the calculator reports outside its domain (``in_domain``).
    Selection is checked every ``check_interval`` steps, stops at every step; a stop by a
    score or a hard limit also makes the step before it a candidate when a score selected it
    (it lies between the selection and the stop thresholds, short of the unknown).

    Hard stops: ``max_force`` (eV/Å, default 50): the largest per-atom force magnitude
    beyond any thermal MD (a blow-up); ``min_distance_fraction`` (default 0.5): two atoms
    ``i``, ``j`` closer than this fraction of ``r_cov(i) + r_cov(j)`` (ASE's covalent radii,
    e.g. 1.32 Å for Cu–Cu, 0.54 Å for C–H; periodic images included).

    ``every_check``: every checked configuration is a candidate (reason ``explored``),
    whatever its scores: the pool of a uniform random choice among explored frames (the
    baseline selection is compared with). The stops still apply; the step before a stop is
    not added for it.

    ``label_beyond_stop``: the configuration that stopped a trajectory on ``forces_std``,
    ``t2`` or ``min_distance`` becomes a candidate, reason ``beyond_stop+<stop>`` (e.g. to
    teach the model the repulsion it lacks). Never one beyond ``max_force``, with
    non-finite values or whose calculator raised. Off by default: such a configuration is
    often unphysical and its labels (huge forces, failed SCF) can spoil training.
    """

    force_std: float | None = None
    stop_force_std: float | None = None
    t2: float | None = None
    stop_t2: float | None = None
    domain: bool = False
    max_force: float | None = 50.0
    min_distance_fraction: float | None = 0.5
    label_beyond_stop: bool = False
    every_check: bool = False

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
        if self.every_check and not select:
            select.append(EXPLORED)
        return select, stop

    def hard_stops(self, max_force: float, contact: float) -> list[str]:
        """Names of the hard limits passed: ``max_force`` by the largest per-atom force
        (eV/Å), ``min_distance`` by the closest contact (``d / (r_cov + r_cov)``)."""
        stop = []
        if self.max_force is not None and max_force > self.max_force:
            stop.append(MAX_FORCE)
        if self.min_distance_fraction is not None and contact < self.min_distance_fraction:
            stop.append(MIN_DISTANCE)
        return stop


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
        """The reasons joined by ``+`` (``forces_std``, ``t2``, ``forces_std+t2``,
        ``beyond_stop+forces_std``, ...)."""
        return "+".join(self.reasons)


@dataclass
class TrajectoryResult:
    candidates: list[Candidate] = field(default_factory=list)
    steps: int = 0  # the last step reached (its forces evaluated)
    # completed, labels arrived, or the stops joined by "+": forces_std, t2, max_force,
    # min_distance (e.g. "forces_std+min_distance"); "non-finite forces" (energy, forces,
    # forces_std, t2, positions); "error: RuntimeError: <message, one line>"
    stop_reason: str = COMPLETED
    max_force_std: float = 0.0  # maxima over steps 1.. (finite values only)
    max_t2: float = float("nan")
    started: float = 0.0  # wall-clock time.time() at the first and after the last step, s
    ended: float = 0.0
    error: str = ""  # the traceback when the calculator or the dynamics raised

    @property
    def failed(self) -> bool:
        """True when the trajectory ended on an error or non-finite values (a model or a
        calculator that fails, not a region of high uncertainty)."""
        return self.stop_reason.startswith((ERROR, NON_FINITE))


def shortest_contact(atoms: Atoms, fraction: float = 1.0) -> tuple[float, int, int]:
    """The closest pair relative to its bond scale: ``min d_ij / (r_cov(i) + r_cov(j))``
    and ``i, j``, over pairs (periodic images included) closer than ``fraction`` of the sum
    of covalent radii; ``(inf, -1, -1)`` when there are none. O(N) (vesin's cell list)."""
    return _Contacts(atoms.numbers, fraction)(atoms)


class _Contacts:
    """:func:`shortest_contact` for fixed atomic numbers (a trajectory's)."""

    def __init__(self, numbers: np.ndarray, fraction: float) -> None:
        self.radii = covalent_radii[np.asarray(numbers)]
        cutoff = fraction * 2.0 * float(self.radii.max()) if len(self.radii) else 0.0
        self.neighbours = vesin.NeighborList(cutoff=cutoff, full_list=False) if cutoff else None

    def __call__(self, atoms: Atoms) -> tuple[float, int, int]:
        if self.neighbours is None or len(atoms) < 2 and not atoms.pbc.any():
            return float("inf"), -1, -1
        i, j, d = self.neighbours.compute(
            points=atoms.positions,
            box=atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3)),
            periodic=atoms.pbc.tolist(),
            quantities="ijd",
        )
        if not len(d):
            return float("inf"), -1, -1
        ratio = d / (self.radii[i] + self.radii[j])
        k = int(np.argmin(ratio))
        return float(ratio[k]), int(i[k]), int(j[k])


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

    Stops are checked at every step (scores from step 1, the hard limits and finiteness
    from step 0): see :class:`Thresholds` and :class:`TrajectoryResult` for the reasons.
    An exception from the calculator or the dynamics ends the trajectory and is recorded
    (``stop_reason`` ``"error: <type>: <message>"``, the traceback in ``error``); nothing
    is raised but ``KeyboardInterrupt`` and ``SystemExit``. Candidates found before a stop
    are kept. A stop by a score or a hard limit adds the step before it when a score
    selected that step (between checks; never step 0); the configuration that stopped it is
    one only with ``label_beyond_stop``; non-finite values and errors add none.
    """
    result = TrajectoryResult(started=time.time())
    try:
        _run(start, calculator, temperature, options, thresholds, seed, poll, result)
    except Exception as exc:  # contained: it ends this trajectory, not the run
        result.stop_reason = _error_reason(exc)
        result.error = traceback.format_exc()
    result.ended = time.time()
    return result


def _run(start, calculator, temperature, options, thresholds, seed, poll, result) -> None:
    atoms = start.copy()
    atoms.calc = calculator
    start_momenta(atoms, temperature, rng=np.random.default_rng(seed), zero_rotation=True)
    contacts = (
        None
        if thresholds.min_distance_fraction is None
        else _Contacts(atoms.numbers, thresholds.min_distance_fraction)
    )
    dynamics = make_dynamics(
        atoms,
        thermostat=options.thermostat,
        timestep_fs=options.timestep_fs,
        temperature_K=temperature,
        friction_per_fs=options.friction_per_fs,
        bussi_tau_fs=options.bussi_tau_fs,
        rng=np.random.default_rng(seed),
    )
    previous = None  # the last step, between checks, if a score selected it
    for step, _ in enumerate(dynamics.irun(options.steps)):
        result.steps = step
        scores = atoms.calc.results
        if FORCES_STD not in scores:
            raise RuntimeError("the calculator gives no forces_std (an ensemble model is needed)")
        bad = _non_finite(atoms, scores)
        if bad:
            result.stop_reason = f"{NON_FINITE} {'+'.join(bad)}"
            return
        hard = _hard_limits(atoms, scores, thresholds, contacts)
        if step == 0:  # ``start`` itself: no scores, only what MD from it cannot survive
            if hard:
                result.stop_reason = "+".join(hard)
                return
            continue
        force_std, t2, in_domain = _scores(scores)
        result.max_force_std = max(result.max_force_std, force_std)
        result.max_t2 = float(np.fmax(result.max_t2, t2))
        select, stop = thresholds.reasons(force_std, t2, in_domain)
        stop += hard
        if stop:
            result.stop_reason = "+".join(stop)
            if previous is not None:  # the last configuration short of the stop
                result.candidates.append(previous)
            if thresholds.label_beyond_stop and MAX_FORCE not in stop:
                reasons = (BEYOND_STOP, *stop)
                result.candidates.append(
                    Candidate(
                        _snapshot(atoms), force_std, in_domain, temperature, step, t2, reasons
                    )
                )
            return
        candidate = (
            Candidate(_snapshot(atoms), force_std, in_domain, temperature, step, t2, tuple(select))
            if select
            else None
        )
        if step % options.check_interval:
            previous = None if thresholds.every_check else candidate
            continue
        previous = None
        if candidate is not None:
            result.candidates.append(candidate)
        if poll is not None and poll():
            result.stop_reason = LABELS_ARRIVED
            return


def _hard_limits(atoms: Atoms, scores: dict, thresholds: Thresholds, contacts) -> list[str]:
    """The hard limits this step passes (largest force, closest contact)."""
    forces = scores[FORCES] if FORCES in scores else atoms.get_forces()
    max_force = float(np.sqrt(np.max(np.sum(forces**2, axis=1)))) if len(forces) else 0.0
    contact = float("inf") if contacts is None else contacts(atoms)[0]
    return thresholds.hard_stops(max_force, contact)


def _scores(scores: dict) -> tuple[float, float, bool]:
    """Largest per-atom force std (eV/Å) and T² (nan without domain statistics), and the
    in-domain flag of this step."""
    force_std = float(np.max(scores[FORCES_STD]))
    t2 = float(np.max(scores[MAHALANOBIS])) if MAHALANOBIS in scores else float("nan")
    return force_std, t2, bool(scores.get(IN_DOMAIN, True))


def _snapshot(atoms: Atoms) -> Atoms:
    snapshot = atoms.copy()
    snapshot.calc = None
    return snapshot


def _non_finite(atoms: Atoms, scores: dict) -> list[str]:
    """Names of the quantities of this step that hold NaN or infinity."""
    values = {
        "positions": atoms.positions,
        ENERGY: scores.get(ENERGY, 0.0),
        FORCES: scores[FORCES] if FORCES in scores else atoms.get_forces(),
        FORCES_STD: scores[FORCES_STD],
        T2: scores.get(MAHALANOBIS, 0.0),
    }
    return [name for name, value in values.items() if not np.all(np.isfinite(value))]


def _error_reason(exc: BaseException, limit: int = 160) -> str:
    """``error: <type>: <message>`` on one line, at most ``limit`` characters of message."""
    message = " ".join(str(exc).split())
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{ERROR}: {type(exc).__name__}" + (f": {message}" if message else "")
