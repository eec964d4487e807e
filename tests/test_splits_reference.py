"""Seeded train/validation/test splits and least-squares per-element reference energies."""

from __future__ import annotations

import numpy as np
import pytest

from mlpot.data.reference import fit_reference_energies
from mlpot.data.splits import split_indices

# ------------------------------------------------------------------------- splits


def test_same_seed_gives_the_same_split():
    a = split_indices(50, validation=0.2, test=0.1, seed=7)
    b = split_indices(50, validation=0.2, test=0.1, seed=7)

    assert a == b


def test_different_seeds_give_different_splits():
    splits = [split_indices(50, validation=0.2, test=0.1, seed=seed) for seed in range(5)]

    validations = {tuple(s.validation) for s in splits}
    assert len(validations) == 5


@pytest.mark.parametrize(
    ("n", "validation", "test"),
    [(10, 0.2, 0.1), (50, 0.1, 0.0), (37, 0.25, 0.25), (101, 0.0, 0.3), (7, 0.5, 0.0)],
)
@pytest.mark.parametrize("seed", [0, 1, 123])
def test_split_is_disjoint_complete_and_respects_fractions(n, validation, test, seed):
    split = split_indices(n, validation=validation, test=test, seed=seed)
    parts = [split.train, split.validation, split.test]

    combined = [k for part in parts for k in part]
    assert sorted(combined) == list(range(n))  # complete, and no index twice
    assert set(split.train).isdisjoint(split.validation)
    assert set(split.train).isdisjoint(split.test)
    assert set(split.validation).isdisjoint(split.test)
    assert len(split.validation) == round(validation * n)
    assert len(split.test) == round(test * n)
    assert len(split.train) == n - round(validation * n) - round(test * n)
    assert all(part == sorted(part) for part in parts)


def test_split_is_shuffled_not_a_prefix():
    split = split_indices(100, validation=0.2, seed=0)

    assert split.validation != list(range(20))
    assert split.validation != list(range(80, 100))


def test_small_nonzero_fractions_get_at_least_one_item():
    split = split_indices(5, validation=0.01, test=0.01, seed=0)

    assert len(split.validation) == 1
    assert len(split.test) == 1
    assert len(split.train) == 3


def test_zero_fractions_leave_everything_in_training():
    split = split_indices(6, validation=0.0, test=0.0, seed=3)

    assert split.train == list(range(6))
    assert split.validation == [] and split.test == []


@pytest.mark.parametrize(
    ("n", "validation", "test"),
    [(10, 0.6, 0.5), (10, 1.0, 0.0), (10, -0.1, 0.0), (1, 0.1, 0.0), (2, 0.1, 0.1)],
)
def test_impossible_splits_are_refused(n, validation, test):
    with pytest.raises(ValueError):
        split_indices(n, validation=validation, test=test, seed=0)


# ------------------------------------------------------------- reference energies


def test_recovers_known_per_element_energies_from_dicts():
    elements = [1, 8]
    e_true = np.array([-13.6, -432.1])
    compositions = [{1: 2, 8: 1}, {1: 2, 8: 2}, {8: 2}, {1: 2}, {1: 1, 8: 1}]
    counts = np.array([[c.get(z, 0) for z in elements] for c in compositions])
    energies = counts @ e_true

    fitted = fit_reference_energies(compositions, energies, elements)

    np.testing.assert_allclose(fitted, e_true, rtol=0, atol=1e-10)


def test_recovers_known_per_element_energies_from_count_matrix():
    rng = np.random.default_rng(0)
    e_true = np.array([-3.7, -1.2, -5.9])
    counts = rng.integers(0, 8, size=(20, 3))
    energies = counts @ e_true

    fitted = fit_reference_energies(counts, energies, [13, 29, 79])

    np.testing.assert_allclose(fitted, e_true, rtol=0, atol=1e-10)


def test_order_follows_elements_argument():
    compositions = [{29: 1}, {79: 1}, {29: 2, 79: 1}]
    energies = np.array([-3.5, -3.2, -10.2])

    cu_au = fit_reference_energies(compositions, energies, [29, 79])
    au_cu = fit_reference_energies(compositions, energies, [79, 29])

    np.testing.assert_allclose(cu_au, [-3.5, -3.2], atol=1e-12)
    np.testing.assert_allclose(au_cu, [-3.2, -3.5], atol=1e-12)


def test_noisy_energies_give_the_least_squares_fit():
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 10, size=(30, 2))
    energies = counts @ np.array([-2.0, -4.0]) + rng.normal(0, 0.05, size=30)

    fitted = fit_reference_energies(counts, energies, [29, 79])

    expected, *_ = np.linalg.lstsq(counts.astype(float), energies, rcond=None)
    np.testing.assert_allclose(fitted, expected, atol=1e-12)
    # the residual is orthogonal to the columns: the normal equations hold
    np.testing.assert_allclose(counts.T @ (energies - counts @ fitted), 0.0, atol=1e-9)


def test_single_composition_gives_the_minimum_norm_solution():
    """Only one composition (all frames of one stoichiometry): e is parallel to the counts."""
    composition = {29: 3, 79: 1}
    energy = -14.0
    compositions = [composition] * 4  # several structures, same composition and energy

    fitted = fit_reference_energies(compositions, np.full(4, energy), [29, 79])

    counts = np.array([3.0, 1.0])
    np.testing.assert_allclose(counts @ fitted, energy, atol=1e-10)  # reproduces it
    np.testing.assert_allclose(fitted, energy * counts / (counts @ counts), atol=1e-12)


def test_single_composition_reproduces_the_mean_energy():
    counts = np.array([[2, 1], [2, 1], [2, 1]])
    energies = np.array([-10.0, -10.3, -9.8])

    fitted = fit_reference_energies(counts, energies, [1, 8])

    np.testing.assert_allclose(counts[0] @ fitted, energies.mean(), atol=1e-10)
    # minimum norm: no component orthogonal to the one composition
    orthogonal = np.array([1.0, -2.0])
    assert abs(orthogonal @ fitted) < 1e-10
