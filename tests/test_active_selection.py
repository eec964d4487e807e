"""Selection strategies and thresholds: pure functions, then T² selection on real MD."""

import numpy as np
import pytest
from ase.build import bulk
from uncertainty_models import committee_path, one_thread  # noqa: F401

from mlpot.active import parse_learn_config
from mlpot.active.exploration import ExploreOptions, Thresholds, run_trajectory
from mlpot.active.selection import greedy_log_det, select_batch
from mlpot.active.store import overlap_seconds
from mlpot.calculators import load_calculator
from mlpot.errors import MlpotInputError


def test_max_variance_takes_the_most_uncertain():
    std = np.array([0.1, 0.5, 0.3, 0.9, 0.2])
    assert select_batch("max_variance", 2, uncertainty=std) == [3, 1]


def test_random_is_seeded_and_without_repeats():
    std = np.zeros(50)
    a = select_batch("random", 10, uncertainty=std, rng=np.random.default_rng(1))
    b = select_batch("random", 10, uncertainty=std, rng=np.random.default_rng(1))
    c = select_batch("random", 10, uncertainty=std, rng=np.random.default_rng(2))
    assert a == b and a != c and len(set(a)) == 10


def test_d_optimal_skips_near_duplicates():
    """Five copies of one configuration and two distinct ones: a batch of three takes
    one copy and both distinct ones, where max_variance would take three copies."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=8)
    features = np.array(
        [base + 1e-6 * rng.normal(size=8) for _ in range(5)]
        + [rng.normal(size=8), rng.normal(size=8)]
    )
    std = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.5, 0.4])
    chosen = select_batch("d_optimal", 3, uncertainty=std, features=features)
    assert {5, 6} <= set(chosen) and len(set(chosen) & {0, 1, 2, 3, 4}) == 1
    assert len(set(select_batch("max_variance", 3, uncertainty=std)) & {0, 1, 2, 3, 4}) == 3


def test_d_optimal_adds_to_what_is_known():
    """Candidates close to the data labelled or requested before carry little new
    information: with those as ``known`` rows the new directions are picked first, where
    without them the larger near-copies would be."""
    rng = np.random.default_rng(4)
    known = 2.0 * rng.normal(size=(3, 6))
    fresh = rng.normal(size=(2, 6))
    candidates = np.vstack([known + 1e-3 * rng.normal(size=known.shape), fresh])
    assert set(greedy_log_det(candidates, 2)) <= {0, 1, 2}
    assert set(greedy_log_det(candidates, 2, known=known)) == {3, 4}
    std = np.ones(5)
    assert set(select_batch("d_optimal", 2, uncertainty=std, features=candidates, known=known)) == {
        3,
        4,
    }


def test_greedy_log_det_matches_exhaustive_first_pick_and_increases_det():
    x = np.random.default_rng(3).normal(size=(12, 4))
    picks = greedy_log_det(x, 4, regularisation=1e-3)
    norms = np.einsum("cf,cf->c", x, x)
    assert picks[0] == int(np.argmax(norms))  # first gain is |x|²/λ
    dets = [
        np.linalg.slogdet(1e-3 * np.eye(4) + x[picks[:k]].T @ x[picks[:k]])[1] for k in range(1, 5)
    ]
    assert all(b > a for a, b in zip(dets, dets[1:], strict=False))


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown strategy"):
        select_batch("greedy", 1, uncertainty=np.ones(3))


# ---- T² as a second selection and stop score ----------------------------------------------


def test_threshold_reasons_name_each_score_over_its_limit():
    both = Thresholds(force_std=0.1, stop_force_std=0.5, t2=40.0, stop_t2=90.0)
    assert both.reasons(0.05, 10.0) == ([], [])
    assert both.reasons(0.2, 10.0) == (["forces_std"], [])
    assert both.reasons(0.05, 50.0) == (["t2"], [])
    assert both.reasons(0.2, 50.0) == (["forces_std", "t2"], [])
    assert both.reasons(0.6, 50.0) == (["forces_std", "t2"], ["forces_std"])
    assert both.reasons(0.05, 95.0) == (["t2"], ["t2"])
    assert both.reasons(0.05, float("nan")) == ([], [])  # no domain statistics: no T² verdict
    forces_only = Thresholds(force_std=0.1, stop_force_std=0.5)
    assert forces_only.reasons(0.05, 1e6) == ([], [])
    assert Thresholds(force_std=0.1, domain=True).reasons(0.05, 1.0, in_domain=False) == (
        ["domain"],
        [],
    )


def test_every_check_makes_each_checked_configuration_a_candidate(one_thread):  # noqa: F811
    """``strategy: random`` draws among every checked configuration of the exploration,
    whatever its uncertainty: each check is a candidate (reason ``explored`` unless a score
    selects it), none in between, and the stops still end the trajectory."""
    assert Thresholds(force_std=0.1, every_check=True).reasons(0.05, 1.0) == (["explored"], [])
    assert Thresholds(force_std=0.1, every_check=True).reasons(0.2, 1.0) == (["forces_std"], [])
    calc = load_calculator(committee_path())
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    options = ExploreOptions(temperatures=[600], steps=40, timestep_fs=2.0, check_interval=5)
    every = Thresholds(force_std=50.0, stop_force_std=100.0, every_check=True)
    result = run_trajectory(atoms, calc, 600, options, thresholds=every, seed=1)
    assert result.stop_reason == "completed"
    assert [c.step for c in result.candidates] == list(range(5, 41, 5))
    assert {c.reason for c in result.candidates} == {"explored"}
    plain = run_trajectory(
        atoms,
        calc,
        600,
        options,
        thresholds=Thresholds(force_std=50.0, stop_force_std=100.0),
        seed=1,
    )
    assert plain.candidates == []
    stopping = Thresholds(
        force_std=50.0, stop_force_std=0.5 * result.max_force_std, every_check=True
    )
    stopped = run_trajectory(atoms, calc, 600, options, thresholds=stopping, seed=1)
    assert stopped.stop_reason == "forces_std" and stopped.steps < 40
    assert all(c.step % 5 == 0 for c in stopped.candidates)  # no pre-stop frame added


def test_random_strategy_explores_and_draws_uniformly(tmp_path):
    """A learning run with ``strategy: random``: its exploration requests are checked
    configurations drawn whatever their force std: ones under the selection threshold
    (reason ``explored``), which no other strategy labels, among them."""
    from test_active_loop import _raw

    from mlpot.active import learn
    from mlpot.active.store import Store

    raw = _raw(
        tmp_path / "run",
        select={"force_std": 9.0, "stop_force_std": 10.0, "strategy": "random", "batch_size": 4},
        stop={"oracle_budget": 12, "max_iterations": 2, "patience_steps": 200},
    )
    result = learn(parse_learn_config(raw), log=lambda line: None)
    explored = [
        r
        for r in Store(result.store_path).requests().values()
        if r.reason not in ("initial", "test")
    ]
    reasons = {r.reason for r in explored}
    assert "explored" in reasons and reasons <= {"explored", "forces_std"}
    assert all(r.force_std < 9.0 for r in explored if r.reason == "explored")


def test_t2_select_and_stop_options_are_validated():
    config = parse_learn_config({"select": {"t2_quantile": 0.99, "stop_t2_quantile": 0.99999}})
    assert config.select.needs_domain and not parse_learn_config(None).select.needs_domain
    for bad in (
        {"t2_quantile": 1.0},
        {"t2_quantile": 0.0},
        {"t2_quantile": 0.999, "stop_t2_quantile": 0.99},
        {"t2_quantil": 0.99},
    ):
        with pytest.raises(MlpotInputError, match="select"):
            parse_learn_config({"select": bad})


def test_t2_selects_and_stops_a_real_trajectory(one_thread):  # noqa: F811
    """With the force-std limits out of reach, only T² (from the same calculator pass)
    selects configurations and stops the trajectory; the reasons say so."""
    calc = load_calculator(committee_path())
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    del atoms[0]
    options = ExploreOptions(temperatures=[900], steps=100, timestep_fs=2.0, check_interval=5)
    watch = run_trajectory(atoms, calc, 900, options, thresholds=Thresholds(), seed=4)
    assert watch.stop_reason == "completed" and np.isfinite(watch.max_t2)
    t2 = 0.5 * watch.max_t2  # reached on this trajectory (same seed: same trajectory)
    thresholds = Thresholds(force_std=50.0, stop_force_std=100.0, t2=t2, stop_t2=watch.max_t2)
    result = run_trajectory(atoms, calc, 900, options, thresholds=thresholds, seed=4)
    assert result.candidates and all(c.reason == "t2" and c.t2 > t2 for c in result.candidates)
    assert all(c.force_std < 50.0 for c in result.candidates)
    # the largest T² is at a checked step of the watched run, so the stop limit (strict >)
    # is first passed there or never: the same trajectory completes
    assert result.stop_reason == "completed"
    stopping = Thresholds(force_std=50.0, stop_force_std=100.0, t2=t2, stop_t2=t2)
    stopped = run_trajectory(atoms, calc, 900, options, thresholds=stopping, seed=4)
    assert stopped.stop_reason == "t2" and stopped.steps < watch.steps


def test_learn_records_the_selection_reason_and_oracle_overlap(tmp_path):
    """A learning run selecting by T² alone: every exploration request says ``t2`` and
    carries its score over the chi-square threshold; trajectories and timed labels are in
    the store, from which the hidden oracle fraction is measured."""
    from scipy import stats
    from test_active_loop import _raw

    from mlpot.active import learn
    from mlpot.active.store import Store, hidden_oracle_fraction

    raw = _raw(
        tmp_path / "run",
        # force std thresholds out of reach: selection by T² alone
        select={"force_std": 50.0, "stop_force_std": 100.0, "t2_quantile": 0.05, "batch_size": 4},
        stop={"oracle_budget": 12, "max_iterations": 3, "patience_steps": 200},
    )
    result = learn(parse_learn_config(raw), log=lambda line: None)
    store = Store(result.store_path)
    explored = [r for r in store.requests().values() if r.reason not in ("initial", "test")]
    assert explored and {r.reason for r in explored} == {"t2"}
    n_features = load_calculator(result.model_path).domain.n_features
    assert all(r.t2 > stats.chi2.ppf(0.05, n_features) for r in explored)
    trajectories = store.trajectories()
    assert trajectories and all(t["ended"] >= t["started"] > 0 for t in trajectories)
    assert len(store.intervals("label")) == store.count("label") - store.count(
        "request", reason="test"
    )
    overlap = hidden_oracle_fraction(store)
    assert 0.0 <= overlap.behind_exploration <= overlap.behind_driver <= 1.0
    assert result.hidden_oracle_fraction == pytest.approx(overlap.behind_exploration)


def test_overlap_of_interval_unions():
    a = [(0.0, 2.0), (1.0, 3.0), (10.0, 11.0)]  # union: [0, 3] and [10, 11]
    b = [(2.5, 10.5)]
    assert overlap_seconds(a, b) == pytest.approx(0.5 + 0.5)
    assert overlap_seconds(a, []) == 0.0
    assert overlap_seconds(b, b) == pytest.approx(8.0)
