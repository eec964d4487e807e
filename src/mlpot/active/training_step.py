"""One retraining of the active-learning loop: committee, calibration, test errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import torch

from mlpot.active.config import LearnConfig
from mlpot.active.store import Labelled
from mlpot.data.graph import atoms_to_graph
from mlpot.models.checkpoint import load_model, update_checkpoint
from mlpot.physics import outputs
from mlpot.training import parse_config, run_training
from mlpot.uncertainty.calibration import Calibration, fit_student_t
from mlpot.uncertainty.ensemble import predict_with_uncertainty


@dataclass
class TrainedModel:
    path: Path
    metrics: dict


def _write(path: Path, frames: list[Labelled]) -> None:
    ase.io.write(path, [f.atoms for f in frames], format="extxyz")


def _errors(model, frames: list[Labelled], scale: float = 1.0) -> dict[str, np.ndarray]:
    """Per-component force errors, matching stds, and energy-per-atom errors."""
    force_err, force_std, energy_err = [], [], []
    for frame in frames:
        graph = atoms_to_graph(
            frame.atoms, model.cutoff, dtype=torch.float64, elements=model.elements
        )
        out = predict_with_uncertainty(model, graph, forces=True, scale=scale)
        reference = frame.atoms.calc.results
        force_err.append(out[outputs.FORCES].numpy() - reference["forces"])
        force_std.append(np.repeat(out[outputs.FORCES_STD].numpy()[:, None], 3, axis=1))
        energy_err.append((float(out[outputs.ENERGY][0]) - reference["energy"]) / len(frame.atoms))
    return {
        "force_err": np.concatenate(force_err).ravel(),
        "force_std": np.concatenate(force_std).ravel(),
        "energy_err": np.array(energy_err),
    }


def train_iteration(
    config: LearnConfig,
    labelled: list[Labelled],
    test: list[Labelled],
    directory: Path,
    *,
    seed: int,
) -> TrainedModel:
    """Train the committee on ``labelled``, calibrate it on its validation part, and
    measure it on the held-out ``test`` frames. Resumes a killed training."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labelled))
    n_val = max(1, round(config.train.validation_fraction * len(labelled)))
    validation = [labelled[k] for k in order[:n_val]]
    training = [labelled[k] for k in order[n_val:]]
    _write(directory / "train.xyz", training)
    _write(directory / "validation.xyz", validation)
    train_config = parse_config(
        {
            "data": {
                "train": str(directory / "train.xyz"),
                "validation": str(directory / "validation.xyz"),
            },
            "model": config.train.model,
            "training": {"progress": False, "seed": seed, **config.train.training},
            "loss": config.train.loss,
            "ensemble": {"size": config.train.ensemble_size, "bootstrap": True},
            "output": str(directory / "committee"),
        }
    )
    started = (directory / "committee").exists()
    result = run_training(train_config, resume=started)
    model = load_model(result.model_path)
    val = _errors(model, validation)
    scale, dof = fit_student_t(val["force_err"], val["force_std"], what="forces")
    calibration = Calibration(forces=scale, forces_dof=dof)
    path = directory / "model.pt"  # the committee with its force calibration and domain
    update_checkpoint(result.model_path, path, calibration=calibration.to_dict())
    tst = _errors(model, test, scale=scale)
    metrics = {
        "n_train": len(training),
        "n_validation": len(validation),
        "test_force_rmse": float(np.sqrt(np.mean(tst["force_err"] ** 2))),
        "test_energy_rmse": float(np.sqrt(np.mean(tst["energy_err"] ** 2))),
        "test_mean_force_std": float(np.mean(tst["force_std"])),
        "calibration_scale": scale,  # predictive std / raw committee std (forces)
        "calibration_dof": calibration.to_dict()["forces_dof"],  # Student-t ν, None: Gaussian
    }
    return TrainedModel(path, metrics)
