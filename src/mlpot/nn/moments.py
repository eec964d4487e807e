"""Edges laid out densely per centre atom, and atomic moments as batched matrix products.

A per-edge outer product followed by a scatter (``index_add``) would write and read an
``(E, C, M)`` array several times per forward pass, and more in the derivatives training
needs; on a CPU that memory traffic is most of the cost. Here the edges are laid out
densely per centre atom instead, ``(N, W, ·)`` with ``W`` the largest neighbour count, and
the empty slots hold a constant dummy edge longer than the cutoff (whose radial weights
vanish exactly). Edge features are computed in that layout once, and a sum over
neighbours ``T_i[p, c] = Σ_j b_p(u_ij) w_ij[c]`` of a per-edge basis ``b`` (``P``
functions, e.g. the harmonics) times per-edge channel weights becomes one batched matrix
product ``(N, P, W) @ (N, W, C)``, whose derivatives are batched products too: no
``(E, C, P)`` array is ever formed. The padding costs at most the spread of neighbour
counts: none in a crystal, about a third more edge work in a small organic molecule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NeighbourSlots:
    """Where each edge goes in the dense ``(N, W)`` layout.

    Attributes:
        index: ``(E,)`` flat position ``centre * width + slot`` of each edge.
        neighbours: ``(N, W)`` neighbour atom of each slot (atom 0 in empty slots).
    """

    index: torch.Tensor
    neighbours: torch.Tensor

    @property
    def n_atoms(self) -> int:
        """``N`` (read from the layout's shape, so a traced model keeps it symbolic)."""
        return self.neighbours.shape[0]

    @property
    def width(self) -> int:
        """``W``, the largest number of edges of one centre atom (0 without edges)."""
        return self.neighbours.shape[1]


def _dense_layout(
    centre: torch.Tensor, neighbour: torch.Tensor, atoms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    n_atoms = atoms.shape[0]
    counts = torch.bincount(centre, minlength=n_atoms)  # (N,)
    width = int(counts.max()) if centre.numel() > 0 else 0
    order = torch.argsort(centre, stable=True)  # (E,)
    starts = torch.cumsum(counts, 0) - counts  # (N,)
    rank = torch.arange(centre.numel(), device=centre.device) - starts[centre[order]]  # (E,)
    slot = torch.empty_like(rank).index_copy_(0, order, rank)  # (E,)
    index = centre * width + slot  # (E,)
    neighbours = torch.zeros(n_atoms * width, dtype=torch.long, device=centre.device)
    neighbours = neighbours.index_copy_(0, index, neighbour).view(n_atoms, width)  # (N, W)
    return index, neighbours


# The width W is data (the largest neighbour count): a traced model (export) calls the
# compiled layout so that W is computed for every structure instead of fixed at tracing.
_scripted_dense_layout = None


def neighbour_slots(
    centre: torch.Tensor, neighbour: torch.Tensor, atoms: torch.Tensor
) -> NeighbourSlots:
    """The dense layout of edges ``(E,)`` from ``centre`` to ``neighbour`` (any order), for
    the atoms of a per-atom tensor ``atoms (N, ...)`` (e.g. their species)."""
    if torch.jit.is_tracing():
        global _scripted_dense_layout
        if _scripted_dense_layout is None:
            _scripted_dense_layout = torch.jit.script(_dense_layout)
        return NeighbourSlots(*_scripted_dense_layout(centre, neighbour, atoms))
    return NeighbourSlots(*_dense_layout(centre, neighbour, atoms))


def pad_edges(values: torch.Tensor, slots: NeighbourSlots, fill: torch.Tensor) -> torch.Tensor:
    """Per-edge ``values (E, F)`` -> dense ``(N, W, F)``, ``fill (F,)`` in empty slots."""
    shape = (slots.n_atoms, slots.width, values.shape[1])
    flat = fill.expand(shape).reshape(-1, values.shape[1])  # (N*W, F)
    flat = flat.index_copy(0, slots.index, values)  # (N*W, F)
    return flat.view(slots.n_atoms, slots.width, values.shape[1])  # (N, W, F)


def atomic_moments(edge_basis: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``T[i, p, c] = Σ_w edge_basis[i, w, p] · weights[i, w, c]``: one batched product.

    Args:
        edge_basis: ``(N, W, P)`` per-slot basis (e.g. the harmonics).
        weights: ``(N, W, C)`` per-slot channel weights (e.g. radial x neighbour features).

    Returns:
        ``(N, P, C)``.
    """
    return torch.bmm(edge_basis.transpose(1, 2), weights)  # (N, P, C)
