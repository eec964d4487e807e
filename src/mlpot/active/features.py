"""Structure-level feature vectors for batch selection (d-optimal design)."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from mlpot.data.graph import atoms_to_graph
from mlpot.models.base import EnergyModel


def _feature_model(model: EnergyModel):
    for module in model.modules():
        if hasattr(module, "features") and callable(module.features) and module is not model:
            return module
    raise ValueError(f"model {model.name!r} exposes no per-atom features")


@torch.no_grad()
def structure_features(model: EnergyModel, frames: list[Atoms]) -> np.ndarray:
    """``(C, S * F)``: per element, the mean of the model's per-atom features."""
    source = _feature_model(model)
    dtype = next(model.parameters()).dtype
    rows = []
    for atoms in frames:
        graph = atoms_to_graph(atoms, model.cutoff, dtype=dtype, elements=model.elements)
        feats = source.features(graph).double().numpy()  # (N, F)
        numbers = atoms.numbers
        rows.append(
            np.concatenate(
                [
                    feats[numbers == z].mean(0)
                    if np.any(numbers == z)
                    else np.zeros(feats.shape[1])
                    for z in model.elements
                ]
            )
        )
    return np.array(rows)
