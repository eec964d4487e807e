"""Map atomic numbers to contiguous species indices 0..n_species-1."""

from __future__ import annotations

import torch


class SpeciesIndex(torch.nn.Module):
    """Lookup table ``Z -> index``; unknown elements map to -1 (checked at the data boundary)."""

    def __init__(self, elements: list[int]) -> None:
        super().__init__()
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.as_tensor(elements, dtype=torch.long)] = torch.arange(len(elements))
        self.register_buffer("table", table, persistent=False)
        self.n_species = len(elements)

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.table[numbers]
