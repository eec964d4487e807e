"""The provenance store: every active-learning event as a row of an ASE database.

SQLite file by default; any ASE database URL (e.g. ``postgresql://user@host/db``) when
shared. Rows are only ever appended. Each row has a ``kind``:

=================  ============================================================================
``request``        a configuration sent to the oracle: ``uid``, ``iteration``, ``reason``
                   (``initial``, ``test``, ``dimers`` (short distances asked for by a failed
                   dimer check), or the score(s) that selected it in exploration:
                   ``forces_std``, ``t2``, ``forces_std+t2``, ``domain``), its uncertainty
                   scores, the ``model_version`` that flagged it
``label``          the oracle's answer for ``uid`` (energy, forces, stress and, with the
                   config's ``response`` section, the dipole as calculator results; a
                   polarisability in ``data["polarizability"]``, which ASE's database has
                   no column for), ``attempts``, ``oracle_s``, wall-clock
                   ``started``/``ended``
``failure``        the oracle gave up on ``uid`` after ``attempts`` tries; ``data["error"]``
``model``          a trained model: ``model_version``, ``iteration``, ``data["path"]``, metrics,
                   training wall-clock ``started``/``ended``, ``elapsed_s``
``trajectory``     one exploration trajectory: ``iteration``, ``mode``, ``temperature``,
                   ``steps``, ``stop_reason``, ``candidates``, ``max_force_std``, ``max_t2``,
                   wall-clock ``started``/``ended``
``iteration``      the end of an iteration's exploration round, its figures in ``data``:
                   ``model_version``, ``outcome`` (retrain, converged, stuck, budget),
                   ``trajectories``, ``md_steps``, ``candidates``, ``requested``,
                   ``labels_arrived``, ``budget_used``, wall-clock ``started``/``ended``;
                   ``elapsed_s``
``validation``     the quick validation of model ``model_version`` as the stopping rule:
                   ``passed``, ``elapsed_s``; ``data``: ``failing`` (check -> judged figure ->
                   ``{value, bound}``, or ``{reason}`` for a check that could not run),
                   ``figures`` (the headline ones), ``steer`` (what it asked to explore next)
``setup_failure``  an oracle failure in the driver's own work (``stage``: relax, hessian,
                   test_md), ``attempts``, ``data["error"]``; the run went on without it
``stop``           the loop stopped: ``data`` holds the reason and the budgets it ran under
                   (``oracle_budget``, ``max_iterations``, ``max_time_s``); ``elapsed_s``
=================  ============================================================================

``elapsed_s`` is the run's own clock: seconds of work since it started, summed over the
sessions of a resumed run (each session starts from the largest value stored, so the time a
killed session spent after its last row is not counted). The time budget
(``stop.max_time_s``) is measured on it.

Only checked oracle answers are written (:func:`mlpot.calculators.checked.check_answer`:
finite energy, forces of shape ``(N, 3)``, stress shape). A store written before these
checks may hold a bad row; reading skips it with a warning (never fatal), and its request
counts as unanswered again, so a resumed run labels it anew.

Wall-clock times are ``time.time()`` seconds (comparable across processes), from which
:func:`hidden_oracle_fraction` measures how much oracle time ran behind the driver's work.

A run killed at any point resumes from the store: requests without a label or a failure
are sent again, and a label is written only if its ``uid`` has none yet.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.db
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot.calculators.checked import OracleAnswerError, check_answer, check_structure

# row kinds
REQUEST, LABEL, FAILURE, MODEL, ITERATION = "request", "label", "failure", "model", "iteration"
TRAJECTORY, STOP, SETUP_FAILURE = "trajectory", "stop", "setup_failure"
VALIDATION = "validation"
ELAPSED = "elapsed_s"  # the run's clock, on model, iteration, validation and stop rows
# reasons of the driver's own requests (exploration's are the scores that selected them,
# :mod:`mlpot.active.exploration`): the initial set, the held-out test set, and the short
# distances a failed dimer check asks for
INITIAL, TEST, DIMERS = "initial", "test", "dimers"
# stages of a set-up failure
RELAX, HESSIAN, TEST_MD = "relax", "hessian", "test_md"
# label results kept in a row's data (ASE's database has no column for them)
DATA_PROPERTIES = ("polarizability",)


@dataclass
class Labelled:
    """A labelled configuration read back from the store."""

    uid: str
    atoms: Atoms  # with a SinglePointCalculator holding the labels
    reason: str
    iteration: int


class Store:
    """Append-only event log over an ASE database at ``url`` (a path or a URL)."""

    def __init__(self, url: str | Path) -> None:
        self.url = str(url)
        if "://" not in self.url:
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
        # SQLite's own journal makes each write atomic; ASE's extra lock file would be left
        # behind by a killed run and block the resumed one forever.
        self.db = ase.db.connect(self.url, append=True, use_lock_file=False)
        self._labelled_uids: set[str] | None = None  # uids with a valid label (this writer's)

    # ---- writing -----------------------------------------------------------------------
    def add_request(
        self,
        uid: str,
        atoms: Atoms,
        *,
        iteration: int,
        reason: str,
        scores: dict[str, float] | None = None,
        model_version: int = -1,
    ) -> None:
        check_structure(atoms)  # raises: a request with NaN positions is never stored
        clean = atoms.copy()
        clean.calc = None
        self.db.write(
            clean,
            kind=REQUEST,
            uid=uid,
            iteration=iteration,
            reason=reason,
            model_version=model_version,
            **{k: float(v) for k, v in (scores or {}).items()},
        )

    def add_label(
        self,
        uid: str,
        atoms: Atoms,
        results: dict[str, Any],
        *,
        attempts: int,
        oracle_s: float,
        started: float = 0.0,
        ended: float = 0.0,
    ) -> bool:
        """Write the label of ``uid`` unless it already has a valid one; True if written.
        ``started``/``ended``: wall-clock time of the oracle work (0: not timed). A bad
        answer raises :class:`OracleAnswerError` and writes nothing."""
        check_structure(atoms)
        check_answer(results, len(atoms))
        if self._labelled_uids is None:
            self._labelled_uids = set(self._valid_labels())
        if uid in self._labelled_uids:
            return False
        labelled = atoms.copy()
        columns = {k: v for k, v in results.items() if k not in DATA_PROPERTIES}
        labelled.calc = SinglePointCalculator(labelled, **columns)
        data = {k: np.asarray(results[k], dtype=float) for k in DATA_PROPERTIES if k in results}
        self.db.write(
            labelled,
            kind=LABEL,
            uid=uid,
            attempts=attempts,
            oracle_s=oracle_s,
            started=started,
            ended=ended,
            **({"data": data} if data else {}),
        )
        self._labelled_uids.add(uid)
        return True

    def add_trajectory(self, iteration: int, **figures: float | int | str) -> None:
        """One exploration trajectory's figures (numbers or strings; see module table)."""
        self.db.write(Atoms(), kind=TRAJECTORY, iteration=iteration, **figures)

    def add_failure(self, uid: str, error: str, *, attempts: int) -> None:
        if not self.has(uid, FAILURE):
            self.db.write(Atoms(), kind=FAILURE, uid=uid, attempts=attempts, data={"error": error})

    def add_setup_failure(self, stage: str, error: str, *, attempts: int = 1) -> None:
        self.db.write(
            Atoms(), kind=SETUP_FAILURE, stage=stage, attempts=attempts, data={"error": error}
        )

    def add_model(
        self,
        version: int,
        iteration: int,
        path: str,
        metrics: dict,
        *,
        started: float = 0.0,
        ended: float = 0.0,
        elapsed_s: float = 0.0,
    ) -> None:
        self.db.write(
            Atoms(),
            kind=MODEL,
            model_version=version,
            iteration=iteration,
            started=started,
            ended=ended,
            data={"path": path, "metrics": metrics},
            **{ELAPSED: float(elapsed_s)},
        )

    def end_iteration(self, iteration: int, figures: dict, *, elapsed_s: float = 0.0) -> None:
        """The end of ``iteration``'s exploration round, with its figures (module table)."""
        self.db.write(
            Atoms(), kind=ITERATION, iteration=iteration, data=figures, **{ELAPSED: elapsed_s}
        )

    def add_validation(
        self,
        version: int,
        *,
        passed: bool,
        failing: dict,
        figures: dict,
        steer: dict,
        elapsed_s: float,
    ) -> None:
        """The stopping-rule validation of model ``version`` (module table)."""
        self.db.write(
            Atoms(),
            kind=VALIDATION,
            model_version=version,
            passed=bool(passed),
            data={"failing": failing, "figures": figures, "steer": steer},
            **{ELAPSED: float(elapsed_s)},
        )

    def add_stop(
        self,
        reason: str,
        *,
        oracle_budget: int,
        max_iterations: int,
        max_time_s: float | None = None,
        elapsed_s: float = 0.0,
    ) -> None:
        """The loop stopped for ``reason`` under these budgets (``max_time_s`` None: no time
        budget)."""
        data = {
            "reason": reason,
            "oracle_budget": oracle_budget,
            "max_iterations": max_iterations,
            "max_time_s": max_time_s,
        }
        self.db.write(Atoms(), kind=STOP, data=data, **{ELAPSED: float(elapsed_s)})

    # ---- reading -----------------------------------------------------------------------
    def has(self, uid: str, kind: str) -> bool:
        return self.db.count(kind=kind, uid=uid) > 0

    def uids(self, kind: str) -> set[str]:
        return {row.uid for row in self.db.select(kind=kind)}

    def requests(self) -> dict[str, Any]:
        return {row.uid: row for row in self.db.select(kind=REQUEST)}

    def _valid_labels(self) -> dict[str, Atoms]:
        """uid -> labelled atoms of the first valid label row of each uid; bad rows (a
        store written before answers were checked) are skipped with a warning."""
        valid: dict[str, Atoms] = {}
        for row in self.db.select(kind=LABEL, sort="id"):
            if row.uid in valid:
                continue
            atoms = row.toatoms()
            extra = {k: np.asarray(v) for k, v in (row.get("data") or {}).items()}
            extra = {k: v for k, v in extra.items() if k in DATA_PROPERTIES}
            if extra and atoms.calc is not None:
                atoms.calc.results.update(extra)
            try:
                check_structure(atoms)
                results = atoms.calc.results if atoms.calc is not None else {}
                check_answer(results, len(atoms))
            except OracleAnswerError as err:
                warnings.warn(
                    f"{self.url}: row {row.id} (label of {row.uid}) skipped: {err}",
                    stacklevel=2,
                )
                continue
            valid[row.uid] = atoms
        return valid

    def pending(self) -> list[tuple[str, Atoms]]:
        """Requests with neither a valid label nor a failure, oldest first. A request
        whose own positions are not finite is skipped with a warning."""
        done = set(self._valid_labels()) | self.uids(FAILURE)
        out = []
        for row in self.db.select(kind=REQUEST, sort="id"):
            if row.uid in done:
                continue
            atoms = row.toatoms()
            try:
                check_structure(atoms)
            except OracleAnswerError as err:
                warnings.warn(f"{self.url}: request {row.uid} skipped: {err}", stacklevel=2)
                continue
            out.append((row.uid, atoms))
        return out

    def labelled(
        self, reasons: set[str] | None = None, exclude: set[str] | None = None
    ) -> list[Labelled]:
        """Validly labelled configurations, optionally filtered by request reason."""
        requests = self.requests()
        out = []
        for uid, atoms in self._valid_labels().items():
            request = requests[uid]
            if reasons is not None and request.reason not in reasons:
                continue
            if exclude is not None and request.reason in exclude:
                continue
            out.append(Labelled(uid, atoms, request.reason, request.iteration))
        return out

    def stopped(self) -> dict[str, Any] | None:
        """The last ``stop`` row's data (reason and budgets) and ``elapsed_s``, or None."""
        rows = list(self.db.select(kind=STOP, sort="id"))
        return {**rows[-1].data, ELAPSED: rows[-1].get(ELAPSED, 0.0)} if rows else None

    def failures(self) -> list[dict[str, Any]]:
        return [
            {"uid": row.uid, "attempts": row.attempts, "error": row.data["error"]}
            for row in self.db.select(kind=FAILURE, sort="id")
        ]

    def setup_failures(self) -> list[dict[str, Any]]:
        return [
            {"stage": row.stage, "attempts": row.attempts, "error": row.data["error"]}
            for row in self.db.select(kind=SETUP_FAILURE, sort="id")
        ]

    def models(self) -> list[dict[str, Any]]:
        return [
            {"version": row.model_version, "iteration": row.iteration, **row.data}
            for row in self.db.select(kind=MODEL, sort="id")
        ]

    def validations(self) -> list[dict[str, Any]]:
        """The stopping-rule validations, oldest first: ``version``, ``passed``,
        ``elapsed_s`` and the row's data (``failing``, ``figures``, ``steer``)."""
        return [
            {
                "version": row.model_version,
                "passed": bool(row.passed),
                ELAPSED: row.get(ELAPSED, 0.0),
                **row.data,
            }
            for row in self.db.select(kind=VALIDATION, sort="id")
        ]

    def elapsed_s(self) -> float:
        """The run's clock as last recorded (0 for a new run): the largest ``elapsed_s``."""
        return max(
            (
                float(row.get(ELAPSED, 0.0))
                for kind in (MODEL, ITERATION, VALIDATION, STOP)
                for row in self.db.select(kind=kind)
            ),
            default=0.0,
        )

    def iterations(self) -> list[dict[str, Any]]:
        """The figures of every ended iteration, oldest first (with its ``iteration``)."""
        return [
            {"iteration": row.iteration, **row.data}
            for row in self.db.select(kind=ITERATION, sort="id")
        ]

    def count(self, kind: str, **filters: Any) -> int:
        return self.db.count(kind=kind, **filters)

    def budget_used(self) -> int:
        """Requests that count against the oracle budget: all but the held-out test set's
        (answered, failed or still in flight)."""
        return self.count(REQUEST) - self.count(REQUEST, reason=TEST)

    def intervals(self, kind: str, **filters: Any) -> list[tuple[float, float]]:
        """Wall-clock ``(started, ended)`` of the timed rows of ``kind``."""
        rows = self.db.select(kind=kind, **filters)
        return [
            (row.started, row.ended)
            for row in rows
            if row.get("started", 0.0) > 0 and row.get("ended", 0.0) >= row.started
        ]

    def trajectories(self) -> list[dict[str, Any]]:
        keys = ("iteration", "mode", "temperature", "steps", "stop_reason", "candidates")
        return [
            {k: row.get(k) for k in (*keys, "max_force_std", "max_t2", "started", "ended")}
            for row in self.db.select(kind=TRAJECTORY, sort="id")
        ]


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def overlap_seconds(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length (s) of the intersection of the unions of two lists of intervals."""
    total, a, b = 0.0, _union(a), _union(b)
    i = j = 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


@dataclass
class Overlap:
    """How much wall-clock time of the oracle (the union of its labels' intervals, after
    the initial set) ran while the driver explored, or explored or trained."""

    oracle_s: float
    behind_exploration: float  # fraction of oracle_s
    behind_driver: float  # fraction of oracle_s behind exploration or training


def hidden_oracle_fraction(store: Store) -> Overlap:
    """Oracle time hidden behind exploration (and training), from the store's intervals.
    Only labels that ended after the first exploration started count: the initial set is
    labelled before there is anything to explore with."""
    explore = store.intervals(TRAJECTORY)
    if not explore:
        return Overlap(0.0, float("nan"), float("nan"))
    first = min(start for start, _ in explore)
    oracle = [(max(a, first), b) for a, b in store.intervals(LABEL) if b > first]
    oracle_s = sum(b - a for a, b in _union(oracle))
    if oracle_s <= 0:
        return Overlap(0.0, float("nan"), float("nan"))
    driver = explore + store.intervals(MODEL)
    return Overlap(
        oracle_s,
        overlap_seconds(oracle, explore) / oracle_s,
        overlap_seconds(oracle, driver) / oracle_s,
    )
