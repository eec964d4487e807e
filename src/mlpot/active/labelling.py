"""Labelling one configuration with an oracle, in whatever process or worker runs it.

:func:`label` is a top-level function of picklable arguments, so any executor (local
processes, a Dask cluster) can run it. An oracle that raises, returns NaN or runs past
its time limit, or answers with forces (or a requested dipole) of the wrong shape, is
retried with a fresh calculator; after the last attempt the outcome is a failure carrying
the error text — never a silent drop.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from mlpot.calculators.checked import check_answer, check_structure
from mlpot.calculators.oracles import make_oracle


@dataclass(frozen=True)
class OracleSpec:
    """An oracle by name and parameters (see :func:`mlpot.calculators.oracles.make_oracle`);
    ``trust_code`` allows a ``module:factory`` name to import and run its code."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    trust_code: bool = False

    def build(self):
        return make_oracle(self.name, trust_code=self.trust_code, **self.params)


@dataclass
class LabelOutcome:
    """The result of labelling ``uid``: ``results`` (eV, eV/Å, eV/Å³) or an ``error``."""

    uid: str
    ok: bool
    results: dict[str, np.ndarray | float]
    error: str
    attempts: int
    seconds: float
    started: float = 0.0  # wall-clock time.time() of the first attempt's start, s
    ended: float = 0.0  # and of the last attempt's end


_LOCAL = threading.local()  # per worker thread (and process): an ASE calculator is not thread-safe


def _calculators() -> dict[str, Any]:
    """This thread's oracle calculators, by the oracle's repr (built once, reused)."""
    if not hasattr(_LOCAL, "calculators"):
        _LOCAL.calculators = {}
    return _LOCAL.calculators


@contextmanager
def _time_limit(seconds: float | None):
    """Raise TimeoutError after ``seconds`` (enforced in a process's main thread only)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(signum, frame):
        raise TimeoutError(f"oracle exceeded its time limit of {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _compute(
    calculator, atoms: Atoms, stress: bool, response: Sequence[str] = ()
) -> dict[str, Any]:
    check_structure(atoms)
    atoms = atoms.copy()
    atoms.calc = calculator
    results: dict[str, Any] = {
        "energy": float(atoms.get_potential_energy()),
        "forces": np.array(atoms.get_forces()),
    }
    if stress and atoms.pbc.all():
        results["stress"] = np.array(atoms.get_stress())
    results.update(response_results(calculator, atoms, response))
    check_answer(results, len(atoms), required=response)
    return results


def response_results(calculator, atoms: Atoms, properties: Sequence[str]) -> dict[str, Any]:
    """The response ``properties`` (``dipole`` e·Å, ``polarizability`` e·Å²/V) of
    ``calculator`` for ``atoms``, from the same calculation as its energy where the
    calculator computed them with it (an xTB or PySCF dipole); unchecked."""
    out = {}
    for name in properties:
        value = calculator.get_property(name, atoms)
        out[name] = None if value is None else np.array(value, dtype=np.float64)
    return {k: v for k, v in out.items() if v is not None}


def label(
    uid: str,
    atoms: Atoms,
    oracle: OracleSpec,
    *,
    retries: int = 2,
    timeout_s: float | None = None,
    stress: bool = True,
    response: Sequence[str] = (),
) -> LabelOutcome:
    """Label ``atoms`` with up to ``1 + retries`` attempts of the oracle; ``response``:
    the response properties (``dipole``, ``polarizability``) each label must also hold."""
    key = repr(oracle)
    started = time.time()
    start = time.perf_counter()
    error = ""
    for attempt in range(1, retries + 2):
        try:
            calculators = _calculators()
            if key not in calculators:
                calculators[key] = oracle.build()
            with _time_limit(timeout_s):
                results = _compute(calculators[key], atoms, stress, tuple(response))
            seconds = time.perf_counter() - start
            return LabelOutcome(uid, True, results, "", attempt, seconds, started, time.time())
        except Exception as err:  # any oracle failure is recorded, then retried
            error = f"{type(err).__name__}: {err}"
            if not str(err):
                error += " " + traceback.format_exc(limit=2)
            _calculators().pop(key, None)  # a fresh calculator for the next attempt
    seconds = time.perf_counter() - start
    return LabelOutcome(uid, False, {}, error, retries + 1, seconds, started, time.time())
