"""The active-learning loop behind ``mlpot learn``.

label initial configurations -> train a committee -> calibrate -> explore by MD while
labels are computed asynchronously -> retrain when enough new labels arrived -> ... ->
where it would stop (target test error, max_iterations, or no uncertain configuration for
a while) validate the committee against the oracle: stop when every check passes, else
steer exploration by the failing checks and go on (:mod:`mlpot.active.steering`) -> stop
(validated, or the oracle or time budget spent) -> validate and report. Every event goes
to the store first, so a killed run resumes with ``--resume`` without losing or repeating a
label; its clock goes on where it stopped (:mod:`mlpot.active.clock`).

One run holds its store at a time (:mod:`mlpot.active.store_lock`). Every oracle answer,
the driver's own (relaxation, Hessian, held-out MD) as the workers', is checked before it
is used or stored; a failing set-up call is retried and recorded, and the run goes on.
Resuming a finished run does nothing unless the config raised a budget (oracle, time or
iterations).

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
from ase import Atoms, units

from mlpot.active.clock import RunClock
from mlpot.active.config import LearnConfig
from mlpot.active.executors import make_executor
from mlpot.active.finish import LearnResult, finish, read_summary
from mlpot.active.label_queue import LabelQueue
from mlpot.active.labelling import OracleSpec
from mlpot.active.report import quick_validation
from mlpot.active.response_model import check_response
from mlpot.active.rounds import (
    BUDGET,
    CONVERGED,
    MAX_STUCK,
    STUCK,
    TIME,
    ExplorationRound,
    RoundEnd,
)
from mlpot.active.setup import RunSetup
from mlpot.active.steering import (
    Steering,
    Verdict,
    dimer,
    target_missed,
    target_verdict,
    verdict_of,
)
from mlpot.active.store import DIMERS, INITIAL, REQUEST, TEST, Store
from mlpot.active.store_lock import StoreLock
from mlpot.active.training_step import TrainedModel, train_iteration
from mlpot.errors import MlpotInputError
from mlpot.uncertainty.calibration import format_dof

__all__ = ["ActiveLearner", "LearnResult", "learn"]

STORE_FILE = "store.db"
SMALL_SYSTEM = 256  # atoms: below this, training and MD run fastest on one thread
VALIDATED = "validated: every applicable check passes"
MIN_TRAINING_S = 5.0  # s: a committee's training, however little of the time budget is left


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
        # fail now, not in a worker, if the oracle cannot be made or give the response
        check_response(config, self.oracle.build())
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
        self.clock: RunClock | None = None  # while it runs
        self.steering = Steering(list(config.explore.temperatures))
        self._verdicts: dict[int, Verdict] = {}  # model version -> its validation
        self._report = None  # (version, ValidationReport) of the last validation
        self._rounds: dict[int, int] = {}  # model version -> rounds explored with it

    def run(self) -> LearnResult:
        try:
            stopped = self.store.stopped()
            if stopped and not self._extends(stopped):
                return self._already_finished(stopped)
            self.clock = RunClock(self.store, self.config.stop.max_time_s)
            reason, starts = self._learn(extend=stopped is not None)
            stop = self.config.stop
            self.store.add_stop(
                reason,
                oracle_budget=stop.oracle_budget,
                max_iterations=stop.max_iterations,
                max_time_s=stop.max_time_s,
                elapsed_s=self.clock.elapsed(),
            )
            return self._finish(reason, starts)
        finally:
            self.lock.release()

    def _learn(self, *, extend: bool) -> tuple[str, list[Atoms]]:
        """Set up, then iterate until a stop, with the labelling executor running; the stop
        reason and the start structures."""
        lc = self.config.label
        executor = make_executor(
            lc.executor, workers=lc.workers, scheduler=lc.scheduler, threads=lc.threads
        )
        response = self.config.response.properties if self.config.response else ()
        self.queue = LabelQueue(
            self.store, executor, self.oracle, lc, log=self.log, response=response
        )
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
        """Whether this config raised a budget a finished run stopped under."""
        stop = self.config.stop
        old_time = stopped.get("max_time_s")  # absent in older stores: no time budget
        return (
            stop.oracle_budget > stopped["oracle_budget"]
            or stop.max_iterations > stopped["max_iterations"]
            or (old_time is not None and (stop.max_time_s or float("inf")) > old_time)
        )

    def _already_finished(self, stopped: dict) -> LearnResult:
        """A --resume of a finished run: report it, change nothing."""
        result = read_summary(self.out, stopped["reason"])
        if result is None:  # killed while validating: finish that
            return self._finish(stopped["reason"], self.setup.starts())
        self.log(
            f"this run already finished ({stopped['reason']}); nothing to do. To extend it, "
            "raise stop.oracle_budget, stop.max_time_s or stop.max_iterations in the config "
            "and --resume"
        )
        return result

    def _finish(self, reason: str, starts: list[Atoms]) -> LearnResult:
        models = self.store.models()
        report = self._report if self._report and self._report[0] == models[-1]["version"] else None
        budget = {self._time_reason(): "time", self._oracle_reason(): "oracle"}.get(reason)
        return finish(
            self.config,
            self.store,
            reason=reason,
            store_path=self.store_url,
            setup_calls=self.setup.calls,
            system=starts[0],
            trust_code=self.trust_code,
            report=report[1] if report else None,
            budget=budget,
            elapsed_s=self.clock.elapsed() if self.clock else self.store.elapsed_s(),
            log=self.log,
        )

    # ---- the loop ----------------------------------------------------------------------
    def _iterate(self, starts: list[Atoms], *, extend: bool = False) -> str:
        """Train, explore, retrain, ... until a stop; the stop reason. Where the loop would
        stop (:meth:`_settled`, or a round that finds nothing uncertain) the validation
        decides, when it is the stopping rule (:meth:`_gate`). A training that diverges
        stops the run with the last committee that trained."""
        try:
            return self._iterations(starts, extend=extend)
        except TrainingDiverged as err:
            return str(err)

    def _iterations(self, starts: list[Atoms], *, extend: bool) -> str:
        iteration = len(self.store.models())
        if extend:  # a finished run with a raised budget: explore with its last model
            iteration -= 1
        for stored in self.store.validations():  # a resumed run keeps its steering
            self._verdicts[stored["version"]] = Verdict(
                stored["version"], stored["passed"], stored["failing"], stored["figures"],
                stored["steer"],
            )  # fmt: skip
            self.steering.apply(stored["steer"])
        trained = self._train(iteration)
        while True:
            reason = self._budget_spent()
            if reason:
                return reason
            settled = self._settled(iteration, trained)
            if settled:
                reason = self._gate(iteration, trained, settled)
                if reason:
                    return reason
            end = self._explore(iteration, trained, starts)
            if end.outcome == CONVERGED:
                quiet = f"no uncertain configuration in {self.config.stop.patience_steps} MD steps"
                reason = self._gate(iteration, trained, quiet, quiet=True)
                if reason:
                    return reason
                continue  # explore again, steered, with the same committee
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
                return self._oracle_reason()
            if end.outcome == TIME:  # the time kept for a training is left: use it
                if end.figures["labels_arrived"]:
                    self.queue.collect(block=True)
                    self._train(iteration + 1)
                return self._time_reason()
            iteration += 1
            trained = self._train(iteration)

    def _explore(self, iteration: int, trained: TrainedModel, starts: list[Atoms]) -> RoundEnd:
        """One exploration round with the committee of ``iteration``, as steered."""
        explored = ExplorationRound(
            self.config,
            self.store,
            self.queue,
            iteration,
            trained.path,
            log=self.log,
            temperatures=self.steering.next_temperatures(),
            force_std_scale=self.steering.force_std_scale,
            deadline=self.clock.deadline,
            repeat=self._rounds.get(iteration, 0),
        )
        self._rounds[iteration] = self._rounds.get(iteration, 0) + 1
        end = explored.run(starts)
        self.store.end_iteration(iteration, end.figures, elapsed_s=self.clock.elapsed())
        f = end.figures
        self.log(
            f"{self.clock.stamp()} explored: {f['trajectories']} trajectories at "
            f"{', '.join(f'{t:g}' for t in explored.temperatures)} K, {f['md_steps']} MD "
            f"steps, {f['requested']} configurations sent to the oracle ({f['outcome']})"
        )
        return end

    def _budget_spent(self) -> str | None:
        """The stop reason when the oracle or the time budget is spent, else None."""
        if self.store.budget_used() >= self.config.stop.oracle_budget:
            return self._oracle_reason()
        if self.clock.spent():
            return self._time_reason()
        return None

    def _oracle_reason(self) -> str:
        return f"oracle budget of {self.config.stop.oracle_budget} labels"

    def _time_reason(self) -> str:
        return f"time budget of {self.config.stop.max_time_s:g} s"

    def _settled(self, iteration: int, trained: TrainedModel) -> str | None:
        """Where the loop would stop, converged: the target test error, or the last
        iteration; None otherwise."""
        stop = self.config.stop
        if stop.target_force_rmse and trained.metrics["test_force_rmse"] <= stop.target_force_rmse:
            return f"test force RMSE reached {stop.target_force_rmse} eV/Å"
        if iteration + 1 >= stop.max_iterations:
            return f"{stop.max_iterations} iterations"
        return None

    def _gate(
        self, iteration: int, trained: TrainedModel, would: str, *, quiet: bool = False
    ) -> str | None:
        """The stop reason where the loop would stop for ``would``, or None to go on.

        Without validation as the stopping rule, ``would`` stops the run. Otherwise the
        committee of ``iteration`` is judged (once, :meth:`_judge`): all checks passing,
        and ``stop.target_force_rmse`` met when set, stops the run (``validated``); what
        fails steers the rounds that follow. ``quiet``: a round found nothing uncertain
        after the committee failed, so the selection tightens, until it cannot any more."""
        if not (self.config.validation and self.config.stop.until_validated):
            return would
        verdict = self._verdicts.get(iteration)
        if verdict is None:
            verdict = self._judge(iteration, trained)
            if verdict.passed:
                return VALIDATED
            self._steer(iteration, verdict)
            return None
        if verdict.passed:
            return VALIDATED
        if quiet:
            if not self.steering.tighten():
                return f"{would} while the validation fails"
            self.log(
                f"{self.clock.stamp()} nothing over the selection threshold while the "
                "validation fails: select.force_std lowered to "
                f"{self.config.select.force_std * self.steering.force_std_scale:.3g} eV/Å"
            )
        return None

    def _judge(self, iteration: int, trained: TrainedModel) -> Verdict:
        """The verdict on the committee of ``iteration``: a committee that misses
        ``stop.target_force_rmse`` on the held-out test set fails without a validation (it
        could not stop the run, and a validation costs oracle MD); otherwise its
        validation."""
        target = self.config.stop.target_force_rmse
        rmse = trained.metrics.get("test_force_rmse")
        if target is not None and rmse is not None and target_missed(rmse, target):
            verdict = target_verdict(iteration, self.config.test.temperature, rmse, target)
            self._verdicts[iteration] = verdict
            self.log(
                f"{self.clock.stamp()} test force RMSE {1000 * rmse:.3g} meV/Å above the "
                f"target {1000 * target:.3g}: learning on (validation once it is reached)"
            )
            return verdict
        return self._validate(iteration, trained)

    def _validate(self, iteration: int, trained: TrainedModel) -> Verdict:
        """The quick validation of the committee of ``iteration``, recorded and logged."""
        self.log(f"{self.clock.stamp()} validating the committee of iteration {iteration} ...")
        config = self.config
        report = quick_validation(
            trained.path,
            oracle=config.oracle.name,
            oracle_params=dict(config.oracle.params),
            trust_code=self.trust_code,
            system=self.setup.starts()[0],
            temperature=config.test.temperature,
        )
        verdict = verdict_of(
            report,
            iteration,
            config.test.temperature,
            test_force_rmse=trained.metrics.get("test_force_rmse"),
            target_force_rmse=config.stop.target_force_rmse,
        )
        self._report = (iteration, report)
        self._verdicts[iteration] = verdict
        self.store.add_validation(
            iteration,
            passed=verdict.passed,
            failing=verdict.failing,
            figures=verdict.figures,
            steer=verdict.steer,
            elapsed_s=self.clock.elapsed(),
        )
        ran = [c.name for c in report.checks if c.status != "skip"]
        if verdict.passed:
            self.log(f"{self.clock.stamp()} every applicable check passes: {', '.join(ran)}")
        else:
            self.log(f"{self.clock.stamp()} failing: {verdict.describe()}")
        return verdict

    def _steer(self, iteration: int, verdict: Verdict) -> None:
        """Explore where the checks failed: at their temperature next, and label short
        distances of the pairs whose dimer curves fail."""
        self.steering.apply(verdict.steer)
        room = self.config.stop.oracle_budget - self.store.budget_used()
        sent = 0
        for z1, z2, distances in verdict.steer.get("dimers", []):
            for distance in distances:
                if sent >= room:
                    break
                self.queue.request(
                    dimer(z1, z2, distance),
                    iteration=iteration + 1,
                    reason=DIMERS,
                    scores={"distance": distance},
                    model_version=iteration,
                )
                sent += 1
        steer = []
        if verdict.steer.get("temperature") is not None:
            steer.append(f"explore at {verdict.steer['temperature']:g} K next")
        if sent:
            steer.append(f"{sent} short-distance dimers sent to the oracle")
        if steer:
            self.log(f"  steering: {'; '.join(steer)}")

    def _previous_model(self, iteration: int) -> Path | None:
        """The stored committee of the latest iteration before ``iteration`` (None: none)."""
        before = [m for m in self.store.models() if m["version"] < iteration]
        return Path(max(before, key=lambda m: m["version"])["path"]) if before else None

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
        self.log(
            f"{self.clock.stamp()} iteration {iteration}: training a committee on "
            f"{len(labelled)} labels"
        )
        started = time.time()
        left = self.clock.left()
        try:
            trained = train_iteration(
                self.config,
                labelled,
                test,
                self.out / f"iteration_{iteration}",
                seed=self.config.seed + iteration,
                max_time_s=None if left is None else max(left, MIN_TRAINING_S),
                previous=self._previous_model(iteration),
            )
        except FloatingPointError as err:  # the loss became NaN or infinite
            if not self.store.models():
                raise MlpotInputError(
                    f"the first training diverged: {err}", field="train"
                ) from None
            raise TrainingDiverged(
                f"the training of iteration {iteration} diverged ({err}); the committee of "
                f"iteration {iteration - 1} is the final one"
            ) from None
        self.clock.reserve = time.time() - started  # the next training's, about
        self.store.add_model(
            iteration,
            iteration,
            str(trained.path),
            trained.metrics,
            started=started,
            ended=time.time(),
            elapsed_s=self.clock.elapsed(),
        )
        m = trained.metrics
        kT = units.kB * self.config.test.temperature
        self.log(
            f"{self.clock.stamp()} iteration {iteration}: {self.store.budget_used()} labels; "
            f"test force RMSE {m['test_force_rmse'] * 1e3:.0f} meV/Å, energy RMSE "
            f"{m['test_energy_rmse'] * 1e3:.2f} meV/atom = "
            f"{m['test_energy_rmse'] / kT:.3f} kT at {self.config.test.temperature:g} K; "
            f"calibration scale {m['calibration_scale']:.2f}, "
            f"ν {format_dof(m.get('calibration_dof'))}"
        )
        return trained


class TrainingDiverged(RuntimeError):
    """A committee's training loss became NaN or infinite (the message is a stop reason)."""


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
