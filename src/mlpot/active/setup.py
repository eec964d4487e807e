"""The driver's own oracle work before exploration: the start structures (relaxed if asked),
the initial requests and the held-out test set.

Every oracle answer is checked; a failing call is retried where it can be, recorded in the
store as a set-up failure, and the run goes on without it. Each step is done once per
store: a resumed run finds its results (``start.xyz``, the stored requests and labels).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import ase.io
from ase import Atoms

from mlpot.active.config import LearnConfig
from mlpot.active.labelling import OracleSpec
from mlpot.active.oracle_md import oracle_md_frames, relax
from mlpot.active.sampling import harmonic_modes, modes_of_hessian, normal_mode_samples, rattled
from mlpot.active.store import HESSIAN, INITIAL, RELAX, REQUEST, TEST, TEST_MD, Store
from mlpot.active.valence_hessian import valence_hessian
from mlpot.calculators.checked import CheckedOracle
from mlpot.data.systems import build_system
from mlpot.errors import MlpotInputError

START_FILE = "start.xyz"


class RunSetup:
    """Set-up work of a run into ``out``; ``calls`` counts its oracle calls (this process's).

    Args:
        config: the run's config.
        out: the output directory.
        oracle: the oracle to build.
        store: the run's store.
        log: takes one line of progress.
    """

    def __init__(
        self,
        config: LearnConfig,
        out: Path,
        oracle: OracleSpec,
        store: Store,
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.out = out
        self.oracle = oracle
        self.store = store
        self.log = log
        self.calls = 0

    def _failure(self, stage: str, error: str, attempts: int = 1) -> None:
        self.store.add_setup_failure(stage, error, attempts=attempts)
        self.log(f"  oracle failed during {stage}: {error.splitlines()[0]}")

    def starts(self) -> list[Atoms]:
        """The start structures: built from the config (relaxed by the oracle if asked)
        and written to ``start.xyz``, or read back from it."""
        path = self.out / START_FILE
        if path.exists():
            return ase.io.read(path, index=":")
        starts = build_system(self.config.system)
        if self.config.relax:
            starts = [self._relaxed(k, atoms) for k, atoms in enumerate(starts)]
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        ase.io.write(tmp, starts, format="extxyz")
        os.replace(tmp, path)  # a kill never leaves half a start file
        return starts

    def _relaxed(self, k: int, atoms: Atoms) -> Atoms:
        try:
            result = relax(atoms, self.oracle.build, seed=self.config.seed + k)
        except RuntimeError as err:
            raise MlpotInputError(
                f"cannot relax start structure {k}: {err}", field="oracle"
            ) from None
        for error in result.errors:
            self._failure(RELAX, error)
        self.calls += result.calls
        return result.atoms

    def initial_requests(self, starts: list[Atoms]) -> None:
        """Store the initial requests (sent with the other pending ones by the loop):
        normal-mode samples of molecules, rattled copies otherwise or when the Hessian
        fails."""
        if self.store.count(REQUEST, reason=INITIAL):
            return  # already requested by an earlier (killed) run
        ic = self.config.initial
        per_start = max(1, ic.count // len(starts))
        for k, start in enumerate(starts):
            frames = None
            if ic.method == "normal_modes" and not start.pbc.any():
                frames = self._normal_mode_samples(k, start, per_start)
            if frames is None:
                frames = rattled(
                    start, per_start, stdev=ic.stdev, strain=ic.strain, seed=self.config.seed + k
                )
            for atoms in frames:
                self.store.add_request(uuid4().hex, atoms, iteration=0, reason=INITIAL)
        self.log(f"initial data: {ic.count} configurations ({ic.method}) sent to the oracle")

    def _normal_mode_samples(self, k: int, start: Atoms, count: int) -> list[Atoms] | None:
        """Samples of the normal modes of ``start`` (``initial.hessian``), or None when the
        oracle's Hessian fails."""
        if self.config.initial.hessian == "valence":
            return self._samples_of(
                k, start, count, *modes_of_hessian(start, valence_hessian(start))
            )
        frames = None
        try:
            modes = harmonic_modes(start, CheckedOracle(self.oracle.build()))
            frames = self._samples_of(k, start, count, *modes)
        except Exception as err:  # any oracle failure: rattle this start instead
            self._failure(HESSIAN, f"{type(err).__name__}: {err}")
            self.log("  normal modes unavailable: rattled configurations instead")
        self.calls += 6 * len(start) + 1
        return frames

    def _samples_of(self, k: int, start: Atoms, count: int, omega2, modes) -> list[Atoms]:
        """``count`` thermal samples of the modes ``(ω², modes)`` of start ``k``."""
        return normal_mode_samples(
            start,
            omega2,
            modes,
            count,
            temperature=self.config.initial.temperature,
            seed=self.config.seed + k,
        )

    def test_set(self, starts: list[Atoms]) -> None:
        """Held-out frames of oracle MD, each checked; frames of a store written before
        answers were checked that fail the check are made anew under a new uid."""
        tc = self.config.test
        valid = {t.uid for t in self.store.labelled(reasons={TEST})}
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
            response=self.config.response.properties if self.config.response else (),
        )
        made = 0
        try:
            for k, frame in enumerate(frames):
                made += 1
                uid = f"test-{k}"
                if uid in valid:
                    continue  # written before a kill: the trajectory is deterministic
                if self.store.has(uid, REQUEST):  # a bad row of an unchecked store
                    uid = f"test-{k}-{uuid4().hex[:8]}"
                self.store.add_request(uid, frame.atoms, iteration=0, reason=TEST)
                self.store.add_label(uid, frame.atoms, frame.results, attempts=1, oracle_s=0.0)
        except Exception as err:  # the oracle failed on one step five times running
            self._failure(TEST_MD, f"{type(err).__name__}: {err}", attempts=5)
        if not made:
            raise MlpotInputError(
                "no held-out test frame: the oracle MD failed; last error: "
                f"{self.store.setup_failures()[-1]['error']}",
                field="oracle",
            )
        self.log(f"held-out test set: {made} frames of oracle MD at {tc.temperature} K")
