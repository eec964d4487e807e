"""Calibration: maximum-likelihood scale, scores, ``mlpot calibrate`` and ``eval --uncertainty``."""

import json
import shutil

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from scipy import stats
from typer.testing import CliRunner
from uncertainty_models import committee_path, data_files, one_thread, shallow_path

from mlpot.calculators import load_calculator
from mlpot.cli.main import app
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_checkpoint, save_model
from mlpot.models.registry import build_model
from mlpot.uncertainty.calibration import (
    AREA_LEVELS,
    Calibration,
    fit_scale,
    gaussian_nll,
    score,
)

pytestmark = pytest.mark.usefixtures("one_thread")
assert one_thread  # the fixture is used through pytestmark


def _synthetic(scale: float, n: int = 20000, seed: int = 0):
    """Predicted stds spread over two decades; errors Gaussian with std ``scale · σ``."""
    rng = np.random.default_rng(seed)
    stds = np.exp(rng.normal(-2.0, 1.0, n))
    return scale * stds * rng.normal(size=n), stds


def test_scale_recovered_from_synthetic_gaussian_errors():
    errors, stds = _synthetic(2.5)
    scale = fit_scale(errors, stds)
    assert scale == pytest.approx(2.5, rel=0.02)  # estimator's relative std is 1/sqrt(2n)
    before, after = score(errors, stds), score(errors, stds, scale=scale)
    assert before.ece > 0.2 and after.ece < 0.01
    assert after.miscalibration_area < 0.01
    assert after.nll < before.nll
    expected_nll = np.mean(0.5 * np.log(2 * np.pi * (2.5 * stds) ** 2)) + 0.5
    assert after.nll == pytest.approx(expected_nll, abs=0.02)
    assert after.spearman > 0.3  # larger predicted std, larger errors
    shuffled = score(errors, np.random.default_rng(1).permutation(stds), scale=scale)
    assert abs(shuffled.spearman) < 0.03


def test_miscalibration_area_of_an_overconfident_model():
    """Errors twice the predicted std: observed coverage 2Φ(q_p/2) - 1 for quantile q_p."""
    errors, stds = _synthetic(2.0, n=40000, seed=2)
    quantiles = stats.norm.ppf(0.5 + 0.5 * AREA_LEVELS)
    observed = 2 * stats.norm.cdf(quantiles / 2) - 1
    grid = np.abs(observed - AREA_LEVELS)
    expected = float(np.sum(0.5 * (grid[1:] + grid[:-1]) * np.diff(AREA_LEVELS)))
    assert score(errors, stds).miscalibration_area == pytest.approx(expected, abs=0.005)
    assert expected > 0.15


def test_gaussian_nll_is_minimal_at_the_fitted_scale():
    errors, stds = _synthetic(0.7, n=5000, seed=3)
    best = fit_scale(errors, stds)
    nll = [gaussian_nll(errors, s * stds) for s in (0.8 * best, best, 1.25 * best)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_zero_spread_cannot_be_calibrated():
    with pytest.raises(MlpotInputError, match="identical members"):
        fit_scale(np.ones(4), np.zeros(4), what="forces")
    assert Calibration.from_dict(None) == Calibration()
    assert Calibration.from_dict(Calibration(2.0, 3.0, 4.0).to_dict()) == Calibration(2.0, 3.0, 4.0)
    # a field with only a force scale (as active learning writes it) scales only forces
    assert Calibration.from_dict({"forces_scale": 1.7}) == Calibration(forces=1.7)


@pytest.mark.parametrize("path", [committee_path, shallow_path], ids=["committee", "shallow"])
def test_calibrate_command_stores_scales_and_draws_diagram(path, tmp_path):
    model = tmp_path / "model.pt"
    shutil.copy(path(), model)
    calibrated, png = tmp_path / "calibrated.pt", tmp_path / "reliability.png"
    runner = CliRunner()
    args = ["calibrate", str(model), data_files()["calibration"], "-o", str(calibrated)]
    result = runner.invoke(app, [*args, "--plot", str(png), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert load_checkpoint(model)["calibration"] is None  # written to --output only
    stored = Calibration.from_dict(load_checkpoint(calibrated)["calibration"])
    assert stored.forces == pytest.approx(report["calibration"]["forces_scale"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the fitted scale minimises the NLL on the calibration data
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
