"""ZBL universal screened nuclear repulsion, switched off smoothly.

Ziegler–Biersack–Littmark (1985)::

    u(r) = k_e Z_i Z_j / r · φ(r / a),   a = 0.8854 a₀ / (Z_i^0.23 + Z_j^0.23)
    φ(x) = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x)
         + 0.28022 e^(-0.40290 x) + 0.02817 e^(-0.20162 x)

multiplied by a C² switch ``s(r)`` from 1 at ``onset`` to 0 at ``cutoff`` (the quintic
smoothstep), so energy and forces go continuously to zero. Each pair energy is shared
equally by its two atoms. Units: Å, eV.
"""

from __future__ import annotations

import torch
from ase.units import Bohr

from mlpot.data.graph import EDGE_INDEX, NUMBERS, Graph, edge_vectors
from mlpot.models.arguments import Elements, NonNegative, Positive
from mlpot.models.base import EnergyModel
from mlpot.nn.electrostatics import COULOMB_CONSTANT

ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
ZBL_LENGTH = 0.8854 * Bohr  # Å


def smooth_switch(r: torch.Tensor, onset: float, cutoff: float) -> torch.Tensor:
    """1 for ``r <= onset``, 0 for ``r >= cutoff``, ``1 - 10x³ + 15x⁴ - 6x⁵`` between (C²)."""
    x = ((r - onset) / (cutoff - onset)).clamp(0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x * x)


def zbl_pair_energy(r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
    """Unswitched ZBL pair energy (eV) at distance ``r`` (Å) of nuclei ``zi``, ``zj``."""
    zi, zj = zi.to(r.dtype), zj.to(r.dtype)
    x = r * (zi**0.23 + zj**0.23) / ZBL_LENGTH
    screening = sum(
        c * torch.exp(-d * x) for c, d in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS, strict=True)
    )
    return COULOMB_CONSTANT * zi * zj / r * screening


class ZBL(EnergyModel):
    """ZBL repulsion term.

    Args:
        elements: atomic numbers.
        cutoff: distance (Å) where the repulsion has vanished.
        onset: distance (Å) where the switch-off starts (default ``cutoff / 2``).
    """

    name = "zbl"

    def __init__(
        self, elements: Elements, cutoff: Positive = 2.0, onset: NonNegative | None = None
    ):
        onset = float(onset if onset is not None else 0.5 * cutoff)
        if not 0 <= onset < cutoff:
            raise ValueError(f"need 0 <= onset < cutoff, got onset={onset}, cutoff={cutoff}")
        super().__init__(elements, cutoff, onset=onset)
        self.onset = onset

    def forward(self, graph: Graph) -> torch.Tensor:
        r = torch.linalg.vector_norm(edge_vectors(graph), dim=-1)  # (E,)
        inside = r < self.cutoff
        safe = torch.where(inside, r, torch.full_like(r, self.cutoff))
        i, j = graph[EDGE_INDEX]
        numbers = graph[NUMBERS]
        pair = zbl_pair_energy(safe, numbers[i], numbers[j]) * smooth_switch(
            safe, self.onset, self.cutoff
        )
        pair = torch.where(inside, pair, torch.zeros_like(pair))  # (E,)
        return r.new_zeros(numbers.shape[0]).index_add(0, i, 0.5 * pair)  # (N,)
