"""Lennard-Jones pair potential through the same graph/derivative pipeline as every model.

Matches ``ase.calculators.lj.LennardJones`` term for term (it is the oracle test of the
pipeline): ``u(r) = 4ε((σ/r)^12 - (σ/r)^6)`` for ``r < r_c``, either shifted to vanish at
``r_c`` (``smooth=False``) or multiplied by ASE's C¹ switching function between ``r_o`` and
``r_c`` (``smooth=True``). Each pair energy is split equally between its two atoms.
"""

from __future__ import annotations

import torch

from mlpot.data.graph import EDGE_INDEX, NUMBERS, Graph, edge_vectors
from mlpot.models.arguments import Elements, NonNegative, Positive, Real
from mlpot.models.base import EnergyModel


class LennardJones(EnergyModel):
    """Single-parameter-set Lennard-Jones model.

    Args:
        elements: atomic numbers it applies to (all share ``sigma`` and ``epsilon``).
        sigma: Å. epsilon: eV.
        cutoff: ``r_c`` in Å (default ``3 σ``). onset: ``r_o`` in Å (default ``0.66 r_c``).
        smooth: switch smoothly to zero between ``r_o`` and ``r_c`` instead of shifting.
    """

    name = "lj"

    def __init__(
        self,
        elements: Elements,
        sigma: Positive = 1.0,
        epsilon: Real = 1.0,
        cutoff: Positive | None = None,
        onset: NonNegative | None = None,
        smooth: bool = False,
    ) -> None:
        cutoff = float(cutoff if cutoff is not None else 3.0 * sigma)
        onset = float(onset if onset is not None else 0.66 * cutoff)
        super().__init__(
            elements,
            cutoff,
            sigma=float(sigma),
            epsilon=float(epsilon),
            onset=onset,
            smooth=bool(smooth),
        )
        self.sigma, self.epsilon, self.onset, self.smooth = sigma, epsilon, onset, smooth

    def forward(self, graph: Graph) -> torch.Tensor:
        r2 = (edge_vectors(graph) ** 2).sum(-1)  # (E,)
        rc2, ro2 = self.cutoff**2, self.onset**2
        inside = r2 < rc2
        c6 = torch.where(inside, (self.sigma**2 / r2) ** 3, torch.zeros_like(r2))
        pair = 4.0 * self.epsilon * (c6 * c6 - c6)  # (E,)
        if self.smooth:
            switch = (rc2 - r2) ** 2 * (rc2 + 2 * r2 - 3 * ro2) / (rc2 - ro2) ** 3
            switch = torch.where(r2 < ro2, torch.ones_like(r2), switch)
            pair = torch.where(inside, pair * switch, torch.zeros_like(r2))
        else:
            shift = (
                4.0
                * self.epsilon
                * ((self.sigma / self.cutoff) ** 12 - (self.sigma / self.cutoff) ** 6)
            )
            pair = torch.where(inside, pair - shift, torch.zeros_like(r2))
        local = r2.new_zeros(graph[NUMBERS].shape[0])
        return local.index_add(0, graph[EDGE_INDEX][0], 0.5 * pair)  # (N,)
