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
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import numpy as np
import torch
from ase import Atoms

from mlpot.active import sampling
from mlpot.active.adversarial import AdversarialCalculator, adversarial_calculator
from mlpot.active.config import LearnConfig
from mlpot.active.executors import LabelExecutor, make_executor
from mlpot.active.exploration import Thresholds, run_trajectory
from mlpot.active.labelling import LabelOutcome, OracleSpec, label
from mlpot.active.oracle_md import oracle_md_frames, relax
from mlpot.active.report import validate_and_report
from mlpot.active.selection import select_batch
from mlpot.active.store import Store, hidden_oracle_fraction
from mlpot.active.store_lock import StoreLock
from mlpot.active.training_step import TrainedModel, train_iteration
from mlpot.calculators import load_calculator
from mlpot.calculators.checked import CheckedOracle, OracleAnswerError
from mlpot.data.systems import build_system
from mlpot.errors import MlpotInputError
from mlpot.uncertainty.calibration import format_dof

STORE_FILE = "store.db"
SMALL_SYSTEM = 256  # atoms: below this, training and MD run fastest on one thread
MAX_STUCK = 20  # trajectories in a row that stop or fail before flagging anything


@dataclass
class LearnResult:
    """What ``mlpot learn`` produced and how it went."""

    model_path: Path
    store_path: Path | str  # the SQLite file, or the database URL (``store``)
    stop_reason: str
    iterations: list[dict] = field(default_factory=list)
    oracle_calls: dict[str, int] = field(default_factory=dict)
    failures: int = 0  # configurations the oracle gave up on
    setup_failures: int = 0  # failed oracle calls of the driver's own set-up work
    hidden_oracle_fraction: float = float("nan")  # of oracle time, behind exploration
    hidden_oracle_fraction_driver: float = float("nan")  # behind exploration or training
    report_path: Path | None = None
    already_finished: bool = False  # a --resume of a finished run: nothing was done


class ActiveLearner:
    """One ``mlpot learn`` run over the output directory of ``config``."""

    def __init__(
        self, config: LearnConfig, *, resume: bool = False, trust_code: bool = False, log=print
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
            held = self.store.count("request")  # connects: a server must answer now
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
        self.stuck_reason = ""
        self.inflight: dict[Future, tuple[str, Atoms]] = {}
        self.setup_calls = 0
        self.executor: LabelExecutor | None = None
        self.start_structures: list[Atoms] = []

    # ---- labelling -----------------------------------------------------------------------
    def request(
        self, atoms: Atoms, *, iteration: int, reason: str, scores=None, model_version: int = -1
    ) -> None:
        uid = uuid4().hex
        self.store.add_request(
            uid,
            atoms,
            iteration=iteration,
            reason=reason,
            scores=scores,
            model_version=model_version,
        )
        self._submit(uid, atoms)

    def _submit(self, uid: str, atoms: Atoms) -> None:
        lc = self.config.label
        future = self.executor.submit(
            label, uid, atoms, self.oracle, retries=lc.retries, timeout_s=lc.timeout_s
        )
        self.inflight[future] = (uid, atoms)

    def _record(self, future: Future) -> LabelOutcome:
        uid, atoms = self.inflight.pop(future)
        try:
            outcome = future.result()
        except Exception as err:  # the worker itself died
            outcome = LabelOutcome(uid, False, {}, f"worker error: {err!r}", 0, 0.0)
        if outcome.ok:
            try:
                self.store.add_label(
                    uid,
                    atoms,
                    outcome.results,
                    attempts=outcome.attempts,
                    oracle_s=outcome.seconds,
                    started=outcome.started,
                    ended=outcome.ended,
                )
            except OracleAnswerError as err:  # checked again where it is stored
                outcome.ok, outcome.error = False, f"{type(err).__name__}: {err}"
        if not outcome.ok:
            self.store.add_failure(uid, outcome.error, attempts=outcome.attempts)
            self.log(
                f"  oracle failed on {uid[:8]} after {outcome.attempts} attempts: "
                f"{outcome.error.splitlines()[0]}"
            )
        return outcome

    def collect(self, *, block: bool = False) -> int:
        """Store finished labels; with ``block`` wait for all in flight. Returns how many."""
        done = [f for f in self.inflight if f.done()]
        if block and self.inflight:
            wait(list(self.inflight))
            done = list(self.inflight)
        for future in done:
            self._record(future)
        return len(done)

    def wait_any(self) -> None:
        wait(list(self.inflight), return_when=FIRST_COMPLETED)

    # ---- set-up: starts, initial data, held-out test set ---------------------------------
    def _setup_failure(self, stage: str, error: str, attempts: int = 1) -> None:
        self.store.add_setup_failure(stage, error, attempts=attempts)
        self.log(f"  oracle failed during {stage}: {error.splitlines()[0]}")

    def starts(self) -> list[Atoms]:
        path = self.out / "start.xyz"
        import ase.io

        if path.exists():
            return ase.io.read(path, index=":")
        starts = build_system(self.config.system)
        if self.config.relax:
            relaxed = []
            for k, atoms in enumerate(starts):
                try:
                    result = relax(atoms, self.oracle.build, seed=self.config.seed + k)
                except RuntimeError as err:
                    raise MlpotInputError(
                        f"cannot relax start structure {k}: {err}", field="oracle"
                    ) from None
                for error in result.errors:
                    self._setup_failure("relax", error)
                relaxed.append(result.atoms)
                self.setup_calls += result.calls
            starts = relaxed
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        ase.io.write(tmp, starts, format="extxyz")
        os.replace(tmp, path)  # a kill never leaves half a start file
        return starts

    def initial_requests(self, starts: list[Atoms]) -> None:
        if self.store.count("request", reason="initial"):
            return  # already requested by an earlier (killed) run
        ic = self.config.initial
        per_start = max(1, ic.count // len(starts))
        for k, start in enumerate(starts):
            frames = None
            if ic.method == "normal_modes" and not start.pbc.any():
                try:
                    omega2, modes = sampling.harmonic_modes(
                        start, CheckedOracle(self.oracle.build())
                    )
                    frames = sampling.normal_mode_samples(
                        start,
                        omega2,
                        modes,
                        per_start,
                        temperature=ic.temperature,
                        seed=self.config.seed + k,
                    )
                except Exception as err:  # any oracle failure: rattle this start instead
                    self._setup_failure("hessian", f"{type(err).__name__}: {err}")
                    self.log("  normal modes unavailable: rattled configurations instead")
                self.setup_calls += 6 * len(start) + 1
            if frames is None:
                frames = sampling.rattled(
                    start, per_start, stdev=ic.stdev, strain=ic.strain, seed=self.config.seed + k
                )
            for atoms in frames:  # submitted with the other pending requests by run()
                self.store.add_request(uuid4().hex, atoms, iteration=0, reason="initial")
        self.log(f"initial data: {ic.count} configurations ({ic.method}) sent to the oracle")

    def test_set(self, starts: list[Atoms]) -> None:
        """Held-out frames of oracle MD, each checked; frames of a store written before
        answers were checked that fail the check are made anew under a new uid."""
        tc = self.config.test
        valid = {t.uid for t in self.store.labelled(reasons={"test"})}
        if len(valid) >= tc.frames:
            return
        frames = oracle_md_frames(
            starts[0],
            self.oracle.build(),
            temperature=tc.temperature,
            frames=tc.frames,
            stride=tc.stride,
            equilibration=tc.equilibration,
            timestep_fs=tc.timestep_fs,
            seed=self.config.seed + 12345,
        )
        made = 0
        try:
            for k, frame in enumerate(frames):
                made += 1
                uid = f"test-{k}"
                if uid in valid:
                    continue  # written before a kill: the trajectory is deterministic
                if self.store.has(uid, "request"):  # a bad row of an unchecked store
                    uid = f"test-{k}-{uuid4().hex[:8]}"
                self.store.add_request(uid, frame.atoms, iteration=0, reason="test")
                self.store.add_label(uid, frame.atoms, frame.results, attempts=1, oracle_s=0.0)
        except Exception as err:  # the oracle failed on one step five times running
            self._setup_failure("test_md", f"{type(err).__name__}: {err}", attempts=5)
        if not made:
            raise MlpotInputError(
                "no held-out test frame: the oracle MD failed; last error: "
                f"{self.store.setup_failures()[-1]['error']}",
                field="oracle",
            )
        self.log(f"held-out test set: {made} frames of oracle MD at {tc.temperature} K")

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> LearnResult:
        try:
            stopped = self.store.stopped()
            if stopped and not self._extends(stopped):
                return self._already_finished(stopped)
            lc = self.config.label
            self.executor = make_executor(lc.executor, workers=lc.workers, scheduler=lc.scheduler)
            try:
                starts = self.start_structures = self.starts()
                if max(len(atoms) for atoms in starts) < SMALL_SYSTEM:
                    torch.set_num_threads(1)  # thread overhead dominates on small graphs
                self.initial_requests(starts)
                for uid, atoms in self.store.pending():
                    self._submit(uid, atoms)  # requests of a killed run, or the initial ones
                self.test_set(starts)
                self.collect(block=True)
                reason = self._iterate(starts, extend=stopped is not None)
                self.collect(block=True)
            finally:
                self.executor.shutdown()
            stop = self.config.stop
            self.store.add_stop(
                reason, oracle_budget=stop.oracle_budget, max_iterations=stop.max_iterations
            )
            return self._finish(reason)
        finally:
            self.lock.release()

    def _extends(self, stopped: dict) -> bool:
        """Whether this config raised the budget a finished run stopped under."""
        stop = self.config.stop
        return (
            stop.oracle_budget > stopped["oracle_budget"]
            or stop.max_iterations > stopped["max_iterations"]
        )

    def _already_finished(self, stopped: dict) -> LearnResult:
        """A --resume of a finished run: report it, change nothing."""
        summary_path = self.out / "learn.json"
        if not summary_path.exists():  # killed while validating: finish that
            self.start_structures = self.starts()
            return self._finish(stopped["reason"])
        summary = json.loads(summary_path.read_text())
        self.log(
            f"this run already finished ({stopped['reason']}); nothing to do. To extend it, "
            "raise stop.oracle_budget or stop.max_iterations in the config and --resume"
        )
        report = summary.get("report_path")
        return LearnResult(
            model_path=Path(summary["model_path"]),
            store_path=summary["store_path"],
            stop_reason=stopped["reason"],
            iterations=summary["iterations"],
            oracle_calls=summary["oracle_calls"],
            failures=summary["failures"],
            setup_failures=summary.get("setup_failures", 0),
            hidden_oracle_fraction=summary["hidden_oracle_fraction"],
            hidden_oracle_fraction_driver=summary["hidden_oracle_fraction_driver"],
            report_path=Path(report) if report else None,
            already_finished=True,
        )

    def _iterate(self, starts: list[Atoms], *, extend: bool = False) -> str:
        iteration = len(self.store.models())
        if extend:  # a finished run with a raised budget: explore with its last model
            iteration -= 1
        while True:
            trained = self._train(iteration)
            reason = self._stop_reason(iteration, trained)
            if reason:
                return reason
            outcome = self._explore(iteration, trained, starts)
            if outcome == "converged":
                return f"no uncertain configuration in {self.config.stop.patience_steps} MD steps"
            if outcome == "stuck":
                return (
                    f"exploration stuck: {MAX_STUCK} trajectories in a row ended before "
                    f"flagging anything (the last: {self.stuck_reason}); raise "
                    "select.stop_force_std, or set select.label_beyond_stop: true to label "
                    "the frames that stop them"
                )
            if outcome == "budget":
                self.collect(block=True)
                self._train(iteration + 1)
                return f"oracle budget of {self.config.stop.oracle_budget} labels"
            iteration += 1

    def _labels_used(self) -> int:
        return self.store.count("request") - self.store.count("request", reason="test")

    def _train(self, iteration: int) -> TrainedModel:
        existing = [m for m in self.store.models() if m["version"] == iteration]
        if existing:
            return TrainedModel(Path(existing[0]["path"]), existing[0]["metrics"])
        labelled = self.store.labelled(exclude={"test"})
        test = self.store.labelled(reasons={"test"})
        if len(labelled) < 2:
            failures = self.store.failures()
            last = failures[-1]["error"] if failures else "none recorded"
            raise MlpotInputError(
                f"only {len(labelled)} configuration(s) labelled: the oracle failed on "
                f"{len(failures)} of {self.store.count('request', reason='initial')} initial "
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
        if self._labels_used() >= stop.oracle_budget:
            return f"oracle budget of {stop.oracle_budget} labels"
        if iteration + 1 >= stop.max_iterations:
            return f"{stop.max_iterations} iterations"
        return None

    def _calculator(self, path: Path):
        """The exploration calculator: the model, or the model plus the uncertainty bias."""
        ec = self.config.explore
        if ec.mode == "adversarial":
            return adversarial_calculator(
                path,
                strength=ec.bias_strength,
                width=ec.bias_width or 1.0,  # None: set per trajectory, see _explore
                form=ec.bias_form,
            )
        return load_calculator(path)

    def _thresholds(self, calc) -> Thresholds:
        sc = self.config.select
        t2 = stop_t2 = None
        if sc.needs_domain:
            if calc.domain is None:
                raise MlpotInputError(
                    "T² selection needs domain statistics, and this model has none "
                    "(a model exposing per-atom features, e.g. bpnn)",
                    field="select.t2_quantile",
                )
            from scipy import stats

            f = calc.domain.n_features
            t2 = None if sc.t2_quantile is None else float(stats.chi2.ppf(sc.t2_quantile, f))
            if sc.stop_t2_quantile is not None:
                stop_t2 = float(stats.chi2.ppf(sc.stop_t2_quantile, f))
        return Thresholds(
            force_std=sc.force_std,
            stop_force_std=sc.stop_force_std,
            t2=t2,
            stop_t2=stop_t2,
            domain=sc.use_domain,
            max_force=sc.max_force,
            min_distance_fraction=sc.min_distance_fraction,
            label_beyond_stop=sc.label_beyond_stop,
        )

    def _explore(self, iteration: int, trained: TrainedModel, starts: list[Atoms]) -> str:
        """Explore with the current model until enough labels arrived to retrain."""
        config = self.config
        calc = self._calculator(trained.path)
        thresholds = self._thresholds(calc)
        rng = np.random.default_rng(config.seed + 1000 * (iteration + 1))
        arrived, quiet_steps, stuck, k = 0, 0, 0, 0
        temperatures = config.explore.temperatures
        while True:
            start = starts[int(rng.integers(len(starts)))]
            temperature = temperatures[k % len(temperatures)]
            k += 1
            if isinstance(calc, AdversarialCalculator) and config.explore.bias_width is None:
                calc.width = _start_width(calc, start)
            result = run_trajectory(
                start,
                calc,
                temperature,
                config.explore,
                thresholds=thresholds,
                seed=int(rng.integers(1 << 31)),
                # end early only once enough labels are in to retrain: ending at any
                # arrival cuts every trajectory at its first check when the oracle is fast
                poll=lambda need=config.select.batch_size - arrived: (
                    sum(f.done() for f in self.inflight) >= need
                ),
            )
            self._record_trajectory(iteration, temperature, result)
            arrived += self.collect()
            if result.candidates:
                quiet_steps = stuck = 0
            elif result.stop_reason in ("completed", "labels arrived"):
                quiet_steps += result.steps  # ran quietly: counts towards convergence
                stuck = 0
            else:  # failed, or stopped before flagging anything: not quiet
                stuck += 1
                if result.failed:
                    self.log(f"  trajectory ended: {result.stop_reason}")
                if stuck >= MAX_STUCK:
                    self.stuck_reason = result.stop_reason
                    return "retrain" if self.inflight or arrived else "stuck"
            self._request_batch(result.candidates, iteration, calc, rng)
            if self._labels_used() >= config.stop.oracle_budget:
                return "budget"
            if arrived >= config.select.batch_size:
                return "retrain"
            if quiet_steps >= config.stop.patience_steps:
                if not self.inflight:
                    return "converged" if arrived == 0 else "retrain"
                self.wait_any()

    def _record_trajectory(self, iteration: int, temperature: float, result) -> None:
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
        self.store.add_trajectory(iteration, **figures)

    def _request_batch(self, candidates, iteration: int, calc, rng) -> None:
        room = min(
            self.config.select.batch_size - len(self.inflight),
            self.config.stop.oracle_budget - self._labels_used(),
        )
        if not candidates or room <= 0:
            return
        from mlpot.active.features import structure_features

        features = (
            structure_features(calc.model, [c.atoms for c in candidates])
            if self.config.select.strategy == "d_optimal"
            else None
        )
        picks = select_batch(
            self.config.select.strategy,
            room,
            uncertainty=np.array([c.force_std for c in candidates]),
            features=features,
            rng=rng,
        )
        for index in picks:
            c = candidates[index]
            scores = {"force_std": c.force_std, "temperature": c.temperature}
            if np.isfinite(c.t2):
                scores["t2"] = c.t2
            self.request(
                c.atoms,
                iteration=iteration + 1,
                reason=c.reason,
                scores=scores,
                model_version=iteration,
            )

    def _finish(self, reason: str) -> LearnResult:
        models = self.store.models()
        final = Path(models[-1]["path"])
        model_path = self.out / "model.pt"
        tmp = model_path.with_name(f"{model_path.name}.{os.getpid()}.tmp")
        shutil.copyfile(final, tmp)
        os.replace(tmp, model_path)  # never half a model
        overlap = hidden_oracle_fraction(self.store)
        result = LearnResult(
            model_path=model_path,
            store_path=self.store_url,
            stop_reason=reason,
            iterations=[{"version": m["version"], **m["metrics"]} for m in models],
            oracle_calls={
                "labels": self._labels_used(),
                "setup": self.setup_calls,
                "test": self.store.count("request", reason="test"),
            },
            failures=self.store.count("failure"),
            setup_failures=self.store.count("setup_failure"),
            hidden_oracle_fraction=overlap.behind_exploration,
            hidden_oracle_fraction_driver=overlap.behind_driver,
        )
        if self.config.validation:
            self.log("validating the final model against the oracle ...")
            result.report_path = validate_and_report(
                model_path,
                oracle=self.config.oracle.name,
                oracle_params=dict(self.config.oracle.params),
                trust_code=self.trust_code,
                system=self.start_structures[0],
                temperature=self.config.test.temperature,
                figures={
                    "stop_reason": reason,
                    "oracle_calls": result.oracle_calls,
                    "failures": result.failures,
                    "hidden_oracle_fraction": result.hidden_oracle_fraction,
                    "iterations": result.iterations,
                },
                iterations=result.iterations,
                directory=self.out / "report",
            )
            self.log(f"report: {result.report_path}")
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
        tmp = self.out / f"learn.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, self.out / "learn.json")
        self.log(f"stopped: {reason}; model {model_path}")
        return result


def _start_width(calc: AdversarialCalculator, start: Atoms) -> float:
    """Bias width ``B = σ_E / sqrt(N)`` (eV/atom) of the committee at ``start``."""
    atoms = start.copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    variance = calc.results["energy_variance"]
    return max(float(np.sqrt(variance / len(atoms))), 1e-6)


def learn(
    config: LearnConfig, *, resume: bool = False, trust_code: bool = False, log=print
) -> LearnResult:
    """Run (or resume) active learning as ``config`` says. ``trust_code`` lets a
    ``module:factory`` oracle in the config import and run its code."""
    return ActiveLearner(config, resume=resume, trust_code=trust_code, log=log).run()
