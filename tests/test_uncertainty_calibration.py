"""Calibration: maximum-likelihood Student-t predictive, scores, ``mlpot calibrate`` and
``eval --uncertainty``."""

import json
import shutil

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from scipy import optimize, stats
from typer.testing import CliRunner
from uncertainty_models import committee_path, data_files, one_thread, shallow_path

from mlpot.calculators import load_calculator
from mlpot.cli.main import app
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_checkpoint, save_model
from mlpot.models.registry import build_model
from mlpot.uncertainty.calibration import (
    AREA_LEVELS,
    ECE_LEVELS,
    MIN_DOF,
    Calibration,
    fit_student_t,
    gaussian_scale,
    observed_coverage,
    predictive_nll,
    score,
)

pytestmark = pytest.mark.usefixtures("one_thread")
assert one_thread  # the fixture is used through pytestmark


def _stds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Predicted stds spread over two decades."""
    return np.exp(rng.normal(-2.0, 1.0, n))


def _synthetic(scale: float, n: int = 20000, seed: int = 0):
    """Errors Gaussian with std ``scale · σ``."""
    rng = np.random.default_rng(seed)
    stds = _stds(rng, n)
    return scale * stds * rng.normal(size=n), stds


def _synthetic_t(scale: float, dof: float, n: int = 20000, seed: int = 0):
    """Errors ``scale · σ · T_ν``, ``T_ν`` Student-t rescaled to unit variance, so the
    errors' std is ``scale · σ``."""
    rng = np.random.default_rng(seed)
    stds = _stds(rng, n)
    unit = rng.standard_t(dof, size=n) * np.sqrt((dof - 2) / dof)
    return scale * stds * unit, stds


def test_gaussian_errors_give_the_gaussian_scale_and_infinite_dof():
    errors, stds = _synthetic(2.5)
    scale, dof = fit_student_t(errors, stds)
    assert scale == pytest.approx(2.5, rel=0.02)  # estimator's relative std is 1/sqrt(2n)
    assert dof == np.inf or dof >= 100
    if dof == np.inf:  # the Gaussian closed form
        assert scale == pytest.approx(gaussian_scale(errors, stds), rel=1e-12)
    before, after = score(errors, stds), score(errors, stds, scale=scale, dof=dof)
    assert before.ece > 0.2 and after.ece < 0.01
    assert after.miscalibration_area < 0.01
    assert after.nll < before.nll
    expected_nll = np.mean(0.5 * np.log(2 * np.pi * (2.5 * stds) ** 2)) + 0.5
    assert after.nll == pytest.approx(expected_nll, abs=0.02)
    assert after.spearman > 0.3  # larger predicted std, larger errors
    assert after.rms_std == pytest.approx(scale * np.sqrt(np.mean(stds**2)))
    shuffled = score(errors, np.random.default_rng(1).permutation(stds), scale=scale, dof=dof)
    assert abs(shuffled.spearman) < 0.03


def test_student_t_errors_recover_scale_and_dof():
    errors, stds = _synthetic_t(1.7, 5.0)
    scale, dof = fit_student_t(errors, stds)
    assert dof == pytest.approx(5.0, abs=1.0)
    assert scale == pytest.approx(1.7, rel=0.03)
    fitted = score(errors, stds, scale=scale, dof=dof)
    gaussian = score(errors, stds, scale=scale)  # same std, Gaussian shape
    assert fitted.ece < 0.01 and fitted.miscalibration_area < 0.01
    assert gaussian.ece > 0.02
    # the Gaussian over-covers the centre: too many small errors for its std
    centre = observed_coverage(errors / (scale * stds), ECE_LEVELS[:5])
    assert np.all(centre > ECE_LEVELS[:5])
    # the t describes the errors better than the best Gaussian
    best_gaussian = predictive_nll(errors, gaussian_scale(errors, stds) * stds)
    assert fitted.nll < best_gaussian - 0.02


def test_nll_is_minimal_at_the_fitted_scale_and_dof():
    errors, stds = _synthetic_t(0.7, 4.0, n=5000, seed=3)
    scale, dof = fit_student_t(errors, stds)
    assert np.isfinite(dof)
    best = predictive_nll(errors, scale * stds, dof)
    for s, nu in [
        (0.97 * scale, dof),
        (1.03 * scale, dof),
        (scale, 2 + 0.9 * (dof - 2)),
        (scale, 2 + 1.1 * (dof - 2)),
        (scale, np.inf),
    ]:
        assert predictive_nll(errors, s * stds, nu) > best
    # Gaussian errors: the fitted (Gaussian) scale minimises the Gaussian NLL
    errors, stds = _synthetic(0.7, n=5000, seed=3)
    scale, dof = fit_student_t(errors, stds)
    nll = [predictive_nll(errors, s * stds, dof) for s in (0.8 * scale, scale, 1.25 * scale)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_tails_too_heavy_for_a_variance_stop_at_the_smallest_dof():
    """Errors with ν = 1.5 (infinite variance): the likelihood would push ν to 2 and the std
    scale to infinity; the fit stops at MIN_DOF with the best scale there."""
    rng = np.random.default_rng(6)
    stds = _stds(rng, 5000)
    errors = 0.5 * stds * rng.standard_t(1.5, size=5000)
    scale, dof = fit_student_t(errors, stds)
    assert dof == MIN_DOF
    profile = optimize.minimize_scalar(
        lambda log_s: predictive_nll(errors, np.exp(log_s) * stds, MIN_DOF),
        bounds=(-5.0, 5.0),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert scale == pytest.approx(np.exp(profile.x), rel=1e-4)
    assert score(errors, stds, scale=scale, dof=dof).ece < 0.05


def test_predictive_density_and_intervals_are_the_unit_variance_t():
    """Against scipy's t with scale ``σ sqrt((ν-2)/ν)``, and the Gaussian limit."""
    errors, stds = _synthetic_t(1.0, 6.0, n=2000, seed=4)
    for dof in (2.5, 6.0, 40.0):
        t_scale = stds * np.sqrt((dof - 2) / dof)
        reference = -np.mean(stats.t.logpdf(errors, dof, scale=t_scale))
        assert predictive_nll(errors, stds, dof) == pytest.approx(reference, rel=1e-10)
    gaussian = -np.mean(stats.norm.logpdf(errors, scale=stds))
    assert predictive_nll(errors, stds) == pytest.approx(gaussian, rel=1e-10)
    assert predictive_nll(errors, stds, 1e8) == pytest.approx(gaussian, abs=1e-6)
    # exact t samples cover their own central intervals
    rng = np.random.default_rng(5)
    unit = rng.standard_t(3.0, size=100000) * np.sqrt(1 / 3)
    coverage = observed_coverage(unit, ECE_LEVELS, 3.0)
    np.testing.assert_allclose(coverage, ECE_LEVELS, atol=0.005)
    assert np.std(unit) == pytest.approx(1.0, rel=0.05)


def test_miscalibration_area_of_an_overconfident_model():
    """Errors twice the predicted std: observed coverage 2Φ(q_p/2) - 1 for quantile q_p."""
    errors, stds = _synthetic(2.0, n=40000, seed=2)
    quantiles = stats.norm.ppf(0.5 + 0.5 * AREA_LEVELS)
    observed = 2 * stats.norm.cdf(quantiles / 2) - 1
    grid = np.abs(observed - AREA_LEVELS)
    expected = float(np.sum(0.5 * (grid[1:] + grid[:-1]) * np.diff(AREA_LEVELS)))
    assert score(errors, stds).miscalibration_area == pytest.approx(expected, abs=0.005)
    assert expected > 0.15


def test_zero_spread_cannot_be_calibrated():
    with pytest.raises(MlpotInputError, match="Identical members"):
        fit_student_t(np.ones(4), np.zeros(4), what="forces")
    with pytest.raises(MlpotInputError, match="no labelled forces"):
        fit_student_t(np.full(4, np.nan), np.ones(4), what="forces")
    with pytest.raises(ValueError, match="differ in shape"):
        fit_student_t(np.ones(4), np.ones(5), what="forces")


def test_calibration_dict_round_trip():
    assert Calibration.from_dict(None) == Calibration()
    assert Calibration().forces_dof == np.inf
    calibration = Calibration(2.0, 3.0, 4.0, forces_dof=4.5)
    data = calibration.to_dict()
    assert data["forces_dof"] == 4.5 and data["energy_dof"] is None  # None: Gaussian
    assert "Student-t" in data["method"]
    assert Calibration.from_dict(data) == calibration
    assert Calibration.from_dict(json.loads(json.dumps(data))) == calibration
    # a field with only a force scale (as active learning wrote it) scales only forces,
    # and a field without degrees of freedom (written before the Student-t) is Gaussian
    assert Calibration.from_dict({"forces_scale": 1.7}) == Calibration(forces=1.7)
    old = {"method": "maximum likelihood (Gaussian)", "energy_scale": 2.0, "forces_scale": 3.0}
    assert Calibration.from_dict(old) == Calibration(energy=2.0, forces=3.0)
    with pytest.raises(MlpotInputError, match="calibration.forces_dof"):
        Calibration.from_dict({"forces_scale": 1.7, "forces_dof": 1.5})
    scores = score(*_synthetic(1.0, n=100), dof=4.5).to_dict()
    assert scores["dof"] == 4.5 and score(*_synthetic(1.0, n=100)).to_dict()["dof"] is None


@pytest.mark.parametrize("path", [committee_path, shallow_path], ids=["committee", "shallow"])
def test_calibrate_command_stores_scales_and_draws_diagram(path, tmp_path):
    model = tmp_path / "model.pt"
    shutil.copy(path(), model)
    calibrated, png = tmp_path / "calibrated.pt", tmp_path / "reliability.png"
    runner = CliRunner()
    args = ["calibrate", str(model), data_files()["calibration"], "--output-model", str(calibrated)]
    result = runner.invoke(app, [*args, "--output-plot", str(png), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert load_checkpoint(model)["calibration"] is None  # written to --output-model only
    stored = Calibration.from_dict(load_checkpoint(calibrated)["calibration"])
    assert stored.forces == pytest.approx(report["calibration"]["forces_scale"])
    assert stored == Calibration.from_dict(report["calibration"])  # dof included
    assert report["after"]["forces"]["scale"] == pytest.approx(stored.forces)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the fitted predictive (scale, dof) minimises the NLL on the calibration data
    for quantity in ("energy", "forces"):
        assert report["after"][quantity]["nll"] <= report["before"][quantity]["nll"] + 1e-12
    # the calculator applies the stored scales
    atoms = ase.io.read(data_files()["calibration"], index=0)
    atoms.calc = load_calculator(model)
    raw = atoms.calc.get_property("forces_std", atoms), atoms.calc.get_property("energy_std", atoms)
    atoms.calc = load_calculator(calibrated)
    scaled = atoms.calc.get_property("forces_std", atoms)
    np.testing.assert_allclose(scaled, stored.forces * raw[0], rtol=1e-10)
    energy_std = atoms.calc.get_property("energy_std", atoms)
    assert energy_std == pytest.approx(stored.energy * raw[1], rel=1e-10)


def test_eval_reports_uncertainty(tmp_path):
    data = [data_files()["calibration"], data_files()["off"]]
    result = CliRunner().invoke(app, ["eval", str(committee_path()), *data, "--uncertainty"])
    assert result.exit_code == 0, result.output
    assert "ECE" in result.output and "Spearman" in result.output and "in domain" in result.output
    result = CliRunner().invoke(
        app, ["eval", str(committee_path()), *data, "--uncertainty", "--json"]
    )
    report = json.loads(result.output)
    for path in data:
        scores = report[path]["uncertainty"]
        assert set(scores) >= {"energy", "forces", "stress", "domain"}
        assert set(scores["forces"]) >= {"ece", "miscalibration_area", "nll", "spearman"}
    domain = {path: report[path]["uncertainty"]["domain"] for path in data}
    assert domain[data[1]]["fraction_in_domain"] == 0.0
    assert domain[data[0]]["fraction_in_domain"] > 0.5


def test_calibration_set_without_labels_fails_clearly(tmp_path):
    unlabelled = tmp_path / "unlabelled.xyz"
    ase.io.write(unlabelled, [bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)] * 2)
    result = CliRunner().invoke(app, ["calibrate", str(committee_path()), str(unlabelled)])
    assert result.exit_code == 2
    assert "unlabelled.xyz, frame 0" in result.output and "energy" in result.output
    assert "Traceback" not in result.output


def test_single_model_cannot_be_calibrated(tmp_path):
    torch.manual_seed(0)
    single = tmp_path / "single.pt"
    save_model(single, build_model({"name": "bpnn", "elements": [29], "cutoff": 4.0}).double())
    result = CliRunner().invoke(app, ["calibrate", str(single), data_files()["calibration"]])
    assert result.exit_code == 2
    assert "no ensemble members" in result.output and "single.pt" in result.output


def test_few_errors_keep_the_gaussian():
    """24 errors (a few dozen structure energies) cannot tell a t with ν = 5 from a
    Gaussian: the likelihood-ratio test keeps the Gaussian and its closed-form scale."""
    errors, stds = _synthetic_t(1.3, 5.0, n=24, seed=0)
    scale, dof = fit_student_t(errors, stds)
    assert dof == np.inf
    assert scale == pytest.approx(gaussian_scale(errors, stds), rel=1e-12)
