"""The active-learning loop behind ``mlpot learn``.

label initial configurations -> train a committee -> calibrate -> explore by MD while
labels are computed asynchronously -> retrain when enough new labels arrived -> ... ->
stop (oracle budget, target test error, or no uncertain configuration for a while) ->
validate and report. Every event goes to the store first, so a killed run resumes with
``--resume`` without losing or repeating a label.

One run holds its store at a time (:mod:`mlpot.active.store_lock`). Every oracle answer,
the driver's own (relaxation, Hessian, held-out MD) as the workers', is checked before it
is used or stored; a failing set-up call is retried and recorded, and the run goes on.
Resuming a finished run does nothing unless the config's budget was raised.

The pieces: :mod:`mlpot.active.setup` (start structures, initial requests, held-out test
set), :mod:`mlpot.active.label_queue` (requests in flight and their outcomes),
:mod:`mlpot.active.training_step` (a committee per iteration), :mod:`mlpot.active.rounds`
(an exploration round) and :mod:`mlpot.active.finish` (model file, report, summary). This
module keeps the order of things and when to stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from ase import Atoms

from mlpot.active.config import LearnConfig
from mlpot.active.executors import make_executor
from mlpot.active.finish import LearnResult, finish, read_summary
from mlpot.active.label_queue import LabelQueue
from mlpot.active.labelling import OracleSpec
from mlpot.active.rounds import BUDGET, CONVERGED, MAX_STUCK, STUCK, ExplorationRound
from mlpot.active.setup import RunSetup
from mlpot.active.store import INITIAL, REQUEST, TEST, Store
from mlpot.active.store_lock import StoreLock
from mlpot.active.training_step import TrainedModel, train_iteration
from mlpot.errors import MlpotInputError
from mlpot.uncertainty.calibration import format_dof

__all__ = ["ActiveLearner", "LearnResult", "learn"]

STORE_FILE = "store.db"
SMALL_SYSTEM = 256  # atoms: below this, training and MD run fastest on one thread


class ActiveLearner:
    """One ``mlpot learn`` run over the output directory of ``config``."""

    def __init__(
        self,
        config: LearnConfig,
        *,
        resume: bool = False,
        trust_code: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.out = Path(config.output)
        self.store_url = config.store or self.out / STORE_FILE
        self.log = log
        self.oracle = OracleSpec(config.oracle.name, dict(config.oracle.params), trust_code)
        self.oracle.build()  # fail now, not in a worker, if the oracle cannot be made
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self.store = Store(self.store_url)
            held = self.store.count(REQUEST)  # connects: a server must answer now
        except Exception as err:  # a database server that cannot be reached, a bad URL
            raise MlpotInputError(f"cannot open the store: {err}", field="store") from None
        self.lock = StoreLock(self.store_url)  # a second live run stops here, exit code 2
        if held and not resume:
            self.lock.release()
            raise MlpotInputError(
                "the store already holds a learning run; continue it with --resume, "
                "or choose another output (or an empty store database)",
                source=str(self.store_url),
            )
        self.trust_code = trust_code
        self.setup = RunSetup(config, self.out, self.oracle, self.store, log=log)
        self.queue: LabelQueue | None = None  # while labelling runs

    def run(self) -> LearnResult:
        try:
            stopped = self.store.stopped()
            if stopped and not self._extends(stopped):
                return self._already_finished(stopped)
            reason, starts = self._learn(extend=stopped is not None)
            stop = self.config.stop
            self.store.add_stop(
                reason, oracle_budget=stop.oracle_budget, max_iterations=stop.max_iterations
            )
            return self._finish(reason, starts)
        finally:
            self.lock.release()

    def _learn(self, *, extend: bool) -> tuple[str, list[Atoms]]:
        """Set up, then iterate until a stop, with the labelling executor running; the stop
        reason and the start structures."""
        lc = self.config.label
        executor = make_executor(lc.executor, workers=lc.workers, scheduler=lc.scheduler)
        self.queue = LabelQueue(self.store, executor, self.oracle, lc, log=self.log)
        try:
            starts = self.setup.starts()
            if max(len(atoms) for atoms in starts) < SMALL_SYSTEM:
                torch.set_num_threads(1)  # thread overhead dominates on small graphs
            self.setup.initial_requests(starts)
            self.queue.submit_pending()  # requests of a killed run, or the initial ones
            self.setup.test_set(starts)
            self.queue.collect(block=True)
            reason = self._iterate(starts, extend=extend)
            self.queue.collect(block=True)
        finally:
            executor.shutdown()
        return reason, starts

    def _extends(self, stopped: dict) -> bool:
        """Whether this config raised the budget a finished run stopped under."""
        stop = self.config.stop
        return (
            stop.oracle_budget > stopped["oracle_budget"]
            or stop.max_iterations > stopped["max_iterations"]
        )

    def _already_finished(self, stopped: dict) -> LearnResult:
        """A --resume of a finished run: report it, change nothing."""
        result = read_summary(self.out, stopped["reason"])
        if result is None:  # killed while validating: finish that
            return self._finish(stopped["reason"], self.setup.starts())
        self.log(
            f"this run already finished ({stopped['reason']}); nothing to do. To extend it, "
            "raise stop.oracle_budget or stop.max_iterations in the config and --resume"
        )
        return result

    def _finish(self, reason: str, starts: list[Atoms]) -> LearnResult:
        return finish(
            self.config,
            self.store,
            reason=reason,
            store_path=self.store_url,
            setup_calls=self.setup.calls,
            system=starts[0],
            trust_code=self.trust_code,
            log=self.log,
        )

    def _iterate(self, starts: list[Atoms], *, extend: bool = False) -> str:
        """Train, explore, retrain, ... until a stop; the stop reason."""
        iteration = len(self.store.models())
        if extend:  # a finished run with a raised budget: explore with its last model
            iteration -= 1
        while True:
            trained = self._train(iteration)
            reason = self._stop_reason(iteration, trained)
            if reason:
                return reason
            explored = ExplorationRound(
                self.config, self.store, self.queue, iteration, trained.path, log=self.log
            )
            end = explored.run(starts)
            self.store.end_iteration(iteration, end.figures)
            if end.outcome == CONVERGED:
                return f"no uncertain configuration in {self.config.stop.patience_steps} MD steps"
            if end.outcome == STUCK:
                return (
                    f"exploration stuck: {MAX_STUCK} trajectories in a row ended before "
                    f"flagging anything (the last: {end.stuck_reason}); raise "
                    "select.stop_force_std, or set select.label_beyond_stop: true to label "
                    "the frames that stop them"
                )
            if end.outcome == BUDGET:
                self.queue.collect(block=True)
                self._train(iteration + 1)
                return f"oracle budget of {self.config.stop.oracle_budget} labels"
            iteration += 1

    def _train(self, iteration: int) -> TrainedModel:
        """The committee of ``iteration``: trained on every label but the test set's, or
        the stored one when a killed run trained it already."""
        existing = [m for m in self.store.models() if m["version"] == iteration]
        if existing:
            return TrainedModel(Path(existing[0]["path"]), existing[0]["metrics"])
        labelled = self.store.labelled(exclude={TEST})
        test = self.store.labelled(reasons={TEST})
        if len(labelled) < 2:
            failures = self.store.failures()
            last = failures[-1]["error"] if failures else "none recorded"
            raise MlpotInputError(
                f"only {len(labelled)} configuration(s) labelled: the oracle failed on "
                f"{len(failures)} of {self.store.count(REQUEST, reason=INITIAL)} initial "
                f"requests, too few to train on; the oracle's last error: {last}",
                field="oracle",
            )
        self.log(f"iteration {iteration}: training a committee on {len(labelled)} labels")
        started = time.time()
        trained = train_iteration(
            self.config,
            labelled,
            test,
            self.out / f"iteration_{iteration}",
            seed=self.config.seed + iteration,
        )
        self.store.add_model(
            iteration,
            iteration,
            str(trained.path),
            trained.metrics,
            started=started,
            ended=time.time(),
        )
        m = trained.metrics
        self.log(
            f"  test force RMSE {m['test_force_rmse']:.4f} eV/Å, energy RMSE "
            f"{m['test_energy_rmse'] * 1e3:.2f} meV/atom, calibration scale "
            f"{m['calibration_scale']:.2f}, ν {format_dof(m.get('calibration_dof'))}"
        )
        return trained

    def _stop_reason(self, iteration: int, trained: TrainedModel) -> str | None:
        stop = self.config.stop
        if stop.target_force_rmse and trained.metrics["test_force_rmse"] <= stop.target_force_rmse:
            return f"test force RMSE reached {stop.target_force_rmse} eV/Å"
        if self.store.budget_used() >= stop.oracle_budget:
            return f"oracle budget of {stop.oracle_budget} labels"
        if iteration + 1 >= stop.max_iterations:
            return f"{stop.max_iterations} iterations"
        return None


def learn(
    config: LearnConfig,
    *,
    resume: bool = False,
    trust_code: bool = False,
    log: Callable[[str], None] = print,
) -> LearnResult:
    """Run (or resume) active learning as ``config`` says. ``trust_code`` lets a
    ``module:factory`` oracle in the config import and run its code."""
    return ActiveLearner(config, resume=resume, trust_code=trust_code, log=log).run()
