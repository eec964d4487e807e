"""A committee of energy models whose energy is the members' mean.

Because forces and stress are linear in the energy, :func:`~mlpot.physics.derivatives.predict`
on a committee gives the mean forces and stress in one backward pass. The spread of the
members (the uncertainty) is computed by :mod:`mlpot.uncertainty.committee`.
"""

from __future__ import annotations

from typing import Any

import torch

from mlpot.data.graph import Graph
from mlpot.models.base import EnergyModel


class Committee(EnergyModel):
    """``ε_i = (1/M) Σ_m ε_i^(m)`` over ``M`` members that know the same elements.

    Args:
        members: the energy models (or their spec dicts).
    """

    name = "committee"

    def __init__(self, members: list[EnergyModel | dict[str, Any]]) -> None:
        from mlpot.models.registry import build_model

        built = [m if isinstance(m, EnergyModel) else build_model(m) for m in members]
        if len(built) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(built)}")
        elements = built[0].elements
        for k, member in enumerate(built[1:], start=1):
            if member.elements != elements:
                raise ValueError(
                    f"committee member {k} knows elements {member.elements}, member 0 knows "
                    f"{elements}: members must be trained for the same elements"
                )
        super().__init__(elements, max(m.cutoff for m in built))
        self.members = torch.nn.ModuleList(built)

    def config(self) -> dict[str, Any]:
        from mlpot.models.registry import model_spec

        return {"members": [model_spec(m) for m in self.members]}

    def forward(self, graph: Graph) -> torch.Tensor:
        total = self.members[0](graph)
        for member in self.members[1:]:
            total = total + member(graph)
        return total / len(self.members)  # (N,)
