"""The ASE calculator: one model evaluation per configuration, dtype and device options."""

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError

from mlpot.calculators import MlpotCalculator, load_calculator
from mlpot.models.checkpoint import save_model
from mlpot.models.registry import build_model


def _model():
    model = build_model({"name": "bpnn", "elements": [1, 6, 8, 29], "cutoff": 4.0, "hidden": [16]})
    return model.double()


def test_one_model_evaluation_per_configuration():
    model = _model()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=0)
    atoms.calc = MlpotCalculator(model)
    atoms.get_forces()
    atoms.get_potential_energy()
    atoms.get_stress()
    atoms.get_potential_energies()
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    assert len(calls) == 1
    atoms.positions[0] += 0.01
    atoms.get_potential_energy()
    atoms.get_forces()
    assert len(calls) == 2


def test_per_atom_energies_sum_to_energy():
    atoms = molecule("CH3OH")
    atoms.calc = MlpotCalculator(_model())
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy())


def test_float32_agrees_with_float64():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.1, seed=1)
    model = _model()
    results = {}
    for dtype in ("float32", "float64"):
        atoms.calc = MlpotCalculator(model, dtype=dtype)
        results[dtype] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    e32, f32, s32 = results["float32"]
    e64, f64, s64 = results["float64"]
    assert e32 == pytest.approx(e64, rel=1e-5)
    np.testing.assert_allclose(f32, f64, atol=1e-4 * np.abs(f64).max())
    np.testing.assert_allclose(s32, s64, atol=1e-4 * np.abs(s64).max())


def test_molecule_has_no_stress():
    atoms = molecule("H2O")
    atoms.calc = MlpotCalculator(_model())
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_load_calculator_from_checkpoint(tmp_path):
    model = _model()
    save_model(tmp_path / "m.pt", model)
    atoms = molecule("CH4")
    atoms.calc = MlpotCalculator(model)
    expected = atoms.get_forces()
    atoms.calc = load_calculator(tmp_path / "m.pt", dtype="float64", device="cpu")
    np.testing.assert_allclose(atoms.get_forces(), expected, atol=1e-12)


def test_position_independent_model_gives_zero_forces_and_stress():
    """A model of per-element constants: no neighbours, exact zero forces and stress."""
    model = build_model({"name": "offsets", "elements": [1, 29], "energies": [-13.6, -2.0]})
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.calc = MlpotCalculator(model)
    assert atoms.get_potential_energy() == pytest.approx(-8.0)
    assert not atoms.get_forces().any() and not atoms.get_stress().any()
