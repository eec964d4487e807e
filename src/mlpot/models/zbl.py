"""ZBL universal screened nuclear repulsion, switched off smoothly.

Ziegler–Biersack–Littmark (1985)::

    u(r) = k_e Z_i Z_j / r · φ(r / a),   a = 0.8854 a₀ / (Z_i^0.23 + Z_j^0.23)
    φ(x) = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x)
         + 0.28022 e^(-0.40290 x) + 0.02817 e^(-0.20162 x)

multiplied by a C² switch ``s(r)`` from 1 at ``onset`` to 0 at ``cutoff`` (the quintic
smoothstep), so energy and forces go continuously to zero. Each pair energy is shared
equally by its two atoms. Units: Å, eV.

With ``covalent: true`` the switch of each pair scales with its bond length: ``onset`` and
``cutoff`` are fractions of ``r_cov(i) + r_cov(j)`` (ASE's covalent radii). E.g. onset 0.5,
cutoff 0.75 keep the full repulsion at half a bond length and none at three quarters of
one, for every pair: a molecule's bonds (O–H 0.97 Å, C–C 1.53 Å) are left alone while its
atoms cannot fall onto each other.
"""

from __future__ import annotations

import torch
from ase.data import covalent_radii
from ase.units import Bohr

from mlpot.data.graph import EDGE_INDEX, NUMBERS, Graph, edge_vectors
from mlpot.models.arguments import Elements, NonNegative, Positive
from mlpot.models.base import EnergyModel
from mlpot.nn.electrostatics import COULOMB_CONSTANT

ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
ZBL_LENGTH = 0.8854 * Bohr  # Å


def smooth_switch(r: torch.Tensor, onset, cutoff) -> torch.Tensor:
    """1 for ``r <= onset``, 0 for ``r >= cutoff``, ``1 - 10x³ + 15x⁴ - 6x⁵`` between (C²);
    ``onset`` and ``cutoff`` are numbers or tensors shaped like ``r``."""
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
        cutoff: distance (Å) where the repulsion has vanished; with ``covalent``, the
            fraction of each pair's covalent-radius sum.
        onset: distance (Å, or fraction with ``covalent``) where the switch-off starts
            (default ``cutoff / 2``).
        covalent: ``onset`` and ``cutoff`` scale with each pair's covalent-radius sum; the
            term's own cutoff is then ``cutoff`` times the largest sum of its elements.
    """

    name = "zbl"

    def __init__(
        self,
        elements: Elements,
        cutoff: Positive = 2.0,
        onset: NonNegative | None = None,
        covalent: bool = False,
    ):
        onset = float(onset if onset is not None else 0.5 * cutoff)
        if not 0 <= onset < cutoff:
            raise ValueError(f"need 0 <= onset < cutoff, got onset={onset}, cutoff={cutoff}")
        radii = torch.tensor(covalent_radii, dtype=torch.float64)  # (119,) Å
        reach = cutoff * float(2 * radii[list(elements)].max()) if covalent else cutoff
        super().__init__(elements, reach, onset=onset, covalent=bool(covalent))
        self._config["cutoff"] = float(cutoff)  # the argument; a fraction with covalent
        self.onset, self.switch_cutoff, self.covalent = onset, float(cutoff), bool(covalent)
        self.register_buffer("radii", radii, persistent=False)

    def forward(self, graph: Graph) -> torch.Tensor:
        r = torch.linalg.vector_norm(edge_vectors(graph), dim=-1)  # (E,)
        i, j = graph[EDGE_INDEX]
        numbers = graph[NUMBERS]
        scale = (  # (E,) or 1: the pair's length unit, Å
            (self.radii[numbers[i]] + self.radii[numbers[j]]).to(r.dtype) if self.covalent else 1.0
        )
        onset, cutoff = self.onset * scale, self.switch_cutoff * scale
        inside = r < cutoff
        safe = torch.where(inside, r, cutoff * torch.ones_like(r))
        pair = zbl_pair_energy(safe, numbers[i], numbers[j]) * smooth_switch(safe, onset, cutoff)
        pair = torch.where(inside, pair, torch.zeros_like(pair))  # (E,)
        return r.new_zeros(numbers.shape[0]).index_add(0, i, 0.5 * pair)  # (N,)
