"""An mlpot model as a TorchSim model: many systems advanced at once, one batched
evaluation per step (``pip install 'mlpot[torchsim]'``).

TorchSim's own metatomic wrapper needs metatrain in the releases for Python 3.11, so mlpot
implements TorchSim's model interface directly: each call builds the neighbour lists of the
systems (vesin), stacks them into one graph, and takes energies, forces (exact gradients)
and stress (3D-periodic systems) from one forward and one backward pass of the eager model.
A delta-learned checkpoint is refused: its baseline is an ASE calculator, one structure at a
time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch_sim.models.interface import ModelInterface

from mlpot.data.graph import (
    BATCH,
    CELL,
    CELL_SHIFTS,
    EDGE_INDEX,
    N_ATOMS,
    NUMBERS,
    PBC,
    POSITIONS,
    Graph,
    collate,
)
from mlpot.data.neighbors import neighbor_list
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict


class TorchSimModel(ModelInterface):
    """TorchSim's model interface on an mlpot energy model.

    Args:
        model: the energy model.
        device, dtype: where and in which precision it runs (float64 by default).
        compute_stress: give the stress (eV/Å³, ASE's sign) of periodic systems.
        max_atoms: the most atoms in one evaluation; a larger batch of systems is evaluated
            in consecutive parts. On a CPU the cost per atom of ``mpnn`` is lowest near
            1000-2000 atoms per evaluation and three times higher at 8000 (arrays leave the
            caches; bench/torchsim_md.py), so the default there is 1024; on a GPU, None
            (everything at once).
    """

    def __init__(
        self,
        model: EnergyModel,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        compute_stress: bool = True,
        max_atoms: int | None | str = "auto",
    ) -> None:
        super().__init__()
        if max_atoms == "auto":
            max_atoms = 1024 if torch.device(device).type == "cpu" else None
        self.max_atoms = max_atoms
        self._device, self._dtype = torch.device(device), dtype
        self._compute_forces, self._compute_stress = True, compute_stress
        self._memory_scales_with = "n_atoms_x_density"
        self.model = model.to(device=self._device, dtype=dtype).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> TorchSimModel:
        from mlpot.models.checkpoint import load_checkpoint, model_from_payload

        payload = load_checkpoint(path)
        if payload.get("baseline") is not None:
            raise MlpotInputError(
                "a delta-learned model's baseline is an ASE calculator: run it through "
                "load_calculator instead",
                source=str(path),
                field="baseline",
            )
        return cls(model_from_payload(payload, source=str(path)), **kwargs)

    def graphs(self, state) -> list[Graph]:
        """One graph per system of a TorchSim state (neighbour lists on the CPU)."""
        positions = state.positions.detach()
        cells = state.row_vector_cell.detach()  # (S, 3, 3), vectors as rows
        n_systems = cells.shape[0]
        unknown = sorted(set(state.atomic_numbers.unique().tolist()) - set(self.model.elements))
        if unknown:
            raise MlpotInputError(
                f"atomic numbers {unknown} are not elements of this model "
                f"(it knows {self.model.elements})",
                source="TorchSim state",
                field="atomic_numbers",
            )
        counts = torch.bincount(state.system_idx, minlength=n_systems).tolist()
        pbc = np.array([bool(state.pbc)] * 3)
        device, dtype = self._device, self._dtype
        out, start = [], 0
        for s, n in enumerate(counts):
            atoms = slice(start, start + n)
            edge_index, shift = neighbor_list(
                positions[atoms].cpu().double().numpy(),
                cells[s].cpu().double().numpy(),
                pbc,
                self.model.cutoff,
                source="TorchSim state",
                frame=s,
            )
            out.append(
                {
                    POSITIONS: positions[atoms].to(device, dtype),
                    NUMBERS: state.atomic_numbers[atoms].to(device, torch.long),
                    CELL: cells[s : s + 1].to(device, dtype),
                    PBC: torch.tensor([[bool(state.pbc)] * 3], device=device),
                    EDGE_INDEX: torch.as_tensor(edge_index, dtype=torch.long, device=device),
                    CELL_SHIFTS: torch.as_tensor(shift, device=device, dtype=dtype),
                    BATCH: torch.zeros(n, dtype=torch.long, device=device),
                    N_ATOMS: torch.tensor([n], dtype=torch.long, device=device),
                }
            )
            start += n
        return out

    def forward(self, state, **kwargs) -> dict[str, torch.Tensor]:
        stress = self._compute_stress and bool(state.pbc)
        parts: dict[str, list[torch.Tensor]] = {"energy": [], "forces": [], "stress": []}
        for chunk in self._chunks(self.graphs(state)):
            out = predict(self.model, collate(chunk), forces=True, stress=stress)
            parts["energy"].append(out[outputs.ENERGY])
            parts["forces"].append(out[outputs.FORCES])
            if stress:
                parts["stress"].append(out[outputs.STRESS])
        return {key: torch.cat(values) for key, values in parts.items() if values}

    def _chunks(self, graphs: list[Graph]) -> list[list[Graph]]:
        """Consecutive systems in evaluations of at most ``max_atoms`` atoms (one system
        at least; all at once when ``max_atoms`` is None)."""
        if self.max_atoms is None:
            return [graphs]
        chunks, current, size = [], [], 0
        for graph in graphs:
            n = int(graph[N_ATOMS][0])
            if current and size + n > self.max_atoms:
                chunks.append(current)
                current, size = [], 0
            current.append(graph)
            size += n
        return chunks + [current] if current else chunks
