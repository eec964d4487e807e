"""Training the ``mpnn`` model through the ordinary config path, in float32, with stress."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlpot.calculators import load_calculator
from mlpot.data.dataset import read_dataset
from mlpot.training.config import parse_config
from mlpot.training.run import run_training


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster, and immune to a busy machine's contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_mpnn_trains_on_emt_copper_in_float32(emt_copper_xyz, tmp_path, one_thread):
    """``model: {name: mpnn}`` trains (float32, energy + forces + stress), is saved in the
    usual checkpoint, and its calculator reproduces the trained model's predictions."""
    config = parse_config(
        {
            "data": {"train": emt_copper_xyz, "validation_fraction": 0.15, "test_fraction": 0.15},
            "model": {"name": "mpnn", "cutoff": 4.5, "channels": 32},
            # stress in eV/Å³ is ~0.04 here: weight it so that it counts next to the forces
            "loss": {"stress": 100.0},
            "training": {
                "epochs": 20,
                "batch_size": 4,
                "learning_rate": 0.003,
                "ema_decay": 0.9,  # 11 steps per epoch: a short average
                "dtype": "float32",
                "progress": False,
            },
            "output": str(tmp_path / "run"),
        }
    )
    result = run_training(config)
    assert result.train.model.terms[1].name == "mpnn"
    history = result.train.history
    samples = read_dataset(emt_copper_xyz)
    label_force_rms = np.sqrt(np.mean(np.concatenate([s.forces for s in samples]) ** 2))
    label_stress_rms = np.sqrt(np.mean(np.stack([s.stress for s in samples]) ** 2))
    first = history[0]["validation"]["forces"]["rmse"]
    force_rmse = result.test_metrics["forces"]["rmse"]
    stress_rmse = result.test_metrics["stress"]["rmse"]
    print(
        f"mpnn, EMT Cu: force RMSE {first * 1e3:.1f} meV/Å after 1 epoch (validation), "
        f"{force_rmse * 1e3:.1f} after 20 (test); labels {label_force_rms * 1e3:.0f}; stress "
        f"RMSE {stress_rmse * 1e3:.2f} meV/Å³, labels {label_stress_rms * 1e3:.1f}"
    )
    assert force_rmse < 0.15 * first and force_rmse < 0.1 * label_force_rms
    assert stress_rmse < 0.2 * label_stress_rms

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=3)
    calc = load_calculator(result.model_path, dtype=torch.float32)
    atoms.calc = calc
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert np.all(np.isfinite(forces)) and np.abs(forces.sum(0)).max() < 1e-4
    reference = load_calculator(result.model_path, dtype=torch.float64)
    atoms.calc = reference
    assert abs(atoms.get_potential_energy() - energy) < 1e-4 * len(atoms)
    np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-4)
    np.testing.assert_allclose(atoms.get_stress(), stress, atol=1e-5)
