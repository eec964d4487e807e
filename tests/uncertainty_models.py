"""Small trained ensembles shared by the uncertainty tests, each trained once per session.

Data: EMT copper cells (bulk, vacancy, rattled, strained; see ``conftest.emt_copper_frames``)
for training, an independent set of the same kind for calibration, and "off-data" cells
compressed, stretched and rattled far beyond anything in training.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import emt_copper_frames

from mlpot.training.config import parse_config
from mlpot.training.run import run_training

CUTOFF = 4.0


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: on a busy two-core machine, two threads make the
    many small tensor operations of these tiny models orders of magnitude slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="mlpot-uncertainty-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def data_files() -> dict[str, str]:
    """Paths of the training, calibration and off-data extxyz files."""
    files = {
        "train": emt_copper_frames(36, seed=0),
        "calibration": emt_copper_frames(24, seed=7),
        "off": off_data_frames(8),
    }
    paths = {}
    for name, frames in files.items():
        paths[name] = str(workdir() / f"{name}.xyz")
        ase.io.write(paths[name], frames)
    return paths


def off_data_frames(n_frames: int, *, seed: int = 3) -> list:
    """Cu cells strained by ±8 % and rattled by 0.2 Å, labelled by EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.61 * (0.92 if k % 2 else 1.08), cubic=True) * (2, 2, 2)
        atoms.rattle(0.2, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        labels = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


def _train(name: str, model: dict, ensemble: dict, epochs: int) -> Path:
    return _train_model(name, {"hidden": [16], **model}, ensemble, epochs)


def _train_model(name: str, model: dict, ensemble: dict, epochs: int) -> Path:
    config = parse_config(
        {
            "data": {"train": data_files()["train"], "validation_fraction": 0.2},
            "model": {"cutoff": CUTOFF, **model},
            # these short trainings were designed with stress weighted like one force
            # component; the (larger) default would make them a different model
            "loss": {"stress": 1.0},
            "training": {
                "epochs": epochs,
                "batch_size": 4,
                "learning_rate": 0.01,
                "ema_decay": 0.8,
                "progress": False,
            },
            "ensemble": ensemble,
            "output": str(workdir() / name),
        }
    )
    return run_training(config).model_path


@functools.cache
def committee_path() -> Path:
    """A committee of three BPNNs (bootstrap resamples, own seeds), with domain statistics."""
    return _train("committee", {"name": "bpnn"}, {"size": 3, "bootstrap": True}, epochs=12)


@functools.cache
def shallow_path() -> Path:
    """A shallow ensemble (BPNN body, six heads), with domain statistics."""
    return _train("shallow", {"name": "bpnn_shallow", "heads": 6}, {}, epochs=15)


@functools.cache
def mpnn_committee_path() -> Path:
    """A committee of two small mpnns, with domain statistics of their last layer."""
    model = {"name": "mpnn", "channels": 8, "layers": 2, "radial_hidden": 8, "readout_hidden": 8}
    return _train_model("mpnn_committee", model, {"size": 2, "bootstrap": True}, epochs=10)


SMALL_MPNN = {"channels": 8, "layers": 2, "radial_hidden": 8, "readout_hidden": 8}


@functools.cache
def mpnn_shallow_path() -> Path:
    """A shallow mpnn (small body, four heads on its last layer), with domain statistics."""
    model = {"name": "mpnn_shallow", **SMALL_MPNN, "heads": 4}
    return _train_model("mpnn_shallow", model, {}, epochs=10)


@functools.cache
def mpnn_path() -> Path:
    """One small mpnn (for the last-layer prediction rigidity), with domain statistics."""
    return _train_model("mpnn", {"name": "mpnn", **SMALL_MPNN}, {}, epochs=10)
