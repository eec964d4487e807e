"""The single place where energies become forces, virial and stress.

Models return per-atom energies. :func:`predict` sums them per structure and takes exact
derivatives by autograd: forces with respect to positions, and virial/stress with respect
to a symmetric strain ``ε`` applied to positions *and* cell (``x -> x (1 + ε)``,
``h -> h (1 + ε)``), so periodic images move with the cell.
"""

from __future__ import annotations

import torch

from mlpot.data.graph import BATCH, CELL, N_ATOMS, POSITIONS, Graph
from mlpot.physics import outputs


def structure_sum(per_atom: torch.Tensor, graph: Graph) -> torch.Tensor:
    """Sum a per-atom quantity ``(N, ...)`` into per-structure ``(S, ...)``."""
    n_structures = graph[N_ATOMS].shape[0]
    out = per_atom.new_zeros((n_structures, *per_atom.shape[1:]))
    return out.index_add(0, graph[BATCH], per_atom)


def cell_volume(graph: Graph) -> torch.Tensor:
    """``|det(cell)|`` per structure, ``(S,)`` Å³ (zero for a free molecule)."""
    return torch.linalg.det(graph[CELL]).abs()


def strained_graph(graph: Graph, *, forces: bool, stress: bool) -> tuple[Graph, list[torch.Tensor]]:
    """A copy of ``graph`` set up for derivatives, and the autograd inputs to take them by.

    With ``forces`` the positions become a leaf; with ``stress`` a zero strain ``(S, 3, 3)``
    is a leaf too, and its symmetric part deforms positions and cell. Inputs come in that
    order: ``[positions][, strain]``.
    """
    graph = dict(graph)
    positions = graph[POSITIONS]
    inputs = []
    if forces:
        positions = positions.detach().requires_grad_(True)
        inputs.append(positions)
    if stress:
        n_structures = graph[N_ATOMS].shape[0]
        strain = positions.new_zeros((n_structures, 3, 3)).requires_grad_(True)
        inputs.append(strain)
        identity = torch.eye(3, dtype=positions.dtype, device=positions.device)
        deformation = identity + 0.5 * (strain + strain.transpose(1, 2))  # (S, 3, 3)
        graph[CELL] = torch.bmm(graph[CELL], deformation)
        positions = torch.einsum("ni,nij->nj", positions, deformation.index_select(0, graph[BATCH]))
    graph[POSITIONS] = positions
    return graph, inputs


def stress_from_strain_derivative(de_dstrain: torch.Tensor, graph: Graph) -> torch.Tensor:
    """``σ = (1/V) dE/dε`` for ``de_dstrain (..., S, 3, 3)``; zero where there is no volume."""
    volume = cell_volume(graph)  # (S,)
    safe = torch.where(volume > 0, volume, torch.ones_like(volume))[:, None, None]
    has_volume = (volume > 0)[:, None, None]
    return torch.where(has_volume, de_dstrain / safe, torch.zeros_like(de_dstrain))


def predict(
    model: torch.nn.Module,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Energy ``(S,)``, and on request forces ``(N, 3)``, virial and stress ``(S, 3, 3)``.

    ``create_graph=True`` keeps the derivative graph so a loss on forces or stress can be
    back-propagated (training). Stress is zero for structures without a volume.
    """
    graph, inputs = strained_graph(graph, forces=forces, stress=stress)
    local = model(graph)  # (N,)
    energy = structure_sum(local, graph)  # (S,)
    results = {outputs.ENERGY: energy, outputs.LOCAL_ENERGIES: local}
    if not inputs:
        return results if create_graph else _detached(results)

    if energy.requires_grad:
        grads = torch.autograd.grad(
            energy.sum(), inputs, create_graph=create_graph, allow_unused=True
        )
    else:  # an energy that does not depend on positions or cell
        grads = [None] * len(inputs)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]
    if forces:
        results[outputs.FORCES] = -grads[0]
    if stress:
        de_dstrain = grads[-1]  # (S, 3, 3)
        results[outputs.VIRIAL] = -de_dstrain
        results[outputs.STRESS] = stress_from_strain_derivative(de_dstrain, graph)
    return results if create_graph else _detached(results)


def _detached(results: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach() for key, value in results.items()}
