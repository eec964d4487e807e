"""Structure-level feature vectors for batch selection (d-optimal design)."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from mlpot.models.base import EnergyModel
from mlpot.uncertainty.features import atom_features


def structure_features(model: EnergyModel, frames: list[Atoms]) -> np.ndarray:
    """``(C, Z * F)``: per frame and element of the model, the mean of the model's
    per-atom features (:func:`mlpot.uncertainty.features.atom_features`)."""
    return atom_features(model, frames).mean_by_element(list(model.elements))
