"""Per-atom features of a model, the one lookup: which part of a model describes atomic
environments, and its features for structures, by element.

The domain of applicability (:mod:`mlpot.uncertainty.domain`) compares these features
with those of the training atoms; active learning's d-optimal batch selection spreads
its picks over them. Both ask here, never the model's parts directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from mlpot.data.graph import BATCH, NUMBERS, Graph, atoms_to_graph, collate
from mlpot.models.base import EnergyModel, model_dtype


@torch.no_grad()
def model_features(model: EnergyModel, graph: Graph) -> torch.Tensor:
    """Per-atom features ``(N, F)`` of ``model`` on ``graph``; MlpotInputError when the
    model has none."""
    return model.features(graph)


@dataclass
class AtomFeatures:
    """Per-atom features of several structures.

    ``features (n, F)`` float64, ``numbers (n,)`` atomic numbers, ``structure (n,)`` the
    index of each atom's structure among ``n_structures``.
    """

    features: np.ndarray
    numbers: np.ndarray
    structure: np.ndarray
    n_structures: int

    def mean_by_element(self, elements: Sequence[int]) -> np.ndarray:
        """``(S, Z * F)``: per structure, the mean features of its atoms of each element
        in ``elements`` (zeros for an element it lacks), concatenated in that order."""
        n_features = self.features.shape[1]
        out = np.zeros((self.n_structures, len(elements), n_features))
        for k, z in enumerate(elements):
            rows = self.numbers == z
            sums = np.zeros((self.n_structures, n_features))
            np.add.at(sums, self.structure[rows], self.features[rows])
            counts = np.bincount(self.structure[rows], minlength=self.n_structures)
            np.divide(sums, counts[:, None], out=out[:, k], where=counts[:, None] > 0)
        return out.reshape(self.n_structures, -1)


def atom_features(
    model: torch.nn.Module, structures: Sequence[Atoms | Graph], *, batch_size: int = 32
) -> AtomFeatures:
    """Per-atom features of ``model`` (see :func:`feature_model`) for ``structures``: ase
    ``Atoms`` (made into graphs of the model's cutoff, elements and dtype) or graphs."""
    dtype = model_dtype(model)
    graphs = [
        atoms_to_graph(s, model.cutoff, dtype=dtype, elements=model.elements)
        if isinstance(s, Atoms)
        else s
        for s in structures
    ]
    features, numbers, structure = [], [], []
    for start in range(0, len(graphs), batch_size):
        batch = collate(graphs[start : start + batch_size])
        features.append(model_features(model, batch).detach().to(torch.float64).cpu())
        numbers.append(batch[NUMBERS].cpu())
        structure.append(batch[BATCH].cpu() + start)
    if not graphs:
        empty = np.zeros(0, dtype=np.int64)
        return AtomFeatures(np.zeros((0, 0)), empty, empty, 0)
    return AtomFeatures(
        torch.cat(features).numpy(),
        torch.cat(numbers).numpy(),
        torch.cat(structure).numpy(),
        len(graphs),
    )
