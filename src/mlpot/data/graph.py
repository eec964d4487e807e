"""The graph container every model reads: a plain dict of tensors under named keys.

Shapes (``S`` structures, ``N`` atoms, ``E`` directed edges, all structures of a batch
stacked together):

=================  ===============  ==========================================================
key                shape            meaning
=================  ===============  ==========================================================
``POSITIONS``      ``(N, 3)``       Cartesian positions, Å
``NUMBERS``        ``(N,)``         atomic numbers (int64)
``CELL``           ``(S, 3, 3)``    cell vectors as rows, Å (zeros for a free molecule)
``PBC``            ``(S, 3)``       periodic directions (bool)
``EDGE_INDEX``     ``(2, E)``       ``(i, j)``: centre atom ``i``, neighbour ``j``, batch-global
``CELL_SHIFTS``    ``(E, 3)``       integer image offsets of ``j`` (in units of cell vectors)
``BATCH``          ``(N,)``         structure index of each atom (int64)
``N_ATOMS``        ``(S,)``         atoms per structure (int64)
=================  ===============  ==========================================================

Labels, when known, travel in the same dict: ``ENERGY (S,)`` eV, ``FORCES (N, 3)`` eV/Å,
``STRESS (S, 3, 3)`` eV/Å³ with ``STRESS_MASK (S,)`` (True where a stress label exists).

The edge vector ``r_ij = x_j - x_i + shift_ij @ cell`` is *not* stored: models call
:func:`edge_vectors` inside their forward pass, so derivatives with respect to a strain of
positions and cell (stress) include the periodic images.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from mlpot.data.neighbors import neighbor_list
from mlpot.errors import MlpotInputError

Graph = dict[str, torch.Tensor]

POSITIONS = "positions"
NUMBERS = "numbers"
CELL = "cell"
PBC = "pbc"
EDGE_INDEX = "edge_index"
CELL_SHIFTS = "cell_shifts"
BATCH = "batch"
N_ATOMS = "n_atoms"

ENERGY = "energy"
FORCES = "forces"
STRESS = "stress"
STRESS_MASK = "stress_mask"

_PER_ATOM = (POSITIONS, NUMBERS, FORCES)
_PER_STRUCTURE = (CELL, PBC, N_ATOMS, ENERGY, STRESS, STRESS_MASK)


def atoms_to_graph(
    atoms: Atoms,
    cutoff: float,
    *,
    dtype: torch.dtype = torch.float64,
    elements: list[int] | None = None,
    source: str = "structure",
    frame: int | None = None,
) -> Graph:
    """Build the graph of one structure (no labels).

    ``elements``, when given, is the model's list of atomic numbers: any other element is a
    clear error naming ``source`` and ``frame``.
    """
    numbers = np.asarray(atoms.numbers)
    if len(numbers) == 0:
        raise MlpotInputError("structure has no atoms", source=source, frame=frame)
    if elements is not None:
        unknown = sorted(set(numbers.tolist()) - set(elements))
        if unknown:
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in elements)
            raise MlpotInputError(
                f"element(s) {names} not supported by this model (it knows {known})",
                source=source,
                frame=frame,
                field="numbers",
            )
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise MlpotInputError(
            "positions contain NaN or inf", source=source, frame=frame, field="positions"
        )
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    edges, shifts = neighbor_list(positions, cell, pbc, cutoff, source=source, frame=frame)
    return {
        POSITIONS: torch.as_tensor(positions, dtype=dtype),
        NUMBERS: torch.as_tensor(numbers, dtype=torch.long),
        CELL: torch.as_tensor(cell, dtype=dtype).unsqueeze(0),
        PBC: torch.as_tensor(pbc).unsqueeze(0),
        EDGE_INDEX: torch.as_tensor(edges, dtype=torch.long),
        CELL_SHIFTS: torch.as_tensor(shifts, dtype=dtype),
        BATCH: torch.zeros(len(numbers), dtype=torch.long),
        N_ATOMS: torch.tensor([len(numbers)], dtype=torch.long),
    }


def collate(graphs: list[Graph]) -> Graph:
    """Stack single-structure graphs into one batch graph (edge indices offset)."""
    if not graphs:
        raise ValueError("collate() needs at least one graph")
    keys = graphs[0].keys()
    out: Graph = {}
    offsets = torch.cumsum(torch.tensor([0] + [int(g[N_ATOMS].sum()) for g in graphs]), 0)
    for key in keys:
        if key == EDGE_INDEX:
            out[key] = torch.cat([g[key] + offsets[k] for k, g in enumerate(graphs)], dim=1)
        elif key == BATCH:
            counts = torch.cat([g[N_ATOMS] for g in graphs])
            out[key] = torch.repeat_interleave(torch.arange(len(counts)), counts)
        else:
            out[key] = torch.cat([g[key] for g in graphs], dim=0)
    return out


def graph_to(graph: Graph, device: torch.device | str, dtype: torch.dtype | None = None) -> Graph:
    """Move a graph to a device, casting floating tensors to ``dtype`` when given."""
    out = {}
    for key, value in graph.items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.to(device)
    return out


def edge_vectors(graph: Graph) -> torch.Tensor:
    """Edge vectors ``r_ij = x_j - x_i + shift_ij @ cell``, shape ``(E, 3)``, Å.

    Computed from the (possibly strained) positions and cell in the graph, so autograd
    through it yields exact forces and stress.
    """
    i, j = graph[EDGE_INDEX]
    cell = graph[CELL]
    # One structure: no per-edge copy of the cell (a traced model takes the general path,
    # which holds for any number of structures).
    if cell.shape[0] == 1 and not torch.jit.is_tracing():
        offsets = graph[CELL_SHIFTS] @ cell[0]  # (E, 3)
    else:
        cell_per_edge = cell[graph[BATCH][i]]  # (E, 3, 3)
        offsets = torch.einsum("ek,ekl->el", graph[CELL_SHIFTS], cell_per_edge)  # (E, 3)
    positions = graph[POSITIONS]  # index_select: its backward is one index_add
    return positions.index_select(0, j) - positions.index_select(0, i) + offsets
