"""Selection strategies and thresholds: pure functions."""

import numpy as np
import pytest

from mlpot.active.selection import greedy_log_det, over_threshold, select_batch


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


def test_greedy_log_det_matches_exhaustive_first_pick_and_increases_det():
    x = np.random.default_rng(3).normal(size=(12, 4))
    picks = greedy_log_det(x, 4, regularisation=1e-3)
    norms = np.einsum("cf,cf->c", x, x)
    assert picks[0] == int(np.argmax(norms))  # first gain is |x|²/λ
    dets = [
        np.linalg.slogdet(1e-3 * np.eye(4) + x[picks[:k]].T @ x[picks[:k]])[1] for k in range(1, 5)
    ]
    assert all(b > a for a, b in zip(dets, dets[1:], strict=False))


def test_over_threshold_combines_scores():
    scores = {"force_std": np.array([0.05, 0.2, 0.01]), "t2": np.array([1.0, 1.0, 50.0])}
    mask = over_threshold(scores, {"force_std": 0.1, "t2": 20.0})
    assert mask.tolist() == [False, True, True]


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown strategy"):
        select_batch("greedy", 1, uncertainty=np.ones(3))
