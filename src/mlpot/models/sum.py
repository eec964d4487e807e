"""Energy terms composed additively: offsets + learned short range + physical terms."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from mlpot.data.graph import Graph
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel, LastLayer, MemberGradients, model_spec


class SumModel(EnergyModel):
    """``ε_i = Σ_t ε_i^(t)`` over its terms; cutoff is the largest, elements the union.

    A sum with ensemble terms (e.g. offsets + a shallow ensemble) is an ensemble of the
    same size: the member-less terms are the same for every member.

    Args:
        terms: the (built) energy terms; the registry builds them from nested specs.
    """

    name = "sum"

    def __init__(self, terms: list[EnergyModel]) -> None:
        if not terms:
            raise ValueError("SumModel needs at least one term")
        elements = sorted({z for t in terms for z in t.elements})
        cutoff = max(t.cutoff for t in terms)
        super().__init__(elements, cutoff)
        self.terms = torch.nn.ModuleList(terms)

    def config(self) -> dict[str, Any]:
        return {"terms": [model_spec(t) for t in self.terms]}

    def fit_statistics(self, graphs: list[Graph]) -> None:
        for term in self.terms:
            term.fit_statistics(graphs)

    def forward(self, graph: Graph) -> torch.Tensor:
        return _summed(list(self.terms), graph)  # (N,)

    def _featured(self) -> EnergyModel | None:
        """The term that describes environments (the learned one), if any."""
        return next((term for term in self.terms if term.n_features), None)

    @property
    def n_features(self) -> int:
        term = self._featured()
        return term.n_features if term is not None else 0

    def features(self, graph: Graph) -> torch.Tensor:
        """Per-atom features ``(N, F)`` of the learned term (offsets and physical terms
        have none)."""
        term = self._featured()
        return term.features(graph) if term is not None else super().features(graph)

    @property
    def n_members(self) -> int:
        sizes = {term.n_members for term in self.terms} - {0}
        if len(sizes) > 1:
            raise MlpotInputError(
                f"a sum of ensembles of different sizes {sorted(sizes)} has no member stack",
                field="model",
            )
        return sizes.pop() if sizes else 0

    def member_energies(self, graph: Graph, *, member_derivatives: bool = False) -> torch.Tensor:
        if not self.n_members:
            return super().member_energies(graph)
        total = None
        for term in self.terms:
            if term.n_members:
                part = term.member_energies(graph, member_derivatives=member_derivatives)
            else:
                part = term(graph)[None, :]  # (1, N): the same for every member
            total = part if total is None else total + part
        return total  # (K, N)

    def member_gradients(self, graph: Graph, *, strain: bool = False) -> MemberGradients | None:
        """The explicit member gradients of its one ensemble term, if it offers them, with
        the other terms as the members' ``common`` part; None otherwise."""
        ensembles = [term for term in self.terms if term.n_members]
        if len(ensembles) != 1:
            return None
        return self._with_common(ensembles[0], ensembles[0].member_gradients(graph, strain=strain))

    def _with_common(
        self, term: EnergyModel, gradients: MemberGradients | None
    ) -> MemberGradients | None:
        """``gradients`` of one term, with the other terms added to their common part."""
        if gradients is None:
            return None
        common = [other for other in self.terms if other is not term]
        if gradients.common is not None:
            common.append(gradients.common)
        if not common:
            return gradients
        return dataclasses.replace(gradients, common=lambda g: _summed(common, g))

    # -- last-layer features: those of its learned terms, side by side ---------------------

    def _linear_terms(self) -> list[EnergyModel]:
        return [term for term in self.terms if term.n_last_layer_features]

    @property
    def n_last_layer_features(self) -> int:
        return sum(term.n_last_layer_features for term in self._linear_terms())

    def last_layer(self, graph: Graph) -> LastLayer:
        """The summed energies ``(N,)`` and the last-layer features of the terms that have
        them, side by side ``(N, L)`` (offsets and physical terms have none)."""
        linear = self._linear_terms()
        if not linear:
            return super().last_layer(graph)
        parts = [term.last_layer(graph) for term in linear]
        others = [term for term in self.terms if term not in linear]
        energies = parts[0].energies
        for part in parts[1:]:
            energies = energies + part.energies
        if others:
            energies = energies + _summed(others, graph)
        return LastLayer(energies, torch.cat([part.features for part in parts], dim=1))

    def last_layer_gradients(
        self, graph: Graph, shifts: torch.Tensor, *, strain: bool = False
    ) -> MemberGradients | None:
        """Those of its one term with last-layer features, with the other terms as the
        common part (None with several such terms, or when that term offers none)."""
        linear = self._linear_terms()
        if len(linear) != 1:
            return None
        gradients = linear[0].last_layer_gradients(graph, shifts, strain=strain)
        return self._with_common(linear[0], gradients)


def _summed(terms: list[Callable[[Graph], torch.Tensor]], graph: Graph) -> torch.Tensor:
    total = terms[0](graph)
    for term in terms[1:]:
        total = total + term(graph)
    return total  # (N,)
