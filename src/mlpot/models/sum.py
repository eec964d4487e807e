"""Energy terms composed additively: offsets + learned short range + physical terms."""

from __future__ import annotations

from typing import Any

import torch

from mlpot.data.graph import Graph
from mlpot.models.base import EnergyModel


class SumModel(EnergyModel):
    """``ε_i = Σ_t ε_i^(t)`` over its terms; cutoff is the largest, elements the union.

    Args:
        terms: the energy terms, each an :class:`EnergyModel` (or its spec dict).
    """

    name = "sum"

    def __init__(self, terms: list[EnergyModel | dict[str, Any]]) -> None:
        from mlpot.models.registry import build_model, model_spec

        built = [t if isinstance(t, EnergyModel) else build_model(t) for t in terms]
        if not built:
            raise ValueError("SumModel needs at least one term")
        elements = sorted({z for t in built for z in t.elements})
        cutoff = max(t.cutoff for t in built)
        super().__init__(elements, cutoff)
        self.terms = torch.nn.ModuleList(built)
        self._config = {"terms": [model_spec(t) for t in built]}

    def config(self) -> dict[str, Any]:
        from mlpot.models.registry import model_spec

        return {"terms": [model_spec(t) for t in self.terms]}

    def fit_statistics(self, graphs: list[Graph]) -> None:
        for term in self.terms:
            term.fit_statistics(graphs)

    def forward(self, graph: Graph) -> torch.Tensor:
        total = self.terms[0](graph)
        for term in self.terms[1:]:
            total = total + term(graph)
        return total  # (N,)
