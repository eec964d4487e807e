"""Domain of applicability: Mahalanobis T² with a chi-square threshold, and d_min."""

from pathlib import Path

import numpy as np
import pytest
import torch
from uncertainty_models import committee_path, data_files, one_thread

from mlpot.data.graph import collate
from mlpot.models.checkpoint import load_checkpoint, load_model, save_model
from mlpot.physics import outputs
from mlpot.uncertainty.assess import (
    collect_residuals,
    load_with_statistics,
    per_structure_max,
    read_graphs,
)
from mlpot.uncertainty.domain import (
    DomainStatistics,
    fit_domain,
    fit_domain_statistics,
    ledoit_wolf,
    tail_quantile,
)
from mlpot.uncertainty.features import model_features

pytestmark = pytest.mark.usefixtures("one_thread")
assert one_thread  # the fixture is used through pytestmark

FIXTURES = Path(__file__).parent / "fixtures"


def _gaussian(n: int, n_features: int = 8, seed: int = 0, shift: float = 0.0):
    rng = np.random.default_rng(0)  # the same distribution for every seed
    mixing = rng.normal(size=(n_features, n_features))
    covariance = mixing @ mixing.T + 0.05 * np.eye(n_features)
    mean = rng.normal(size=n_features)
    samples = np.random.default_rng(seed).multivariate_normal(mean, covariance, size=n)
    return samples + shift * np.sqrt(np.diag(covariance))


@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_chi_square_threshold_flags_the_expected_fraction(confidence):
    """Fresh samples of the training distribution: a fraction 1 - confidence is flagged."""
    train, fresh = _gaussian(20000), _gaussian(20000, seed=1)
    domain = fit_domain_statistics(train, np.full(len(train), 29), [29], confidence=confidence)
    t2, _ = domain.score_atoms(torch.as_tensor(fresh), torch.full((len(fresh),), 29))
    flagged = float((t2 > domain.t2_threshold).double().mean())
    # binomial std sqrt(p(1-p)/n) is 0.0015 at p = 0.05, 0.0007 at p = 0.01
    assert flagged == pytest.approx(1 - confidence, abs=0.006)
    shifted = torch.as_tensor(_gaussian(2000, seed=2, shift=6.0))
    t2_far, _ = domain.score_atoms(shifted, torch.full((2000,), 29))
    assert float((t2_far > domain.t2_threshold).double().mean()) > 0.99


def test_shrinkage_keeps_collinear_features_invertible():
    few = _gaussian(12, n_features=40)  # fewer samples than features: singular sample covariance
    covariance, alpha = ledoit_wolf(few - few.mean(0))
    assert 0 < alpha <= 1
    assert np.linalg.eigvalsh(covariance).min() > 0
    many = _gaussian(50000)
    _, alpha_many = ledoit_wolf(many - many.mean(0))
    assert alpha_many < 0.01  # plenty of data: hardly any shrinkage


def test_d_min_threshold_and_coverage_gap():
    train = _gaussian(3000, n_features=4)
    domain = fit_domain_statistics(
        train, np.full(3000, 29), [29], confidence=0.95, max_reference=1000, seed=3
    )
    assert len(domain.reference[0]) == 1000
    numbers = torch.full((3000,), 29)
    _, d_fresh = domain.score_atoms(torch.as_tensor(_gaussian(3000, n_features=4, seed=4)), numbers)
    flagged = float((d_fresh > domain.d_min_threshold[0]).double().mean())
    assert flagged == pytest.approx(0.05, abs=0.02)
    far = torch.as_tensor(_gaussian(3000, n_features=4, seed=5, shift=8.0))
    _, d_far = domain.score_atoms(far, numbers)
    assert float(d_far.min()) > domain.d_min_threshold[0]


def test_element_without_training_atoms_is_out_of_domain():
    train = _gaussian(500, n_features=3)
    domain = fit_domain_statistics(train, np.full(500, 29), [29, 47])
    t2, d_min = domain.score_atoms(torch.as_tensor(train[:2]), torch.tensor([29, 47]))
    assert np.isfinite(float(t2[0])) and float(t2[1]) == float("inf")
    assert float(d_min[1]) == float("inf")


def test_trained_model_separates_off_data_cells():
    loaded = load_with_statistics(committee_path())
    fraction, worst = {}, {}
    for name in ("calibration", "off"):
        res = collect_residuals(
            loaded.model, read_graphs([data_files()[name]], loaded.model), domain=loaded.domain
        )
        fraction[name] = float(np.mean(res.in_domain))
        worst[name] = float(np.median(per_structure_max(res.t2, res.batch)))
    assert fraction["calibration"] > 0.5 and fraction["off"] == 0.0
    assert worst["off"] > 10 * worst["calibration"]


def test_domain_statistics_round_trip_through_the_checkpoint(tmp_path):
    """Training stored the statistics; saved and loaded again they score identically."""
    payload = load_checkpoint(committee_path())
    assert payload["domain"]["elements"] == [29] and payload["domain"]["counts"][0] > 500
    model = load_model(committee_path())
    graphs = read_graphs([data_files()["train"]], model)
    domain = fit_domain(model, graphs, confidence=0.9, max_reference=300, seed=1)
    path = tmp_path / "with_domain.pt"
    save_model(path, model, domain=domain.to_dict())
    loaded = DomainStatistics.from_dict(load_checkpoint(path)["domain"])
    batch = collate(graphs[:3])
    features = model_features(model, batch)
    expected, again = domain.score(features, batch), loaded.score(features, batch)
    assert loaded.has_hull and payload["domain"]["method"] == "mahalanobis+dmin+hull"
    for key in (outputs.MAHALANOBIS, outputs.D_MIN, outputs.HULL_DISTANCE, outputs.IN_DOMAIN):
        torch.testing.assert_close(again[key], expected[key], rtol=0, atol=0)
    assert again[outputs.MAHALANOBIS].shape == (batch["numbers"].shape[0],)
    assert again[outputs.IN_DOMAIN].shape == (3,)
    assert loaded.confidence == 0.9 and len(loaded.reference[0]) == 300


def test_old_checkpoints_load_without_domain():
    payload = load_checkpoint(FIXTURES / "checkpoint_v1.pt")
    assert payload["domain"] is None
    loaded = load_with_statistics(FIXTURES / "checkpoint_v1.pt")
    assert loaded.domain is None


def test_structures_of_the_training_distribution_are_in_domain_at_the_confidence():
    """A structure is flagged when any of its atoms is: with per-atom limits at 99 % a
    structure of 30 atoms would be flagged ~45 % of the time (60 tests); the per-structure
    (Šidák) levels keep the false alarms within 1 - confidence, and one atom far from the
    data still flags its structure."""
    n_features, n_atoms, n_structures = 6, 30, 400
    train = _gaussian(20000, n_features=n_features)
    domain = fit_domain_statistics(train, np.full(len(train), 29), [29], confidence=0.99)
    fresh = torch.as_tensor(_gaussian(n_atoms * n_structures, n_features=n_features, seed=7))
    far = torch.as_tensor(_gaussian(n_structures, n_features=n_features, seed=8, shift=8.0))
    graph = {
        "numbers": torch.full((len(fresh),), 29),
        "batch": torch.arange(n_structures).repeat_interleave(n_atoms),
        "n_atoms": torch.full((n_structures,), n_atoms),
    }
    in_domain = domain.score(fresh, graph)[outputs.IN_DOMAIN]
    per_atom = domain.score_atoms(fresh, graph["numbers"])
    atom_flags = (per_atom[0] > domain.t2_threshold) | (per_atom[1] > domain.d_min_threshold[0])
    in_domain_with_atom_limits = 1.0 - float(
        torch.zeros(n_structures)
        .index_add(0, graph["batch"], atom_flags.float())
        .gt(0)
        .float()
        .mean()
    )
    assert in_domain_with_atom_limits < 0.8
    assert float(in_domain.double().mean()) >= 0.97  # binomial std 0.005 at 0.99
    fresh[::n_atoms] = far  # one atom of every structure far away
    assert not bool(domain.score(fresh, graph)[outputs.IN_DOMAIN].any())


def test_tail_quantile_extrapolates_beyond_the_samples():
    """2000 samples of an exponential tail: the 1 - 10⁻⁴ quantile, beyond the largest
    sample's reach, closer to the exact one than the empirical quantile; below the tail
    start the empirical quantile."""
    rng = np.random.default_rng(0)
    samples = 1.0 + rng.exponential(0.4, size=2000)
    levels = np.array([0.5, 0.9, 0.9999])
    exact = 1.0 + 0.4 * np.log(1 / (1 - levels))
    got = tail_quantile(samples, levels)
    assert got[:2] == pytest.approx(np.quantile(samples, levels[:2]))
    # 100 excesses: the mean excess has a 10 % relative std, the extrapolated quantile ~5 %
    assert got[2] == pytest.approx(exact[2], rel=0.16)
    empirical = np.quantile(samples, levels[2])
    assert abs(got[2] - exact[2]) < abs(empirical - exact[2])
    # levels all in the tail (the per-structure tests) take the same values on their own
    assert tail_quantile(samples, levels[2:]) == pytest.approx(got[2:], rel=1e-12)
    assert tail_quantile(samples, 0.9) == pytest.approx(got[1], rel=1e-12)


def test_hull_distance_of_points_inside_and_outside_a_known_hull():
    """Training features: the corners and face centres of the cube [-1, 1]³ and its centre
    (isotropic covariance, so the whitened hull is the cube scaled by 1/sqrt(λ)): the hull
    distance is the distance to the nearest face inside and to the face plane outside."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    faces = np.concatenate([np.eye(3), -np.eye(3)])
    train = np.concatenate([corners, faces, np.zeros((1, 3))]).astype(float)
    domain = fit_domain_statistics(train, np.full(len(train), 29), [29], hull_dims=3)
    scale = 1 / np.sqrt(10 / 14)  # whitening: the covariance is (10/14) I
    points = torch.tensor([[0.0, 0.0, 0.5], [0.2, -0.3, 0.1], [0.0, 0.0, 2.0], [1.5, 0, 0]])
    distance = domain.hull_distance(points, torch.full((4,), 29))
    expected = scale * np.array([-0.5, -0.7, 1.0, 0.5])
    np.testing.assert_allclose(distance.numpy(), expected, atol=1e-9)
    assert float(domain.hull_distance(points[:1], torch.tensor([47]))[0]) == float("inf")


def test_hull_of_the_training_distribution_holds_fresh_samples_and_not_shifted_ones():
    """20000 training atoms, 8 features, hull in 4 principal components: a fresh atom of the
    same distribution lies outside with probability E[vertices]/(n + 1) (exchangeability),
    here under 1 %; samples shifted by 4 standard deviations of every feature all lie
    outside. With the hull's margin as a third test, in_domain keeps its confidence."""
    train = _gaussian(20000)
    domain = fit_domain_statistics(train, np.full(len(train), 29), [29], confidence=0.99)
    assert domain.has_hull and domain.hull_basis.shape == (1, 8, 4)
    fresh = torch.as_tensor(_gaussian(12000, seed=7))
    numbers = torch.full((12000,), 29)
    outside = float((domain.hull_distance(fresh, numbers) > 0).double().mean())
    n_vertices = len(domain.hull_vertices[0])
    assert outside < 0.015 and outside == pytest.approx(n_vertices / 20001, abs=0.004)
    shifted = torch.as_tensor(_gaussian(2000, seed=2, shift=4.0))
    assert bool((domain.hull_distance(shifted, numbers[:2000]) > 0).all())
    graph = {
        "numbers": numbers,
        "batch": torch.arange(400).repeat_interleave(30),
        "n_atoms": torch.full((400,), 30),
    }
    scores = domain.score(fresh, graph)
    assert scores[outputs.HULL_DISTANCE].shape == (12000,)
    assert float(scores[outputs.IN_DOMAIN].double().mean()) >= 0.97  # binomial std 0.005


def test_statistics_without_a_hull_load_and_score_with_two_tests():
    """Statistics stored before the hull existed (no hull keys) load, score without
    hull_distance, and flag exactly as statistics fitted without a hull."""
    train = _gaussian(3000, n_features=5)
    with_hull = fit_domain_statistics(train, np.full(3000, 29), [29], seed=2)
    stored = {k: v for k, v in with_hull.to_dict().items() if not k.startswith("hull_")}
    stored["method"] = "mahalanobis+dmin"
    old = DomainStatistics.from_dict(stored)
    without = fit_domain_statistics(train, np.full(3000, 29), [29], hull_dims=0, seed=2)
    assert not old.has_hull and not without.has_hull and "hull_basis" not in without.to_dict()
    features = torch.as_tensor(_gaussian(300, n_features=5, seed=3, shift=1.5))
    graph = {
        "numbers": torch.full((300,), 29),
        "batch": torch.arange(30).repeat_interleave(10),
        "n_atoms": torch.full((30,), 10),
    }
    scores = old.score(features, graph)
    assert outputs.HULL_DISTANCE not in scores
    torch.testing.assert_close(
        scores[outputs.IN_DOMAIN], without.score(features, graph)[outputs.IN_DOMAIN]
    )


def test_too_few_atoms_for_a_hull_leave_the_hull_untested():
    train = _gaussian(8, n_features=5)
    domain = fit_domain_statistics(train, np.full(8, 29), [29])
    assert domain.has_hull and len(domain.hull_vertices[0]) == 0
    distance = domain.hull_distance(torch.as_tensor(train[:2]), torch.full((2,), 29))
    assert bool(torch.isnan(distance).all())


def test_heavy_tailed_features_of_the_training_distribution_are_in_domain():
    """Learned features are not Gaussian: for multivariate Student-t features (3 degrees of
    freedom) the chi-square limit flags most structures of the training distribution, the
    limit from the reference atoms' own T² keeps false alarms near 1 - confidence, and
    structures far away are still flagged."""
    from scipy import special

    n_features, n_atoms, n_structures = 8, 9, 400

    def student(n, seed, shift=0.0):
        rng = np.random.default_rng(seed)
        gauss = _gaussian(n, n_features=n_features, seed=seed)
        scale = np.sqrt(3.0 / rng.chisquare(3.0, size=(n, 1)))
        return gauss * scale + shift

    train = student(20000, seed=1)
    domain = fit_domain_statistics(train, np.full(len(train), 6), [6], confidence=0.99)
    fresh = torch.as_tensor(student(n_atoms * n_structures, seed=2))
    graph = {
        "numbers": torch.full((len(fresh),), 6),
        "batch": torch.arange(n_structures).repeat_interleave(n_atoms),
        "n_atoms": torch.full((n_structures,), n_atoms),
    }
    t2, _ = domain.score_atoms(fresh, graph["numbers"])
    level = 0.99 ** (1.0 / (3 * n_atoms))
    beyond_chi2 = (t2 > float(special.chdtri(n_features, 1.0 - level))).reshape(-1, n_atoms)
    assert float(beyond_chi2.any(1).double().mean()) > 0.1  # ten times the nominal 1 %
    assert float(domain.score(fresh, graph)[outputs.IN_DOMAIN].double().mean()) >= 0.97
    far = torch.as_tensor(student(n_atoms * n_structures, seed=3, shift=100.0))
    assert float(domain.score(far, graph)[outputs.IN_DOMAIN].double().mean()) < 0.05
