"""The provenance store: every active-learning event as a row of an ASE database.

SQLite file by default; any ASE database URL (e.g. ``postgresql://user@host/db``) when
shared. Rows are only ever appended. Each row has a ``kind``:

=============  ================================================================================
``request``    a configuration sent to the oracle: ``uid``, ``iteration``, ``reason``
               (``initial``, ``test``, ``uncertain``, ...), its uncertainty scores, the
               ``model_version`` that flagged it
``label``      the oracle's answer for ``uid`` (energy, forces, stress as calculator
               results), ``attempts``, ``oracle_s``
``failure``    the oracle gave up on ``uid`` after ``attempts`` tries; ``data["error"]``
``model``      a trained model: ``model_version``, ``iteration``, ``data["path"]``, metrics
``iteration``  the end of an iteration, with its figures in ``data``
=============  ================================================================================

A run killed at any point resumes from the store: requests without a label or a failure
are sent again, and a label is written only if its ``uid`` has none yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.db
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

REQUEST, LABEL, FAILURE, MODEL, ITERATION = "request", "label", "failure", "model", "iteration"


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
        self, uid: str, atoms: Atoms, results: dict[str, Any], *, attempts: int, oracle_s: float
    ) -> bool:
        """Write the label of ``uid`` unless it already has one; True if written."""
        if self.has(uid, LABEL):
            return False
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, **results)
        self.db.write(labelled, kind=LABEL, uid=uid, attempts=attempts, oracle_s=oracle_s)
        return True

    def add_failure(self, uid: str, error: str, *, attempts: int) -> None:
        if not self.has(uid, FAILURE):
            self.db.write(Atoms(), kind=FAILURE, uid=uid, attempts=attempts, data={"error": error})

    def add_model(self, version: int, iteration: int, path: str, metrics: dict) -> None:
        self.db.write(
            Atoms(),
            kind=MODEL,
            model_version=version,
            iteration=iteration,
            data={"path": path, "metrics": metrics},
        )

    def end_iteration(self, iteration: int, figures: dict) -> None:
        self.db.write(Atoms(), kind=ITERATION, iteration=iteration, data=figures)

    # ---- reading -----------------------------------------------------------------------
    def has(self, uid: str, kind: str) -> bool:
        return self.db.count(kind=kind, uid=uid) > 0

    def uids(self, kind: str) -> set[str]:
        return {row.uid for row in self.db.select(kind=kind)}

    def requests(self) -> dict[str, Any]:
        return {row.uid: row for row in self.db.select(kind=REQUEST)}

    def pending(self) -> list[tuple[str, Atoms]]:
        """Requests with neither a label nor a failure, oldest first."""
        done = self.uids(LABEL) | self.uids(FAILURE)
        return [
            (row.uid, row.toatoms())
            for row in self.db.select(kind=REQUEST, sort="id")
            if row.uid not in done
        ]

    def labelled(
        self, reasons: set[str] | None = None, exclude: set[str] | None = None
    ) -> list[Labelled]:
        """Labelled configurations, optionally filtered by request reason."""
        requests = self.requests()
        out = []
        for row in self.db.select(kind=LABEL, sort="id"):
            request = requests[row.uid]
            if reasons is not None and request.reason not in reasons:
                continue
            if exclude is not None and request.reason in exclude:
                continue
            out.append(Labelled(row.uid, row.toatoms(), request.reason, request.iteration))
        return out

    def failures(self) -> list[dict[str, Any]]:
        return [
            {"uid": row.uid, "attempts": row.attempts, "error": row.data["error"]}
            for row in self.db.select(kind=FAILURE, sort="id")
        ]

    def models(self) -> list[dict[str, Any]]:
        return [
            {"version": row.model_version, "iteration": row.iteration, **row.data}
            for row in self.db.select(kind=MODEL, sort="id")
        ]

    def iterations(self) -> list[dict[str, Any]]:
        return [
            {"iteration": row.iteration, **row.data}
            for row in self.db.select(kind=ITERATION, sort="id")
        ]

    def count(self, kind: str, **filters: Any) -> int:
        return self.db.count(kind=kind, **filters)
