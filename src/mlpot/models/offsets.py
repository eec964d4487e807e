"""Per-element constant energies (isolated-atom or least-squares reference energies)."""

from __future__ import annotations

import torch

from mlpot.data.graph import NUMBERS, Graph
from mlpot.models.arguments import Elements, NonNegative, Real
from mlpot.models.base import EnergyModel
from mlpot.nn.species import SpeciesIndex


class AtomicOffsets(EnergyModel):
    """``ε_i = e[Z_i]``: one fixed energy (eV) per element, no cutoff, no parameters.

    Args:
        elements: atomic numbers.
        energies: energy of each element in eV, in the order of ``elements``.
    """

    name = "offsets"

    def __init__(self, elements: Elements, energies: list[Real], cutoff: NonNegative = 0.0) -> None:
        super().__init__(elements, cutoff, energies=[float(e) for e in energies])
        if len(energies) != len(self.elements):
            raise ValueError(f"{len(energies)} energies for {len(self.elements)} elements")
        order = sorted(range(len(elements)), key=lambda k: elements[k])
        self._config["energies"] = [float(energies[k]) for k in order]
        self.species = SpeciesIndex(self.elements)
        self.register_buffer(
            "energies", torch.tensor(self._config["energies"], dtype=torch.float64)
        )

    def set_energies(self, energies: list[float]) -> None:
        """New per-element energies, eV, in the order of ``elements``."""
        if len(energies) != len(self.elements):
            raise ValueError(f"{len(energies)} energies for {len(self.elements)} elements")
        self._config["energies"] = [float(e) for e in energies]
        self.energies.copy_(torch.as_tensor(self._config["energies"], dtype=torch.float64))

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.energies[self.species(graph[NUMBERS])].to(graph["positions"].dtype)  # (N,)
