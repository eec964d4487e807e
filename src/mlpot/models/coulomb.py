"""The fixed-charge Coulomb energy term, with range separation.

Range separation
----------------
The Coulomb kernel is split with a Gaussian smearing ``σ`` (Å)::

    1/r = erf(r / (√2 σ)) / r  +  erfc(r / (√2 σ)) / r
          \\_ long range, smooth _/   \\_ short range, decays like exp(-r²/2σ²) _/

The long-range term carries **only** the smooth part ``erf(r/√2σ)/r`` summed over every
pair and every periodic image (the interaction of unit Gaussian charges of width ``σ`` with
point charges), without the self-interaction of an atom with its own Gaussian. In a cell it
is a pure reciprocal-space sum: no real-space neighbour sum is computed. The short-range
part ``erfc(r/√2σ)/r`` is left to the learned short-range model, which sees it as part of
the local remainder it must learn; with ``σ <= r_c / 5`` it is below ``erfc(3.5) ≈ 7e-7``
of the bare Coulomb at the short-range cutoff ``r_c``, so the learned model can represent
it and nothing is counted twice.

``range_separated=False`` gives the full (unsplit) Coulomb energy for tests against
Madelung constants and brute-force sums: for cells, the Ewald real-space sum
``erfc(r/√2σ)/r`` over the graph's edges (the term's cutoff, default ``8σ``, where
``erfc(8/√2) ≈ 1e-15``) is added to the reciprocal part.

The sums themselves (reciprocal space through torch-pme, slabs, free molecules) are in
:mod:`mlpot.nn.electrostatics`.

The energy of atom ``i`` is ``ε_i = ½ q_i φ_i`` with the electrostatic potential ``φ_i`` at
atom ``i``. Units: charges in ``e``, distances in Å, energies in eV (``k_e = 14.3996 eV Å /
e²``).
"""

from __future__ import annotations

import math

import torch

from mlpot.data.graph import BATCH, NUMBERS, PBC, POSITIONS, Graph
from mlpot.models.arguments import (
    Elements,
    Fraction,
    InterpolationNodes,
    NonNegative,
    Positive,
    Real,
    SumMethod,
)
from mlpot.models.base import EnergyModel
from mlpot.nn.electrostatics import (
    COULOMB_CONSTANT,
    batch_long_range_potential,
    short_range_potential,
    structure_slices,
)
from mlpot.nn.reciprocal import LongRangeSettings
from mlpot.nn.species import SpeciesIndex


class Coulomb(EnergyModel):
    """Electrostatic energy of fixed per-element charges, ``ε_i = ½ k_e q_i φ_i`` (eV).

    Args:
        elements: atomic numbers.
        charges: charge of each element in ``e``, in the order of ``elements``.
        smearing: range-separation width ``σ``, Å.
        range_separated: True (default) for the smooth long-range part only, to be added to
            a learned short-range model; False for the full Coulomb energy.
        cutoff: real-space cutoff of the full Coulomb sum in cells, Å (default ``8σ``);
            unused (0) when range separated.
        method, accuracy, lr_wavelength, mesh_spacing, interpolation_nodes: see
            :class:`~mlpot.nn.reciprocal.LongRangeSettings`.
    """

    name = "coulomb"

    def __init__(
        self,
        elements: Elements,
        charges: list[Real],
        smearing: Positive = 1.0,
        range_separated: bool = True,
        cutoff: NonNegative | None = None,
        method: SumMethod = "ewald",
        lr_wavelength: Positive | None = None,
        mesh_spacing: Positive | None = None,
        interpolation_nodes: InterpolationNodes = 5,
        accuracy: Fraction | None = None,
    ) -> None:
        if len(charges) != len(elements):
            raise ValueError(f"{len(charges)} charges for {len(elements)} elements")
        if range_separated:
            cutoff = 0.0
        elif cutoff is None:
            cutoff = 8.0 * float(smearing)
        order = sorted(range(len(elements)), key=lambda k: elements[k])
        super().__init__(
            elements,
            cutoff,
            charges=[float(charges[k]) for k in order],
            smearing=float(smearing),
            range_separated=bool(range_separated),
            method=method,
            lr_wavelength=lr_wavelength,
            mesh_spacing=mesh_spacing,
            interpolation_nodes=int(interpolation_nodes),
            accuracy=accuracy,
        )
        self.settings = LongRangeSettings(
            smearing, method, lr_wavelength, mesh_spacing, interpolation_nodes, accuracy
        )
        self.range_separated = bool(range_separated)
        self.species = SpeciesIndex(self.elements)
        self.register_buffer(
            "element_charges", torch.tensor(self._config["charges"], dtype=torch.float64)
        )

    def charges(self, graph: Graph) -> torch.Tensor:
        """Per-atom charges ``(N,)`` in e."""
        return self.element_charges[self.species(graph[NUMBERS])].to(graph[POSITIONS].dtype)

    def potential(self, graph: Graph, charges: torch.Tensor) -> torch.Tensor:
        """Electrostatic potential at each atom ``(N,)``, V (eV/e)."""
        phi = batch_long_range_potential(graph, charges, self.settings)
        if not self.range_separated:
            phi = phi + self._short_range_part(graph, charges)
        return COULOMB_CONSTANT * phi

    def _short_range_part(self, graph: Graph, charges: torch.Tensor) -> torch.Tensor:
        """The erfc part that completes the full Coulomb sum (direct for molecules)."""
        periodic = graph[PBC].any(dim=1)[graph[BATCH]]  # (N,)
        sr = short_range_potential(graph, charges, self.settings.smearing, self.cutoff)
        sr = torch.where(periodic, sr, torch.zeros_like(sr))
        parts = []  # free molecules: the direct erfc sum over all pairs, no cutoff
        for s, atoms in enumerate(structure_slices(graph)):
            if bool(graph[PBC][s].any()):
                parts.append(torch.zeros_like(charges[atoms]))
                continue
            x = graph[POSITIONS][atoms]
            n = x.shape[0]
            off = ~torch.eye(n, dtype=torch.bool, device=x.device)
            r2 = ((x[:, None] - x[None]) ** 2).sum(-1)
            r = torch.sqrt(torch.where(off, r2, torch.ones_like(r2)))
            kernel = torch.erfc(r / (math.sqrt(2.0) * self.settings.smearing)) / r
            parts.append(torch.where(off, kernel, torch.zeros_like(kernel)) @ charges[atoms])
        return sr + torch.cat(parts)

    def forward(self, graph: Graph) -> torch.Tensor:
        q = self.charges(graph)  # (N,)
        return 0.5 * q * self.potential(graph, q)  # (N,)
