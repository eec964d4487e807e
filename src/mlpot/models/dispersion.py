"""Damped ``C6/r⁶`` dispersion, switched off smoothly.

``u(r) = -C6_ij / (r⁶ + R_ij⁶) · s(r)``: the rational (Becke–Johnson-type) damping keeps
the energy finite at short range, and the C² switch ``s`` of :mod:`mlpot.models.zbl` takes it
to zero between ``onset`` and ``cutoff``. Pair coefficients come from per-element values
by the usual combination rules ``C6_ij = √(C6_i C6_j)`` and ``R_ij = (R_i + R_j) / 2``.
Each pair energy is shared equally by its two atoms. Units: eV Å⁶, Å, eV.
"""

from __future__ import annotations

import torch

from mlpot.data.graph import EDGE_INDEX, NUMBERS, Graph, edge_vectors
from mlpot.models.arguments import Elements, NonNegative, Positive
from mlpot.models.base import EnergyModel
from mlpot.models.zbl import smooth_switch
from mlpot.nn.species import SpeciesIndex


class Dispersion(EnergyModel):
    """Pairwise damped dispersion term.

    Args:
        elements: atomic numbers.
        c6: ``C6`` of each element, eV Å⁶, in the order of ``elements``.
        damping_radius: ``R`` of each element, Å, in the order of ``elements``.
        cutoff: Å. onset: start of the switch-off, Å (default ``0.75 cutoff``).
    """

    name = "dispersion"

    def __init__(
        self,
        elements: Elements,
        c6: list[NonNegative],
        damping_radius: list[Positive],
        cutoff: Positive = 10.0,
        onset: NonNegative | None = None,
    ) -> None:
        if len(c6) != len(elements) or len(damping_radius) != len(elements):
            raise ValueError("c6 and damping_radius need one value per element")
        if any(c < 0 for c in c6) or any(r <= 0 for r in damping_radius):
            raise ValueError("c6 must be >= 0 and damping_radius > 0")
        onset = float(onset if onset is not None else 0.75 * cutoff)
        if not 0 <= onset < cutoff:
            raise ValueError(f"need 0 <= onset < cutoff, got onset={onset}, cutoff={cutoff}")
        order = sorted(range(len(elements)), key=lambda k: elements[k])
        c6 = [float(c6[k]) for k in order]
        radius = [float(damping_radius[k]) for k in order]
        super().__init__(elements, cutoff, c6=c6, damping_radius=radius, onset=onset)
        self.onset = onset
        self.species = SpeciesIndex(self.elements)
        c6_t = torch.tensor(c6, dtype=torch.float64)
        r_t = torch.tensor(radius, dtype=torch.float64)
        self.register_buffer("pair_c6", torch.sqrt(c6_t[:, None] * c6_t[None, :]))
        self.register_buffer("pair_radius", 0.5 * (r_t[:, None] + r_t[None, :]))

    def forward(self, graph: Graph) -> torch.Tensor:
        r = torch.linalg.vector_norm(edge_vectors(graph), dim=-1)  # (E,)
        i, j = graph[EDGE_INDEX]
        species = self.species(graph[NUMBERS])
        si, sj = species[i], species[j]
        c6 = self.pair_c6[si, sj].to(r.dtype)
        radius = self.pair_radius[si, sj].to(r.dtype)
        inside = r < self.cutoff
        pair = -c6 / (r**6 + radius**6) * smooth_switch(r, self.onset, self.cutoff)
        pair = torch.where(inside, pair, torch.zeros_like(pair))  # (E,)
        return r.new_zeros(species.shape[0]).index_add(0, i, 0.5 * pair)  # (N,)
