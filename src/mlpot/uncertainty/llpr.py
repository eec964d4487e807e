"""Fitting the last-layer prediction rigidity of a trained model (:mod:`mlpot.models.llpr`).

:func:`fit_llpr` sums each training structure's last-layer features, forms ``FᵀF``, chooses
the regulariser ``ς²`` (given, or by the likelihood of validation energy errors) and
returns the :class:`~mlpot.models.llpr.LLPR` wrapper with ``Σ = (FᵀF + ς² I)⁻¹`` and its
members drawn. The overall scale ``α`` is left to the Student-t calibration
(:func:`mlpot.uncertainty.assess.calibrate_files`, ``mlpot calibrate``), which fits it per
quantity (energy, forces, stress) with the tails' degrees of freedom.
:func:`llpr_checkpoint` does both for a checkpoint (``mlpot llpr``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlpot.data.graph import ENERGY, Graph, graph_to
from mlpot.data.loader import iterate_batches
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel, model_device
from mlpot.models.checkpoint import load_checkpoint, model_from_payload, save_model
from mlpot.models.llpr import LLPR
from mlpot.physics.derivatives import structure_sum
from mlpot.uncertainty.assess import CalibrationRun, calibrate_files, read_graphs

#: Regularisers ``ς²`` tried, relative to the mean eigenvalue of ``FᵀF``. No larger: as
#: ``ς²`` outgrows the data's eigenvalues, ``Σ -> I / ς²`` and ``σ_E ∝ |f|`` forgets which
#: directions the training data pinned down; validation errors from the training
#: distribution (nearly homoscedastic) cannot tell that apart, and on aspirin (300 K
#: validation) their likelihood kept rising up to ``ς² = 100 λ̄``, where the energy std no
#: longer told 1200 K frames from 300 K ones (AUROC 0.05, against 1.00 for ``ς² ≤ λ̄/1000``).
RELATIVE_REGULARIZERS = tuple(10.0**k for k in range(-12, -1))
#: Regulariser relative to the mean eigenvalue of ``FᵀF`` without validation data.
DEFAULT_RELATIVE_REGULARIZER = 1e-6


@torch.no_grad()
def structure_features(
    model: EnergyModel, graphs: list[Graph], *, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Each structure's summed last-layer features ``(S, L)`` and the model's energy
    ``(S,)`` eV, float64, on the model's device."""
    device = model_device(model)
    features, energies = [], []
    for batch in iterate_batches(graphs, batch_size):
        batch = graph_to(batch, device)
        last = model.last_layer(batch)
        features.append(structure_sum(last.features, batch).double().cpu())
        energies.append(structure_sum(last.energies, batch).double().cpu())
    return torch.cat(features).numpy(), torch.cat(energies).numpy()


@dataclass
class RegularizerChoice:
    """The chosen ``ς²`` (absolute, eV²), and per value tried ``(ς², Gaussian NLL)`` of
    the validation energy errors with the best ``α`` for each (empty without data)."""

    regularizer: float
    scores: list[tuple[float, float]]


def choose_regularizer(
    gram: np.ndarray, features: np.ndarray | None = None, errors: np.ndarray | None = None
) -> RegularizerChoice:
    """``ς²`` for ``Σ = (gram + ς² I)⁻¹``: with validation ``features (S, L)`` and energy
    ``errors (S,)``, the one of :data:`RELATIVE_REGULARIZERS` (times the mean eigenvalue of
    ``gram``) that maximises the Gaussian likelihood of the errors under ``α² fᵀ Σ f``, ``α``
    at its maximum-likelihood value for each; without, :data:`DEFAULT_RELATIVE_REGULARIZER`.
    """
    eigenvalues, vectors = np.linalg.eigh(gram)
    reference = max(float(np.mean(eigenvalues)), np.finfo(float).tiny)
    if features is None or errors is None or len(errors) == 0:
        return RegularizerChoice(DEFAULT_RELATIVE_REGULARIZER * reference, [])
    projected = (features @ vectors) ** 2  # (S, L)
    scores = []
    for relative in RELATIVE_REGULARIZERS:
        regularizer = relative * reference
        variance = projected @ (1.0 / np.maximum(eigenvalues + regularizer, 1e-300))  # (S,)
        alpha2 = float(np.mean(errors**2 / variance))
        nll = 0.5 * (math.log(2 * math.pi * alpha2) + float(np.mean(np.log(variance))) + 1.0)
        scores.append((regularizer, nll))
    best = min(scores, key=lambda item: item[1])
    return RegularizerChoice(best[0], scores)


def posterior_covariance(gram: np.ndarray, regularizer: float) -> np.ndarray:
    """``(gram + ς² I)⁻¹`` ``(L, L)``, through the eigendecomposition (symmetric)."""
    eigenvalues, vectors = np.linalg.eigh(gram)
    return (vectors / (eigenvalues + regularizer)) @ vectors.T


def fit_llpr(
    model: EnergyModel,
    graphs: list[Graph],
    *,
    validation: list[Graph] | None = None,
    regularizer: float | None = None,
    members: int = 8,
    seed: int = 0,
    batch_size: int = 16,
) -> LLPR:
    """The LLPR of a trained single ``model`` (mpnn, or a sum with one) on its training
    ``graphs``: ``Σ = (FᵀF + ς² I)⁻¹`` from their summed last-layer features and ``members``
    weight samples from ``N(0, Σ)`` (seeded). ``ς²`` is ``regularizer`` (eV²) when given,
    else chosen on the energy-labelled ``validation`` graphs (:func:`choose_regularizer`).
    The result is in evaluation mode; calibrate ``α`` afterwards."""
    if not graphs:
        raise MlpotInputError("no training structures to fit the LLPR on", field="data")
    llpr = LLPR(model, members=members).to(model_device(model)).eval()
    features, _ = structure_features(model, graphs, batch_size=batch_size)
    gram = features.T @ features  # (L, L)
    if regularizer is None:
        val_features = errors = None
        if validation:
            val_features, predicted = structure_features(model, validation, batch_size=batch_size)
            labels = np.array([float(g[ENERGY].sum()) for g in validation])
            keep = np.isfinite(labels)
            val_features, errors = val_features[keep], predicted[keep] - labels[keep]
        regularizer = choose_regularizer(gram, val_features, errors).regularizer
    covariance = posterior_covariance(gram, regularizer)
    dtype = llpr.covariance.dtype
    llpr.set_posterior(torch.as_tensor(covariance, dtype=dtype), regularizer, seed=seed)
    return llpr


@dataclass
class LLPRRun:
    """What :func:`llpr_checkpoint` wrote: the checkpoint, the regulariser, and the
    calibration run (None without validation data)."""

    checkpoint: Path
    regularizer: float
    calibration: CalibrationRun | None


def llpr_checkpoint(
    model_path: str | Path,
    train: list[str],
    output: str | Path,
    *,
    validation: list[str] | None = None,
    members: int = 8,
    regularizer: float | None = None,
    seed: int = 0,
    trust_code: bool = False,
    device: str = "cpu",
) -> LLPRRun:
    """Fit the LLPR of the single model in ``model_path`` on the structures in ``train``
    and save it to ``output`` (the checkpoint's domain statistics, baseline and training
    metadata kept); with ``validation`` files, ``ς²`` is chosen on them and the Student-t
    calibration fitted on them too (:func:`~mlpot.uncertainty.assess.calibrate_files`)."""
    payload = load_checkpoint(model_path, trust_code=trust_code)
    model = model_from_payload(payload, source=str(model_path)).to(device).eval()
    if model.n_members or not model.n_last_layer_features:
        raise MlpotInputError(
            "LLPR needs a single model with last-layer features (an mpnn run's model.pt)",
            source=str(model_path),
            field="model",
        )
    val_graphs = read_graphs(validation, model) if validation else None
    llpr = fit_llpr(
        model,
        read_graphs(train, model),
        validation=val_graphs,
        regularizer=regularizer,
        members=members,
        seed=seed,
    )
    training = {
        **(payload.get("training") or {}),
        "llpr": {"train": list(train), "validation": list(validation or []), "seed": seed},
    }
    save_model(
        output,
        llpr,
        training=training,
        domain=payload.get("domain"),
        baseline=payload.get("baseline"),
    )
    run = None
    if validation:
        run = calibrate_files(output, list(validation), trust_code=trust_code, device=device)
    return LLPRRun(Path(output), float(llpr.regularizer), run)
