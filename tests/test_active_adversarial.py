"""Adversarial exploration: an exact uncertainty bias, and MD that finds uncertainty."""

import math

import numpy as np
import pytest
from ase.build import bulk
from uncertainty_models import committee_path, one_thread  # noqa: F401

from mlpot.active import parse_learn_config
from mlpot.active.adversarial import (
    BIAS_ENERGY,
    BIAS_FORCES,
    ENERGY_VARIANCE,
    AdversarialCalculator,
    adversarial_calculator,
)
from mlpot.active.exploration import ExploreOptions, Thresholds, run_trajectory
from mlpot.calculators import load_calculator
from mlpot.errors import MlpotInputError
from mlpot.models.lennard_jones import LennardJones


def _vacancy(rattle=0.05, seed=3):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    del atoms[0]
    atoms.rattle(rattle, seed=seed)
    return atoms


def _width(path) -> float:
    """``σ_E / sqrt(N)`` of the committee at the unrattled vacancy cell, eV/atom."""
    atoms = _vacancy(rattle=0.0)
    atoms.calc = adversarial_calculator(path, strength=1.0, width=1.0)
    atoms.get_potential_energy()
    return math.sqrt(atoms.calc.results[ENERGY_VARIANCE] / len(atoms))


@pytest.mark.parametrize("form", ["gaussian", "quadratic"])
def test_bias_forces_and_stress_are_its_exact_gradients(form, one_thread):  # noqa: F811
    path = committee_path()
    calc = adversarial_calculator(path, strength=0.7, width=1.5 * _width(path), form=form)
    atoms = _vacancy()
    atoms.calc = calc
    forces = atoms.get_forces().copy()
    bias_forces = calc.results[BIAS_FORCES].copy()
    assert np.abs(bias_forces).max() > 1e-3  # a bias that is not negligible

    def bias_energy(positions=None, cell=None):
        probe = atoms.copy()
        if cell is not None:
            probe.set_cell(cell, scale_atoms=True)
        if positions is not None:
            probe.positions = positions
        probe.calc = calc
        probe.get_potential_energy()
        return calc.results[BIAS_ENERGY], calc.results["energy"]

    h = 1e-4
    for i, c in [(0, 0), (5, 1), (17, 2), (30, 0)]:
        plus, minus = atoms.positions.copy(), atoms.positions.copy()
        plus[i, c] += h
        minus[i, c] -= h
        (bp, ep), (bm, em) = bias_energy(plus), bias_energy(minus)
        assert bias_forces[i, c] == pytest.approx(-(bp - bm) / (2 * h), abs=1e-6)
        assert forces[i, c] == pytest.approx(-(ep - em) / (2 * h), abs=1e-6)  # biased total

    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)  # biased total, eV/Å³
    volume = atoms.get_volume()
    h = 1e-5  # the bias is strongly curved in strain: a smaller step
    for a, b in [(0, 0), (1, 2)]:
        strain = np.zeros((3, 3))
        strain[a, b] = strain[b, a] = h / 2 if a != b else h
        _, ep = bias_energy(cell=atoms.cell @ (np.eye(3) + strain))
        _, em = bias_energy(cell=atoms.cell @ (np.eye(3) - strain))
        # dE = V Σ σ_ij ε_ij = V σ_ab h for both a diagonal and a symmetric shear strain
        assert stress[a, b] == pytest.approx((ep - em) / (2 * h) / volume, rel=1e-5)


def test_bias_is_added_to_the_unbiased_model():
    path = committee_path()
    atoms = _vacancy()
    atoms.calc = load_calculator(path)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces().copy()
    std = atoms.calc.results["forces_std"].copy()
    calc = adversarial_calculator(path, strength=2.0, width=_width(path))
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(energy + calc.results[BIAS_ENERGY])
    assert -2.0 < calc.results[BIAS_ENERGY] < 0.0  # the gaussian bias lies in [-A, 0]
    np.testing.assert_allclose(atoms.get_forces(), forces + calc.results[BIAS_FORCES])
    np.testing.assert_allclose(calc.results["forces_std"], std)  # scores of the model itself
    assert "energies" not in calc.implemented_properties


def test_biased_md_reaches_higher_uncertainty_than_unbiased_md(one_thread):  # noqa: F811
    """Same start, seed, thermostat and model: the bias drives the trajectory to where the
    committee disagrees, in force std and in the domain score T² alike."""
    path = committee_path()
    options = ExploreOptions(temperatures=[600], steps=200, timestep_fs=2.0, check_interval=5)
    watch = Thresholds(force_std=10.0)  # never select, never stop: just watch the maxima
    start = _vacancy(rattle=0.0)
    plain = run_trajectory(start, load_calculator(path), 600, options, thresholds=watch, seed=1)
    biased_calc = adversarial_calculator(path, strength=3.0, width=_width(path))
    biased = run_trajectory(start, biased_calc, 600, options, thresholds=watch, seed=1)
    assert plain.steps == biased.steps == 200  # neither stopped
    assert biased.max_force_std > 1.3 * plain.max_force_std
    assert biased.max_t2 > plain.max_t2


def test_adversarial_needs_an_ensemble():
    with pytest.raises(MlpotInputError, match="ensemble"):
        AdversarialCalculator(LennardJones(elements=[29]), strength=1.0, width=0.01)
    with pytest.raises(MlpotInputError, match="positive"):
        adversarial_calculator(committee_path(), strength=-1.0, width=0.01)


def test_adversarial_config_is_validated():
    config = parse_learn_config(
        {"explore": {"mode": "adversarial", "bias_strength": 1.5, "bias_form": "quadratic"}}
    )
    assert config.explore.mode == "adversarial" and config.explore.bias_width is None
    for bad in (
        {"mode": "metadynamics"},
        {"bias_strength": 0.0},
        {"bias_width": -0.01},
        {"bias_form": "linear"},
        {"bias_strenght": 1.0},
    ):
        with pytest.raises(MlpotInputError, match="explore"):
            parse_learn_config({"explore": bad})
