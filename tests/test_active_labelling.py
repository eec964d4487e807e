"""Labelling with retries and recorded failures; the append-only store."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mlpot.active.labelling import OracleSpec, label
from mlpot.active.store import Store


def _cell(seed):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_label_agrees_with_the_oracle():
    atoms = _cell(0)
    outcome = label("a", atoms, OracleSpec("emt"))
    atoms.calc = EMT()
    assert outcome.ok and outcome.attempts == 1
    assert outcome.results["energy"] == atoms.get_potential_energy()
    np.testing.assert_array_equal(outcome.results["forces"], atoms.get_forces())
    np.testing.assert_array_equal(outcome.results["stress"], atoms.get_stress())


def test_failing_oracle_is_retried_then_recorded():
    spec = OracleSpec("support.oracles:flaky_emt", {"rate": 1.0}, trust_code=True)
    outcome = label("b", _cell(1), spec, retries=2)
    assert not outcome.ok and outcome.attempts == 3
    assert "injected oracle failure" in outcome.error


def test_store_is_append_only_and_labels_each_uid_once(tmp_path):
    store = Store(tmp_path / "s.db")
    atoms = _cell(2)
    store.add_request("u1", atoms, iteration=0, reason="initial")
    store.add_request("u2", atoms, iteration=0, reason="initial")
    assert [uid for uid, _ in store.pending()] == ["u1", "u2"]
    results = {"energy": -1.0, "forces": np.zeros((4, 3))}
    assert store.add_label("u1", atoms, results, attempts=1, oracle_s=0.1)
    assert not store.add_label("u1", atoms, results, attempts=1, oracle_s=0.1)
    store.add_failure("u2", "RuntimeError: no", attempts=3)
    assert store.pending() == []
    assert store.count("label") == 1 and store.failures()[0]["error"] == "RuntimeError: no"
    labelled = store.labelled()
    assert labelled[0].atoms.get_potential_energy() == -1.0 and labelled[0].reason == "initial"


def test_store_records_the_end_of_each_iteration_and_the_budget_used(tmp_path):
    store = Store(tmp_path / "s.db")
    atoms = _cell(3)
    store.add_request("i", atoms, iteration=0, reason="initial")
    store.add_request("t", atoms, iteration=0, reason="test")
    store.add_request("x", atoms, iteration=1, reason="forces_std", model_version=0)
    assert store.budget_used() == 2  # the held-out test set is not labelling for training
    assert store.iterations() == []
    store.end_iteration(0, {"outcome": "retrain", "requested": 1})
    store.end_iteration(1, {"outcome": "converged", "requested": 0})
    assert store.iterations() == [
        {"iteration": 0, "outcome": "retrain", "requested": 1},
        {"iteration": 1, "outcome": "converged", "requested": 0},
    ]


def test_threads_label_with_calculators_of_their_own():
    """The thread executor's workers each build their own oracle calculator (an ASE
    calculator is not thread-safe: a shared one mixed up structures and raised): every
    concurrent label equals the oracle's answer for its own structure."""
    from concurrent.futures import ThreadPoolExecutor

    spec = OracleSpec("support.oracles:slow_emt", {"delay": 0.05}, trust_code=True)
    cells = [_cell(k) for k in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda k: label(str(k), cells[k], spec, retries=0), range(8)))
    for cell, outcome in zip(cells, outcomes, strict=True):
        assert outcome.ok, outcome.error
        reference = cell.copy()
        reference.calc = EMT()
        assert outcome.results["energy"] == pytest.approx(
            reference.get_potential_energy(), rel=1e-12
        )
