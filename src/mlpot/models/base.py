"""The energy-model contract: ``forward(graph) -> local energies (N,)`` in eV."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mlpot.data.graph import Graph


class EnergyModel(torch.nn.Module):
    """Base of every energy model and energy term.

    A model declares ``name`` (its registry key), ``elements`` (atomic numbers it knows),
    ``cutoff`` (Å) and :meth:`config` (the constructor keyword arguments that rebuild it).
    A term must ignore edges longer than its own cutoff: summed terms share one graph
    built with the largest cutoff.
    """

    name: ClassVar[str] = ""

    def __init__(self, elements: list[int], cutoff: float, **config: Any) -> None:
        super().__init__()
        self.elements = sorted(int(z) for z in elements)
        if len(set(self.elements)) != len(self.elements) or not self.elements:
            raise ValueError(f"elements must be distinct atomic numbers, got {elements}")
        self.cutoff = float(cutoff)
        self._config = {"elements": self.elements, "cutoff": self.cutoff, **config}

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments that rebuild this model (without weights)."""
        return dict(self._config)

    def fit_statistics(self, graphs: list[Graph]) -> None:
        """Set data-dependent normalisation from training graphs (labels included). No-op."""

    def forward(self, graph: Graph) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """Floating dtype of a model's parameters or buffers (float64 when it has neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float64
