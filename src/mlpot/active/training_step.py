"""One retraining of the active-learning loop: committee, calibration, test errors."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpot.active.config import LearnConfig
from mlpot.active.store import Labelled
from mlpot.data.dataset import samples_from_atoms
from mlpot.models.checkpoint import load_model, update_checkpoint
from mlpot.training import parse_config, run_training
from mlpot.uncertainty.assess import Residuals, calibration_data, collect_residuals, labelled_graphs
from mlpot.uncertainty.calibration import fit_calibration


@dataclass
class TrainedModel:
    path: Path
    metrics: dict


def _residuals(model, frames: list[Labelled], source: str) -> Residuals:
    """Errors of ``model`` on labelled frames beside its raw (uncalibrated) stds."""
    samples = samples_from_atoms([f.atoms for f in frames], source=source)
    return collect_residuals(model, labelled_graphs(samples, model))


def _test_metrics(res: Residuals, forces_scale: float) -> dict[str, float]:
    """Force RMSE (eV/Å, over components), energy RMSE (eV/atom) and the mean calibrated
    per-atom force std (eV/Å) on the held-out test frames."""
    n_atoms = np.bincount(res.batch, minlength=len(res.energy_error))
    return {
        "test_force_rmse": float(np.sqrt(np.mean(res.force_error**2))),
        "test_energy_rmse": float(np.sqrt(np.mean((res.energy_error / n_atoms) ** 2))),
        "test_mean_force_std": float(np.mean(forces_scale * res.forces_std)),
    }


def _members(previous: Path | None, size: int) -> list | None:
    """The members of the committee at ``previous`` (None: none, or another size)."""
    if previous is None or not previous.exists():
        return None
    committee = load_model(previous)
    members = list(committee.member_models())
    return members if len(members) == size else None


def train_iteration(
    config: LearnConfig,
    labelled: list[Labelled],
    test: list[Labelled],
    directory: Path,
    *,
    seed: int,
    max_time_s: float | None = None,
    previous: Path | None = None,
) -> TrainedModel:
    """Train the committee on ``labelled`` (in memory), calibrate its force stds on its
    validation part, and measure it on the held-out ``test`` frames. Resumes a killed
    training (the same labels give the same split). ``max_time_s``: seconds the whole
    committee may take (each member gets its share, at most ``training.max_time_s``);
    ``train.workers`` members train at once, each in a process of its own. ``previous``:
    the committee of the iteration before, whose members each continue training
    (``train.warm_start``) instead of starting from scratch."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labelled))
    n_val = max(1, round(config.train.validation_fraction * len(labelled)))
    validation = [labelled[k] for k in order[:n_val]]
    training = [labelled[k] for k in order[n_val:]]
    size = config.train.ensemble_size
    workers = min(size, config.train.workers or os.cpu_count() or 1)
    options = {"progress": False, "seed": seed, **config.train.training}
    if max_time_s is not None:  # members train ``workers`` at a time
        share = max_time_s / math.ceil(size / workers)
        options["max_time_s"] = min(options.get("max_time_s") or share, share)
    train_config = parse_config(
        {
            "model": config.train.model,
            "training": options,
            "loss": config.train.loss,
            "ensemble": {"size": size, "bootstrap": True, "workers": workers},
            "output": str(directory / "committee"),
        }
    )
    started = (directory / "committee").exists()
    result = run_training(
        train_config,
        train=[f.atoms for f in training],
        validation=[f.atoms for f in validation],
        resume=started,
        warm_start=_members(previous, size) if config.train.warm_start else None,
    )
    model = load_model(result.model_path)
    calibration = fit_calibration(
        calibration_data(_residuals(model, validation, "validation"), ("forces",))
    )
    path = directory / "model.pt"  # the committee with its force calibration and domain
    update_checkpoint(result.model_path, path, calibration=calibration.to_dict())
    metrics = {
        "n_train": len(training),
        "n_validation": len(validation),
        **_test_metrics(_residuals(model, test, "test"), calibration.forces),
        "calibration_scale": calibration.forces,  # predictive std / raw committee std (forces)
        "calibration_dof": calibration.to_dict()["forces_dof"],  # Student-t ν, None: Gaussian
    }
    return TrainedModel(path, metrics)
