"""The labelling requests of a run: each is written to the store first, then sent to the
executor; its outcome, a checked label or a failure, is recorded when it comes back."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from uuid import uuid4

from ase import Atoms

from mlpot.active.config import LabelConfig
from mlpot.active.executors import LabelExecutor
from mlpot.active.labelling import LabelOutcome, OracleSpec, label
from mlpot.active.store import Store
from mlpot.calculators.checked import OracleAnswerError, check_answer


class LabelQueue:
    """Requests sent to ``oracle`` through ``executor`` whose outcomes are not recorded yet.

    Args:
        store: where requests, labels and failures are written.
        executor: runs :func:`mlpot.active.labelling.label`.
        oracle: the oracle the workers build.
        options: retries and time limit of each label.
        log: takes one line of progress.
        response: response properties every label must hold too (``dipole``,
            ``polarizability``; the config's ``response`` section).
    """

    def __init__(
        self,
        store: Store,
        executor: LabelExecutor,
        oracle: OracleSpec,
        options: LabelConfig,
        *,
        log: Callable[[str], None] = print,
        response: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.executor = executor
        self.oracle = oracle
        self.options = options
        self.log = log
        self.response = tuple(response)
        self.inflight: dict[Future, tuple[str, Atoms]] = {}

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet recorded."""
        return len(self.inflight)

    def done(self) -> int:
        """Requests whose outcome has come back and waits to be recorded."""
        return sum(future.done() for future in self.inflight)

    def request(
        self, atoms: Atoms, *, iteration: int, reason: str, scores=None, model_version: int = -1
    ) -> None:
        """Store a new request for ``atoms`` and send it."""
        uid = uuid4().hex
        self.store.add_request(
            uid,
            atoms,
            iteration=iteration,
            reason=reason,
            scores=scores,
            model_version=model_version,
        )
        self.submit(uid, atoms)

    def submit_pending(self) -> None:
        """Send the stored requests without an outcome (a killed run's, or the initial set)."""
        for uid, atoms in self.store.pending():
            self.submit(uid, atoms)

    def submit(self, uid: str, atoms: Atoms) -> None:
        """Send the stored request ``uid``."""
        future = self.executor.submit(
            label,
            uid,
            atoms,
            self.oracle,
            retries=self.options.retries,
            timeout_s=self.options.timeout_s,
            response=self.response,
        )
        self.inflight[future] = (uid, atoms)

    def collect(self, *, block: bool = False) -> int:
        """Record the outcomes that came back; with ``block`` wait for all in flight.
        Returns how many were recorded."""
        done = [f for f in self.inflight if f.done()]
        if block and self.inflight:
            wait(list(self.inflight))
            done = list(self.inflight)
        for future in done:
            self._record(future)
        return len(done)

    def wait_any(self) -> None:
        """Wait until an outcome comes back."""
        wait(list(self.inflight), return_when=FIRST_COMPLETED)

    def _record(self, future: Future) -> LabelOutcome:
        uid, atoms = self.inflight.pop(future)
        try:
            outcome = future.result()
        except Exception as err:  # the worker itself died
            outcome = LabelOutcome(uid, False, {}, f"worker error: {err!r}", 0, 0.0)
        if outcome.ok:
            try:
                check_answer(outcome.results, len(atoms), required=self.response)
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
