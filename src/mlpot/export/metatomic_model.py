"""An mlpot model as a metatomic ``AtomisticModel`` (TorchScript) for LAMMPS, i-PI, TorchSim
and ASE.

The mlpot model itself is *traced* (:func:`torch.jit.trace`) into a function ``graph ->
member per-atom energies (K, N)`` (``K = 1`` for a single model); its data-dependent
shapes (the neighbour-slot width of ``mpnn``, the chunking of edges in ACSF) switch to
traceable code paths while tracing, and :func:`mlpot.export.check.check_export` compares the
result with the eager model before a file is kept. Around it, :class:`MetatomicPotential`
is plain TorchScript: it turns metatomic ``System`` objects and their neighbour lists into
mlpot's graph (edge vectors recomputed from positions and cell, so that the engine's
autograd through positions and strain gives forces and stress, periodic images included)
and the energies into metatomic outputs:

* ``energy`` (eV), per system or per atom; with ``selected_atoms`` (domain decomposition
  in LAMMPS) only the selected atoms' energies count;
* for an ensemble model (committee, shallow ensemble, LLPR): ``energy_uncertainty`` (eV),
  the members' standard deviation (Bessel's correction) times the checkpoint's calibrated
  energy scale, per system from the members' total energies, per atom from their atomic
  energies; and ``energy_ensemble`` (eV, one property per member), the members spread
  about their mean by the same scale, so their standard deviation is the uncertainty.
"""

# No ``from __future__ import annotations``: metatomic and TorchScript read the annotations
# of ``forward`` as objects.
from typing import Dict, List, Optional  # noqa: UP035 - TorchScript reads these annotations

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System

from mlpot.models.base import EnergyModel


class MemberEnergies(torch.nn.Module):
    """``graph -> (K, N)``: every member's per-atom energies (``K = 1``: a single model)."""

    def __init__(self, model: EnergyModel) -> None:
        super().__init__()
        self.model = model
        self.ensemble = model.n_members > 0

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.ensemble:
            return self.model.member_energies(graph)  # (K, N)
        return self.model(graph)[None, :]  # (1, N)


def _column(n: int, device: torch.device) -> torch.Tensor:
    """Label values ``0 .. n-1`` as one column ``(n, 1)`` of int32."""
    return torch.arange(n, dtype=torch.int32, device=device).reshape(-1, 1)


def _system_block(values: torch.Tensor, n_systems: int, name: str) -> TensorMap:
    """Per-system values ``(S, P)`` as a metatomic output."""
    device = values.device
    samples = Labels(["system"], _column(n_systems, device))
    properties = Labels([name], _column(values.shape[1], device))
    block = TensorBlock(values=values, samples=samples, components=[], properties=properties)
    keys = Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device))
    return TensorMap(keys, [block])


def _atom_block(values: torch.Tensor, samples: torch.Tensor, name: str) -> TensorMap:
    """Per-atom values ``(n, P)`` with their ``(system, atom)`` samples as an output."""
    device = values.device
    properties = Labels([name], _column(values.shape[1], device))
    block = TensorBlock(
        values=values,
        samples=Labels(["system", "atom"], samples),
        components=[],
        properties=properties,
    )
    keys = Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device))
    return TensorMap(keys, [block])


class MetatomicPotential(torch.nn.Module):
    """The metatomic model interface around traced member energies (module docstring).

    Args:
        energies: the traced ``graph -> (K, N)`` member energies.
        cutoff: the model's cutoff, Å (one full neighbour list of that radius).
        ensemble: whether the rows are ensemble members (else one row, a single model).
        energy_scale: calibrated factor of the members' standard deviation.
    """

    def __init__(
        self, energies: torch.nn.Module, cutoff: float, ensemble: bool, energy_scale: float
    ) -> None:
        super().__init__()
        self.energies = energies
        self.neighbors = NeighborListOptions(cutoff=cutoff, full_list=True, strict=True)
        self.ensemble = ensemble
        self.energy_scale = energy_scale

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:  # noqa: UP006
        return [self.neighbors]

    def forward(
        self,
        systems: List[System],  # noqa: UP006
        outputs: Dict[str, ModelOutput],  # noqa: UP006
        selected_atoms: Optional[Labels],  # noqa: UP045
    ) -> Dict[str, TensorMap]:  # noqa: UP006
        results: Dict[str, TensorMap] = {}  # noqa: UP006
        if len(systems) == 0:
            return results
        positions: List[torch.Tensor] = []  # noqa: UP006
        numbers: List[torch.Tensor] = []  # noqa: UP006
        cells: List[torch.Tensor] = []  # noqa: UP006
        pbcs: List[torch.Tensor] = []  # noqa: UP006
        edges: List[torch.Tensor] = []  # noqa: UP006
        shifts: List[torch.Tensor] = []  # noqa: UP006
        counts: List[int] = []  # noqa: UP006
        offset = 0
        for system in systems:
            pairs = system.get_neighbor_list(self.neighbors).samples.values.to(torch.int64)
            positions.append(system.positions)
            numbers.append(system.types.to(torch.int64))
            cells.append(system.cell)
            pbcs.append(system.pbc)
            edges.append(pairs[:, :2].T + offset)
            shifts.append(pairs[:, 2:5].to(system.positions.dtype))
            counts.append(len(system))
            offset += len(system)
        device = systems[0].positions.device
        n_atoms = torch.tensor(counts, dtype=torch.int64, device=device)
        n_systems = len(systems)
        batch = torch.repeat_interleave(torch.arange(n_systems, device=device), n_atoms)
        graph: Dict[str, torch.Tensor] = {  # noqa: UP006
            "positions": torch.cat(positions),
            "numbers": torch.cat(numbers),
            "cell": torch.stack(cells),
            "pbc": torch.stack(pbcs),
            "edge_index": torch.cat(edges, dim=1),
            "cell_shifts": torch.cat(shifts),
            "batch": batch,
            "n_atoms": n_atoms,
        }
        members = self.energies(graph)  # (K, N)
        starts = torch.cumsum(n_atoms, 0) - n_atoms
        atom_in_system = torch.arange(offset, device=device) - starts[batch]
        samples = torch.stack([batch, atom_in_system], dim=1)  # (N, 2)
        if selected_atoms is not None:
            chosen = selected_atoms.values.to(torch.int64)
            keep = starts[chosen[:, 0]] + chosen[:, 1]
            members, batch, samples = members[:, keep], batch[keep], samples[keep]
        samples = samples.to(torch.int32)

        mean = members.mean(0)  # (n,)
        if "energy" in outputs:
            if outputs["energy"].sample_kind == "atom":
                results["energy"] = _atom_block(mean[:, None], samples, "energy")
            else:
                total = mean.new_zeros(n_systems).index_add(0, batch, mean)
                results["energy"] = _system_block(total[:, None], n_systems, "energy")
        if self.ensemble and "energy_uncertainty" in outputs:
            if outputs["energy_uncertainty"].sample_kind == "atom":
                spread = self.energy_scale * members.std(0)  # (n,)
                results["energy_uncertainty"] = _atom_block(spread[:, None], samples, "energy")
            else:
                # float64 sums of the atoms' deviations from the mean, as
                # mlpot.physics.ensemble.energy_deviation: float32 totals round them away
                deviation = members.double() - members.double().mean(0)  # (K, n)
                totals = deviation.new_zeros(members.shape[0], n_systems)
                totals = totals.index_add(1, batch, deviation)  # (K, S)
                spread = (self.energy_scale * totals.std(0)).to(members.dtype)  # (S,)
                results["energy_uncertainty"] = _system_block(spread[:, None], n_systems, "energy")
        if self.ensemble and "energy_ensemble" in outputs:
            scaled = mean[None, :] + self.energy_scale * (members - mean[None, :])  # (K, n)
            if outputs["energy_ensemble"].sample_kind == "atom":
                results["energy_ensemble"] = _atom_block(scaled.T, samples, "energy")
            else:
                totals = scaled.new_zeros(scaled.shape[0], n_systems)
                totals = totals.index_add(1, batch, scaled)  # (K, S)
                results["energy_ensemble"] = _system_block(totals.T, n_systems, "energy")
        return results
