"""Delta-learning: a correction learned on top of a real baseline (LJ under EMT copper)."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.lj import LennardJones
from ase.stress import voigt_6_to_full_3x3_stress
from conftest import emt_copper_frames

from mlpot.calculators import MlpotCalculator, load_calculator
from mlpot.data.dataset import read_dataset
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_checkpoint, load_model, save_model
from mlpot.models.registry import build_model
from mlpot.training import delta
from mlpot.training.config import parse_config
from mlpot.training.evaluation import evaluate_files
from mlpot.training.run import run_training

LJ = {"name": "lj", "params": {"sigma": 2.33, "epsilon": 0.4, "rc": 4.0, "smooth": True}}


def _lj():
    return LennardJones(**LJ["params"])


def _copper(seed=1):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=seed)
    atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)
    return atoms


def _correction():
    torch.manual_seed(0)
    spec = {"name": "bpnn", "elements": [29], "cutoff": 4.0, "radial_count": 6, "hidden": [8]}
    return build_model(spec).double()


def test_calculator_adds_the_baseline_energy_forces_stress():
    model = _correction()
    atoms = _copper()
    atoms.calc = MlpotCalculator(model, baseline=LJ)
    alone, base = _copper(), _copper()
    alone.calc, base.calc = MlpotCalculator(model), _lj()
    assert atoms.get_potential_energy() == pytest.approx(
        alone.get_potential_energy() + base.get_potential_energy(), abs=1e-10
    )
    np.testing.assert_allclose(
        atoms.get_forces(), alone.get_forces() + base.get_forces(), atol=1e-10
    )
    np.testing.assert_allclose(
        atoms.get_stress(), alone.get_stress() + base.get_stress(), atol=1e-12
    )
    np.testing.assert_allclose(
        atoms.get_potential_energies(),
        alone.get_potential_energies() + base.get_potential_energies(),
        atol=1e-10,
    )
    # the sum is still one conservative surface: forces and stress against finite differences
    np.testing.assert_allclose(
        atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-4), atol=1e-6
    )
    np.testing.assert_allclose(
        atoms.get_stress(),
        calculate_numerical_stress(atoms, eps=1e-5, force_consistent=False),
        atol=1e-7,
    )


def test_baseline_without_stress_is_not_offered():
    from ase.calculators.calculator import Calculator

    class EnergyForcesOnly(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=None, system_changes=None):
            super().calculate(atoms, properties, system_changes)
            lj = _lj()
            self.results = {
                "energy": lj.get_potential_energy(self.atoms),
                "forces": lj.get_forces(self.atoms),
            }

    calc = MlpotCalculator(_correction(), baseline=EnergyForcesOnly())
    assert "stress" not in calc.implemented_properties
    atoms = _copper()
    atoms.calc = calc
    atoms.get_forces()
    assert "stress" not in calc.results


def test_targets_are_label_minus_baseline_and_cached(tmp_path, monkeypatch):
    frames = emt_copper_frames(6, seed=4)
    path = tmp_path / "cu.xyz"
    ase.io.write(path, frames)
    samples = read_dataset(str(path))
    cache = tmp_path / "cache.pt"
    targets = delta.delta_targets(samples, LJ, cache=cache, progress=False)
    for sample, target in zip(samples, targets, strict=True):
        atoms = sample.atoms.copy()
        atoms.calc = _lj()
        assert target.energy == pytest.approx(
            sample.energy - atoms.get_potential_energy(), abs=1e-10
        )
        np.testing.assert_allclose(target.forces, sample.forces - atoms.get_forces(), atol=1e-10)
        expected = sample.stress - voigt_6_to_full_3x3_stress(atoms.get_stress())
        np.testing.assert_allclose(target.stress, expected, atol=1e-12)
    assert cache.exists()

    def no_oracle(*args, **kwargs):
        raise AssertionError("baseline recomputed although cached")

    monkeypatch.setattr(delta, "make_oracle", no_oracle)
    again = delta.delta_targets(samples, LJ, cache=cache, progress=False)
    assert [s.energy for s in again] == [s.energy for s in targets]


def test_bad_baseline_is_a_clear_error():
    base = {"data": {"train": "x.xyz"}}
    with pytest.raises(MlpotInputError, match="unknown oracle 'nope'"):
        parse_config({**base, "baseline": {"name": "nope"}})
    # a module:factory name is checked but never imported while the config is parsed
    # (whether it may run is decided by run_training's trust_code)
    config = parse_config({**base, "baseline": {"name": "no_such_module:factory"}})
    assert config.baseline.name == "no_such_module:factory"
    with pytest.raises(MlpotInputError, match="neither a built-in oracle"):
        parse_config({**base, "baseline": {"name": "no such module:factory"}})
    with pytest.raises(MlpotInputError, match="baseline.cachee"):
        parse_config({**base, "baseline": {"name": "lj", "cachee": "x.pt"}})


def test_checkpoint_round_trip_keeps_baseline_and_old_fixture_loads(tmp_path):
    model = _correction()
    path = tmp_path / "m.pt"
    save_model(path, model, baseline=LJ)
    payload = load_checkpoint(path)
    assert payload["baseline"] == LJ and payload["fisher"] is None
    old = load_checkpoint(Path(__file__).parent / "fixtures" / "checkpoint_v1.pt")
    assert old["baseline"] is None and old["fisher"] is None
    atoms, reference = _copper(), _copper()
    atoms.calc = load_calculator(path)
    reference.calc = MlpotCalculator(model, baseline=_lj())
    assert atoms.get_potential_energy() == pytest.approx(
        reference.get_potential_energy(), abs=1e-10
    )


def test_delta_training_end_to_end(tmp_path):
    data = tmp_path / "cu.xyz"
    ase.io.write(data, emt_copper_frames(20, seed=2))
    config = parse_config(
        {
            "data": {"train": str(data), "validation_fraction": 0.25},
            "model": {"name": "bpnn", "cutoff": 4.0, "radial_count": 6, "hidden": [8]},
            "training": {"epochs": 3, "batch_size": 5, "progress": False},
            "baseline": LJ,
            "fisher": {"structures": 0},
            "output": str(tmp_path / "run"),
        }
    )
    result = run_training(config)
    payload = load_checkpoint(result.model_path)
    assert payload["baseline"] == LJ
    assert (tmp_path / "run" / delta.CACHE_FILE).exists()
    # the calculator of the checkpoint is the correction plus LJ
    correction = load_model(result.model_path)
    frames = ase.io.read(data, index=":")
    errors = []
    for frame in frames:
        atoms, alone, base = frame.copy(), frame.copy(), frame.copy()
        atoms.calc = load_calculator(result.model_path)
        alone.calc, base.calc = MlpotCalculator(correction), _lj()
        np.testing.assert_allclose(
            atoms.get_forces(), alone.get_forces() + base.get_forces(), atol=1e-10
        )
        errors.append(atoms.get_forces() - frame.get_forces())
    # mlpot eval compares baseline + correction with the labels
    report = evaluate_files(result.model_path, [str(data)])[str(data)]
    rmse = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    assert report["forces"]["rmse"] == pytest.approx(rmse, rel=1e-8)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["baseline"] == LJ
