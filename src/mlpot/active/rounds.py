"""One exploration round of an iteration: MD trajectories with the current model, while the
labels of earlier requests come back, until enough arrived to retrain (or a stop).

Each trajectory is recorded in the store; its candidates are picked by the selection
strategy (up to the batch size and the oracle budget) and requested at once, so the oracle
works while exploration goes on. The round ends with one of its outcomes: ``retrain``
(enough labels arrived), ``converged`` (``patience_steps`` MD steps without a candidate and
nothing in flight), ``stuck`` (:data:`MAX_STUCK` trajectories in a row ended before flagging
anything, nothing in flight or arrived), ``budget`` (the oracle budget is used up) or
``time`` (the run's time budget is spent; checked between trajectories).

The loop may steer a round (:mod:`mlpot.active.steering`): its temperatures, and a factor
on the selection threshold.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from mlpot.active.adversarial import ENERGY_VARIANCE, AdversarialCalculator, adversarial_calculator
from mlpot.active.config import LearnConfig, SelectConfig
from mlpot.active.exploration import (
    COMPLETED,
    LABELS_ARRIVED,
    ExploreOptions,
    Thresholds,
    TrajectoryResult,
    run_trajectory,
)
from mlpot.active.label_queue import LabelQueue
from mlpot.active.selection import select_batch
from mlpot.active.store import TEST, Store
from mlpot.calculators import load_calculator
from mlpot.errors import MlpotInputError

MAX_STUCK = 20  # trajectories in a row that stop or fail before flagging anything
RETRAIN, CONVERGED, STUCK, BUDGET, TIME = "retrain", "converged", "stuck", "budget", "time"


@dataclass
class RoundEnd:
    """How a round ended: its ``outcome``, the stop reason of its last trajectory when it
    was ``stuck``, and its ``figures`` (for the store's ``iteration`` row)."""

    outcome: str
    stuck_reason: str
    figures: dict[str, float | int | str]


def exploration_calculator(options: ExploreOptions, path: Path):
    """The exploration calculator: the model at ``path``, or the model plus the uncertainty
    bias (``mode: adversarial``)."""
    if options.mode == "adversarial":
        return adversarial_calculator(
            path,
            strength=options.bias_strength,
            width=options.bias_width or 1.0,  # None: set per trajectory, see _start_width
            form=options.bias_form,
        )
    return load_calculator(path)


def thresholds(select: SelectConfig, calc) -> Thresholds:
    """The selection and stop thresholds of ``select`` (T² ones from the chi-squared
    quantiles of the calculator's domain statistics). ``strategy: random`` makes every
    checked configuration a candidate: a uniform choice among explored frames."""
    t2 = stop_t2 = None
    if select.needs_domain:
        if calc.domain is None:
            raise MlpotInputError(
                "T² selection needs domain statistics, and this model has none "
                "(a model exposing per-atom features, e.g. bpnn)",
                field="select.t2_quantile",
            )
        from scipy import stats

        f = calc.domain.n_features
        t2 = None if select.t2_quantile is None else float(stats.chi2.ppf(select.t2_quantile, f))
        if select.stop_t2_quantile is not None:
            stop_t2 = float(stats.chi2.ppf(select.stop_t2_quantile, f))
    return Thresholds(
        force_std=select.force_std,
        stop_force_std=select.stop_force_std,
        t2=t2,
        stop_t2=stop_t2,
        domain=select.use_domain,
        max_force=select.max_force,
        min_distance_fraction=select.min_distance_fraction,
        label_beyond_stop=select.label_beyond_stop,
        every_check=select.strategy == "random",
    )


class ExplorationRound:
    """Exploration of iteration ``iteration`` with the model at ``model_path``.

    Args:
        config: the run's config.
        store: the run's store (trajectories, requests).
        queue: the requests in flight; new ones are sent through it.
        iteration: the iteration (the model's version); requests go to the next one.
        model_path: the checkpoint to explore with.
        log: takes one line of progress.
        temperatures: the round's temperatures, K (None: ``explore.temperatures``).
        force_std_scale: factor on ``select.force_std`` (a steered, tighter selection).
        deadline: ``time.time()`` at which the run's time budget is spent (None: none).
        repeat: how many rounds explored with this model before (each draws other
            trajectories).
    """

    def __init__(
        self,
        config: LearnConfig,
        store: Store,
        queue: LabelQueue,
        iteration: int,
        model_path: Path,
        *,
        log: Callable[[str], None] = print,
        temperatures: list[float] | None = None,
        force_std_scale: float = 1.0,
        deadline: float | None = None,
        repeat: int = 0,
    ) -> None:
        self.config = config
        self.store = store
        self.queue = queue
        self.iteration = iteration
        self.log = log
        self.temperatures = list(temperatures or config.explore.temperatures)
        self.deadline = deadline
        self.calc = exploration_calculator(config.explore, model_path)
        limits = thresholds(config.select, self.calc)
        self.thresholds = dataclasses.replace(limits, force_std=limits.force_std * force_std_scale)
        seed = config.seed + 1000 * (iteration + 1)
        self.rng = np.random.default_rng([seed, repeat] if repeat else seed)
        self.arrived = self.quiet_steps = self.stuck = 0
        self.trajectories = self.md_steps = self.candidates = self.requested = 0
        self._features_of: dict[str, np.ndarray] = {}  # uid -> structure features (d_optimal)

    def run(self, starts: list[Atoms]) -> RoundEnd:
        """Trajectories from ``starts`` (drawn at random) until the round ends."""
        started = time.time()
        stuck_reason = ""
        outcome = None
        while outcome is None:
            result = self._trajectory(starts)
            self.arrived += self.queue.collect()
            outcome = self._after(result)
            if outcome == STUCK:
                stuck_reason = result.stop_reason
                outcome = RETRAIN if self.queue.in_flight or self.arrived else STUCK
        figures = {
            "model_version": self.iteration,
            "outcome": outcome,
            "trajectories": self.trajectories,
            "md_steps": self.md_steps,
            "candidates": self.candidates,
            "requested": self.requested,
            "labels_arrived": self.arrived,
            "budget_used": self.store.budget_used(),
            "started": started,
            "ended": time.time(),
        }
        return RoundEnd(outcome, stuck_reason, figures)

    def _trajectory(self, starts: list[Atoms]) -> TrajectoryResult:
        """Run and record the next trajectory."""
        explore = self.config.explore
        start = starts[int(self.rng.integers(len(starts)))]
        # the cycle starts one further each iteration: a round often ends within its first
        # trajectory, and every round's first one at the same temperature would leave the
        # others unexplored
        cycle = self.temperatures
        temperature = cycle[(self.iteration + self.trajectories) % len(cycle)]
        self.trajectories += 1
        if isinstance(self.calc, AdversarialCalculator) and explore.bias_width is None:
            self.calc.width = _start_width(self.calc, start)
        result = run_trajectory(
            start,
            self.calc,
            temperature,
            explore,
            thresholds=self.thresholds,
            seed=int(self.rng.integers(1 << 31)),
            # end early only once enough labels are in to retrain: ending at any
            # arrival cuts every trajectory at its first check when the oracle is fast
            poll=lambda need=self.config.select.batch_size - self.arrived: (
                self.queue.done() >= need
            ),
        )
        self._record(temperature, result)
        return result

    def _after(self, result: TrajectoryResult) -> str | None:
        """Count the trajectory towards convergence or being stuck, request its picks;
        the round's outcome if it ends here (``stuck`` before checking what is in flight),
        else None."""
        select, stop = self.config.select, self.config.stop
        if result.candidates:
            self.quiet_steps = self.stuck = 0
        elif result.stop_reason in (COMPLETED, LABELS_ARRIVED):
            self.quiet_steps += result.steps  # ran quietly: counts towards convergence
            self.stuck = 0
        else:  # failed, or stopped before flagging anything: not quiet
            self.stuck += 1
            if result.failed:
                self.log(f"  trajectory ended: {result.stop_reason}")
            if self.stuck >= MAX_STUCK:
                return STUCK
        if self.deadline is not None and time.time() >= self.deadline:
            return TIME  # nothing more requested: it would not be trained on
        self._request_batch(result.candidates)
        if self.store.budget_used() >= stop.oracle_budget:
            return BUDGET
        if self.arrived >= select.batch_size:
            return RETRAIN
        if self.quiet_steps >= stop.patience_steps:
            if not self.queue.in_flight:
                return CONVERGED if self.arrived == 0 else RETRAIN
            self.queue.wait_any()
        return None

    def _record(self, temperature: float, result: TrajectoryResult) -> None:
        self.md_steps += result.steps
        self.candidates += len(result.candidates)
        figures = {
            "mode": self.config.explore.mode,
            "temperature": float(temperature),
            "steps": result.steps,
            "stop_reason": result.stop_reason,
            "candidates": len(result.candidates),
            "max_force_std": result.max_force_std,
            "started": result.started,
            "ended": result.ended,
        }
        if np.isfinite(result.max_t2):
            figures["max_t2"] = result.max_t2
        self.store.add_trajectory(self.iteration, **figures)

    def _known_features(self) -> np.ndarray:
        """Structure features ``(P, F)`` of everything requested before (labelled or in
        flight; the test set excluded), computed once per structure with this round's
        model."""
        from mlpot.active.features import structure_features

        rows = {u: r for u, r in self.store.requests().items() if r.reason != TEST}
        new = [uid for uid in rows if uid not in self._features_of]
        if new:
            frames = [rows[uid].toatoms() for uid in new]
            vectors = structure_features(self.calc.model, frames)
            self._features_of.update(zip(new, vectors, strict=True))
        return np.array([self._features_of[uid] for uid in rows])

    def _request_batch(self, candidates) -> None:
        """Request the strategy's picks among ``candidates``, as many as fit in the batch
        (less what is in flight) and the oracle budget."""
        select = self.config.select
        room = min(
            select.batch_size - self.queue.in_flight,
            self.config.stop.oracle_budget - self.store.budget_used(),
        )
        if not candidates or room <= 0:
            return
        from mlpot.active.features import structure_features

        features = known = None
        if select.strategy == "d_optimal":
            features = structure_features(self.calc.model, [c.atoms for c in candidates])
            known = self._known_features()
        picks = select_batch(
            select.strategy,
            room,
            uncertainty=np.array([c.force_std for c in candidates]),
            features=features,
            known=known,
            rng=self.rng,
        )
        for index in picks:
            c = candidates[index]
            scores = {"force_std": c.force_std, "temperature": c.temperature}
            if np.isfinite(c.t2):
                scores["t2"] = c.t2
            self.queue.request(
                c.atoms,
                iteration=self.iteration + 1,
                reason=c.reason,
                scores=scores,
                model_version=self.iteration,
            )
        self.requested += len(picks)


def _start_width(calc: AdversarialCalculator, start: Atoms) -> float:
    """Bias width ``B = σ_E / sqrt(N)`` (eV/atom) of the committee at ``start``."""
    atoms = start.copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    variance = calc.results[ENERGY_VARIANCE]
    return max(float(np.sqrt(variance / len(atoms))), 1e-6)
