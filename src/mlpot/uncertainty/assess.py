"""Judging a model's uncertainty on labelled data: residuals, calibration, report.

:func:`collect_residuals` runs the model over labelled graphs once and keeps, per
structure and atom, the errors against the labels next to the *uncalibrated* standard
deviations and the domain scores. :func:`calibration_data` hands errors and stds to
:func:`mlpot.uncertainty.calibration.fit_calibration` (std scale factor and Student-t
degrees of freedom, maximum likelihood) and :func:`uncertainty_report` scores them.
:func:`calibrate_files` is ``mlpot calibrate`` as a library call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mlpot.data.dataset import Sample, read_dataset, sample_to_graph
from mlpot.data.graph import ENERGY, FORCES, STRESS, STRESS_MASK, Graph, graph_to
from mlpot.data.loader import iterate_batches
from mlpot.errors import MlpotInputError
from mlpot.models.base import model_device, model_dtype
from mlpot.models.checkpoint import load_checkpoint, model_from_payload, update_checkpoint
from mlpot.physics import outputs
from mlpot.uncertainty.calibration import QUANTITIES, Calibration, fit_calibration, score
from mlpot.uncertainty.domain import DomainStatistics
from mlpot.uncertainty.ensemble import predict_full


@dataclass
class Residuals:
    """Errors (prediction - label) beside uncalibrated stds; NaN where unlabelled.

    ``energy_*`` ``(S,)`` eV; ``force_error (N, 3)`` and ``forces_std (N,)`` eV/Å;
    ``stress_*`` over stress-labelled structures, ``(S', 3, 3)`` and ``(S',)`` eV/Å³;
    ``t2``/``d_min``/``hull_distance`` ``(N,)`` and ``in_domain (S,)``; ``batch (N,)``
    structure of each atom. Stds are None for a single model, domain scores None without
    statistics (``hull_distance`` also for statistics without a hull).
    """

    energy_error: np.ndarray
    force_error: np.ndarray
    batch: np.ndarray
    energy_std: np.ndarray | None = None
    forces_std: np.ndarray | None = None
    stress_error: np.ndarray | None = None
    stress_std: np.ndarray | None = None
    t2: np.ndarray | None = None
    d_min: np.ndarray | None = None
    hull_distance: np.ndarray | None = None
    in_domain: np.ndarray | None = None


_FIELDS = {
    "energy_std": outputs.ENERGY_STD,
    "forces_std": outputs.FORCES_STD,
    "t2": outputs.MAHALANOBIS,
    "d_min": outputs.D_MIN,
    "hull_distance": outputs.HULL_DISTANCE,
    "in_domain": outputs.IN_DOMAIN,
}


def _cat(parts: list[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(parts) if parts else None


def collect_residuals(
    model: torch.nn.Module,
    graphs: list[Graph],
    *,
    domain: DomainStatistics | None = None,
    batch_size: int = 16,
) -> Residuals:
    """Evaluate ``model`` (mean, members, domain scores) once on labelled ``graphs``, on
    the model's device; the residuals are CPU arrays."""
    parts: dict[str, list[np.ndarray]] = {}
    offset = 0
    device = model_device(model)
    with tqdm(total=len(graphs), desc="uncertainty", leave=False, disable=len(graphs) < 200) as bar:
        for batch in iterate_batches(graphs, batch_size):
            batch = graph_to(batch, device)
            mask = batch[STRESS_MASK]
            out = predict_full(model, batch, stress=bool(mask.any()), domain=domain)
            add = {
                "energy_error": out[outputs.ENERGY] - batch[ENERGY],
                "force_error": out[outputs.FORCES] - batch[FORCES],
                "batch": batch["batch"] + offset,
            }
            add.update({key: out[name] for key, name in _FIELDS.items() if name in out})
            if bool(mask.any()):
                add["stress_error"] = out[outputs.STRESS][mask] - batch[STRESS][mask]
                if outputs.STRESS_STD in out:
                    add["stress_std"] = out[outputs.STRESS_STD][mask]
            for key, value in add.items():
                parts.setdefault(key, []).append(value.detach().cpu().numpy())
            offset += int(batch["n_atoms"].shape[0])
            bar.update(int(batch["n_atoms"].shape[0]))
    return Residuals(**{key: _cat(values) for key, values in parts.items()})


def _force_arrays(res: Residuals) -> tuple[np.ndarray, np.ndarray]:
    """Force components ``(N, 3)`` and their per-atom std broadcast to ``(N, 3)``."""
    return res.force_error, np.broadcast_to(res.forces_std[:, None], res.force_error.shape)


def calibration_data(
    res: Residuals, quantities: tuple[str, ...] = QUANTITIES
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What :func:`~mlpot.uncertainty.calibration.fit_calibration` fits: per quantity of
    ``quantities`` that has labels, the errors and the raw stds broadcast to their shape
    (forces ``(N, 3)``, stress ``(S', 9)``; energy ``(S,)``)."""
    if res.energy_std is None:
        raise MlpotInputError(
            "the model has no ensemble members, so no standard deviations to calibrate",
            field="model",
        )
    data = {}
    if "energy" in quantities:
        data["energy"] = (res.energy_error, res.energy_std)
    if "forces" in quantities and res.forces_std is not None:
        if np.isfinite(res.force_error).any():
            data["forces"] = _force_arrays(res)
    if "stress" in quantities and res.stress_std is not None and len(res.stress_std):
        errors = res.stress_error.reshape(len(res.stress_std), -1)  # (S', 9)
        data["stress"] = (errors, np.repeat(res.stress_std[:, None], 9, 1))
    return data


def uncertainty_report(res: Residuals, calibration: Calibration | None = None) -> dict[str, Any]:
    """Calibration scores per quantity under the predictive of ``calibration`` (default:
    uncalibrated, Gaussian) and domain figures."""
    c = calibration or Calibration()
    report: dict[str, Any] = {}
    if res.energy_std is not None:
        report["energy"] = score(
            res.energy_error, res.energy_std, scale=c.energy, dof=c.energy_dof, what="energy"
        ).to_dict()
    if res.forces_std is not None and np.isfinite(res.force_error).any():
        labelled = np.isfinite(res.force_error).all(1)
        errors, stds = _force_arrays(res)
        report["forces"] = score(
            errors[labelled],
            stds[labelled],
            scale=c.forces,
            dof=c.forces_dof,
            rank_errors=np.linalg.norm(res.force_error[labelled], axis=1),
            rank_stds=res.forces_std[labelled],
            what="forces",
        ).to_dict()
    if res.stress_std is not None and len(res.stress_std):
        errors = res.stress_error.reshape(len(res.stress_std), -1)
        stds = np.repeat(res.stress_std[:, None], 9, 1)
        report["stress"] = score(
            errors, stds, scale=c.stress, dof=c.stress_dof, what="stress"
        ).to_dict()
    if res.in_domain is not None:
        report["domain"] = domain_summary(res)
    return report


def per_structure_max(values: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Largest per-atom value of each structure ``(S,)``."""
    out = np.full(batch.max() + 1, -np.inf)
    np.maximum.at(out, batch, values)
    return out


def domain_summary(res: Residuals) -> dict[str, float]:
    """Fraction of structures in domain, the mean of each structure's largest scores and,
    with a hull, the fractions of atoms and of structures outside it (raw test, no
    margin)."""
    summary = {
        "fraction_in_domain": float(np.mean(res.in_domain)),
        "mean_max_t2": float(np.mean(per_structure_max(res.t2, res.batch))),
        "mean_max_d_min": float(np.mean(per_structure_max(res.d_min, res.batch))),
    }
    if res.hull_distance is not None:
        outside = np.nan_to_num(res.hull_distance, nan=-np.inf) > 0  # NaN: no hull, no test
        summary["fraction_atoms_outside_hull"] = float(np.mean(outside))
        summary["fraction_outside_hull"] = float(
            np.mean(per_structure_max(outside.astype(float), res.batch) > 0)
        )
    return summary


def read_graphs(paths: list[str], model: torch.nn.Module) -> list[Graph]:
    """Labelled graphs of every structure in ``paths`` (energy labels required)."""
    samples = [
        sample
        for path in paths
        for sample in read_dataset(path, require_energy=True, require_forces=False)
    ]
    return labelled_graphs(samples, model)


def labelled_graphs(samples: list[Sample], model: torch.nn.Module) -> list[Graph]:
    """Graphs of ``samples`` with their labels, in the model's dtype, cutoff and elements."""
    dtype = model_dtype(model)
    return [
        sample_to_graph(sample, model.cutoff, dtype=dtype, elements=model.elements)
        for sample in samples
    ]


@dataclass
class LoadedModel:
    """A checkpoint's model with its calibration, domain statistics and delta-learning
    baseline spec (None if absent)."""

    model: torch.nn.Module
    calibration: Calibration
    domain: DomainStatistics | None
    baseline: dict[str, Any] | None = None


def load_with_statistics(
    path: str | Path, *, trust_code: bool = False, device: str = "cpu"
) -> LoadedModel:
    """Load a checkpoint's model (evaluation mode, on the torch ``device``), calibration,
    domain statistics and baseline spec (not built). A baseline that names code is refused
    unless ``trust_code`` (see :func:`mlpot.models.checkpoint.load_checkpoint`)."""
    payload = load_checkpoint(path, trust_code=trust_code)
    model = model_from_payload(payload, source=str(path)).to(device).eval()
    statistics = {}
    for name, cls in (("calibration", Calibration), ("domain", DomainStatistics)):
        try:
            statistics[name] = cls.from_dict(payload[name]) if payload[name] else None
        except MlpotInputError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise MlpotInputError(
                f"malformed ({err.__class__.__name__}: {err})", source=str(path), field=name
            ) from None
    calibration = statistics["calibration"] or Calibration()
    return LoadedModel(model, calibration, statistics["domain"], payload["baseline"])


@dataclass
class CalibrationRun:
    """What ``mlpot calibrate`` did: the fitted predictive (scales and degrees of freedom),
    scores before and after, where it wrote."""

    calibration: Calibration
    before: dict[str, Any]
    after: dict[str, Any]
    checkpoint: Path
    residuals: Residuals


def calibrate_files(
    model_path: str | Path,
    paths: list[str],
    *,
    output: str | Path | None = None,
    trust_code: bool = False,
    device: str = "cpu",
) -> CalibrationRun:
    """Fit the calibration of the ensemble in ``model_path`` on labelled ``paths`` and
    write it into the checkpoint (in place, or a copy at ``output``). The model is
    evaluated on the torch ``device``. ``trust_code``: see :func:`load_with_statistics`."""
    loaded = load_with_statistics(model_path, trust_code=trust_code, device=device)
    if not loaded.model.n_members:
        raise MlpotInputError(
            "model has no ensemble members to calibrate: train a committee "
            "(ensemble.size > 1) or a shallow ensemble (model bpnn_shallow)",
            source=str(model_path),
            field="model",
        )
    model, domain = loaded.model, loaded.domain
    residuals = collect_residuals(model, read_graphs(paths, model), domain=domain)
    calibration = fit_calibration(calibration_data(residuals))
    target = Path(output) if output is not None else Path(model_path)
    after = uncertainty_report(residuals, calibration)
    stored = {**calibration.to_dict(), "data": [str(p) for p in paths], "scores": after}
    update_checkpoint(model_path, target, calibration=stored)
    return CalibrationRun(calibration, uncertainty_report(residuals), after, target, residuals)
