"""The model a training run starts from: reference energies fitted by least squares, the
configured learned model, and their statistics fitted on the training graphs."""

from __future__ import annotations

import numpy as np
import torch

from mlpot.data.dataset import Sample, elements_of
from mlpot.data.graph import Graph
from mlpot.data.reference import fit_reference_energies
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import torch_dtype
from mlpot.models.offsets import AtomicOffsets
from mlpot.models.registry import build_model, with_elements
from mlpot.models.sum import SumModel
from mlpot.physics.derivatives import predict
from mlpot.physics.outputs import ENERGY
from mlpot.training.config import TrainConfig
from mlpot.training.samples import to_graphs


def reference_offsets(
    samples: list[Sample], elements: list[int], known: np.ndarray | float = 0.0
) -> AtomicOffsets:
    """Per-element energies, least squares on the labels minus ``known`` energies per
    structure (those of the parameter-free terms, see :func:`fixed_terms`)."""
    counts = np.array([[np.sum(s.atoms.numbers == z) for z in elements] for s in samples])
    energies = np.array([s.energy for s in samples]) - known
    return AtomicOffsets(elements, fit_reference_energies(counts, energies, elements).tolist())


def fixed_terms(model: EnergyModel) -> list[EnergyModel]:
    """The terms of ``model`` without trainable parameters (a fixed-charge Coulomb, ZBL,
    dispersion, ...): their energies are known before training, so the reference energies
    are fitted to what is left, and nothing is counted twice."""
    terms = list(model.terms) if isinstance(model, SumModel) else [model]
    return [t for t in terms if not any(p.requires_grad for p in t.parameters())]


def fixed_energies(terms: list[EnergyModel], graphs: list[Graph]) -> np.ndarray:
    """Energy ``(n_structures,)`` of the given terms on each graph, eV."""
    return np.array(
        [sum(float(predict(t, g, forces=False)[ENERGY]) for t in terms) for g in graphs]
    )


def build_initial_model(
    config: TrainConfig, train_set: list[Sample]
) -> tuple[EnergyModel, list[Graph]]:
    """Least-squares offsets + the configured learned model, with statistics fitted on the
    training graphs (returned too, so they are built once)."""
    torch.manual_seed(config.training.seed)
    learned = build_model(with_elements(config.model, elements_of(train_set)))
    dtype = torch_dtype(config.training.dtype)
    learned = learned.to(dtype)
    graphs = to_graphs(train_set, learned, dtype, "train graphs", progress=config.training.progress)
    fixed = fixed_terms(learned)
    known = fixed_energies(fixed, graphs) if fixed else 0.0
    model = SumModel([reference_offsets(train_set, learned.elements, known), learned]).to(dtype)
    model.fit_statistics(graphs)
    return model, graphs


@torch.no_grad()
def refit_offsets(model: EnergyModel, samples: list[Sample], graphs: list[Graph]) -> None:
    """Re-fit the reference energies of ``model`` (a :class:`SumModel` whose first term is
    :class:`AtomicOffsets`) to the labels minus its other terms, on ``samples``: a model
    continued on new data (warm start) gets the constants that fit it best now; new
    compositions pin what single-composition data left free."""
    if not isinstance(model, SumModel) or not isinstance(model.terms[0], AtomicOffsets):
        return
    offsets = model.terms[0]
    known = fixed_energies(list(model.terms[1:]), graphs)
    offsets.set_energies(reference_offsets(samples, offsets.elements, known).energies.tolist())
