"""Electrostatic sums for cells, slabs and molecules: the smooth long-range potential
``Σ_j q_j erf(r_ij/√2σ)/r_ij`` (all periodic images) and the Ewald real-space remainder.

Range separation and what the energy terms do with these sums:
:mod:`mlpot.models.coulomb` and :mod:`mlpot.models.charge_equilibration`.

Periodic cells (``method="ewald"`` or ``"pme"``) are summed in reciprocal space by
:mod:`mlpot.nn.reciprocal`; slabs add a correction to that sum, free molecules are summed
directly:

* **slab** (periodic in 2D, one non-periodic direction): the 3D sum of the cell with its
  vacuum, plus the slab correction of Yeh & Berkowitz (with the charged-slab terms of
  Ballenegger et al.) along the normal of the periodic plane. It is accurate when the
  vacuum is wide compared with the slab.
* **free molecule** (no periodicity): the direct ``O(N²)`` sum over all pairs.
"""

from __future__ import annotations

import math

import torch
from ase.units import Bohr, Hartree

from mlpot.data.graph import CELL, EDGE_INDEX, N_ATOMS, PBC, POSITIONS, Graph
from mlpot.data.graph import edge_vectors as _edge_vectors
from mlpot.errors import MlpotInputError
from mlpot.nn.reciprocal import LongRangeSettings, reciprocal_potential

#: Coulomb constant ``e² / (4π ε₀)`` in eV Å.
COULOMB_CONSTANT = Hartree * Bohr


def structure_slices(graph: Graph) -> list[slice]:
    """The atoms of each structure of a (collated, hence contiguous) batch graph."""
    counts = graph[N_ATOMS].tolist()
    starts = [0]
    for count in counts:
        starts.append(starts[-1] + int(count))
    return [slice(starts[s], starts[s + 1]) for s in range(len(counts))]


def _check_cell(cell: torch.Tensor, pbc: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Number of periodic directions and the volume; clear errors for unsupported cells."""
    n_periodic = int(pbc.sum())
    if n_periodic == 1:
        raise MlpotInputError(
            "electrostatics supports 3D-periodic cells, slabs (2D) and free molecules, "
            "not wires (periodic along one direction only)",
            field="pbc",
        )
    volume = torch.linalg.det(cell).abs()
    if n_periodic and not float(volume.detach()) > 1e-8:
        raise MlpotInputError(
            "electrostatics of a periodic structure needs a cell with a volume "
            "(for a slab: a cell vector across the vacuum)",
            field="cell",
        )
    return n_periodic, volume


def long_range_potential(
    charges: torch.Tensor,
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    settings: LongRangeSettings,
) -> torch.Tensor:
    """Smooth long-range potential ``φ_i = Σ_{j,n}' q_j erf(r/√2σ)/r`` of one structure.

    ``charges (n, C)`` (``C`` channels), ``positions (n, 3)`` Å, ``cell (3, 3)``, ``pbc
    (3,)``. Returns ``(n, C)`` in e/Å (times :data:`COULOMB_CONSTANT` for volts). The primed
    sum leaves out the atom's own Gaussian.
    """
    n_periodic, volume = _check_cell(cell, pbc)
    if n_periodic == 0:
        return _direct_sum(charges, positions, settings.smearing)
    phi = reciprocal_potential(charges, positions, cell, settings)
    if n_periodic == 2:
        phi = phi + _slab_correction(charges, positions, cell, pbc, volume)
    return phi


def coulomb_matrix(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, settings: LongRangeSettings
) -> torch.Tensor:
    """The dense long-range Coulomb matrix ``γ (n, n)`` of one structure, e/Å per e².

    ``φ = γ q`` is :func:`long_range_potential` *plus* each atom's own Gaussian
    (``γ_ii`` includes the self-energy ``√(2/π)/σ``), so ``γ`` is positive semi-definite on
    neutral charge vectors. Cells use the Ewald sphere of ``settings`` whatever its method
    (PME would need one mesh convolution per atom): ``γ = cos W cosᵀ + sin W sinᵀ - 2πσ²/V``
    with ``cos (n, K)``, one ``(n, K) @ (K, n)`` product.
    """
    n_periodic, volume = _check_cell(cell, pbc)
    sigma = settings.smearing
    n = positions.shape[0]
    eye = torch.eye(n, dtype=positions.dtype, device=positions.device)
    if n_periodic == 0:
        return _direct_sum(eye, positions, sigma) + math.sqrt(2.0 / math.pi) / sigma * eye
    kvectors, weights = settings.ewald_terms(cell)  # (K, 3), (K,)
    phase = positions @ kvectors.T  # (n, K)
    cos, sin = torch.cos(phase), torch.sin(phase)
    gamma = (cos * weights) @ cos.T + (sin * weights) @ sin.T  # (n, n)
    gamma = gamma - 2.0 * math.pi * sigma**2 / volume
    if n_periodic == 2:
        gamma = gamma + _slab_correction(eye, positions, cell, pbc, volume)
    return gamma


def _direct_sum(charges: torch.Tensor, positions: torch.Tensor, smearing: float) -> torch.Tensor:
    """``φ_i = Σ_{j≠i} q_j erf(r_ij/√2σ)/r_ij`` for a free molecule, ``(n, C)``."""
    n = positions.shape[0]
    diff = positions[:, None, :] - positions[None, :, :]  # (n, n, 3)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=positions.device)
    r2 = (diff**2).sum(-1)
    r = torch.sqrt(torch.where(off_diagonal, r2, torch.ones_like(r2)))  # (n, n)
    kernel = torch.erf(r / (math.sqrt(2.0) * smearing)) / r
    kernel = torch.where(off_diagonal, kernel, torch.zeros_like(kernel))
    return kernel @ charges  # (n, C)


def _slab_correction(charges, positions, cell, pbc, volume) -> torch.Tensor:
    """Potential of the slab (dipole) correction along the normal of the periodic plane.

    ``φ_i = (4π/V) (z_i M - ½ (M₂ + Q z_i²) - Q h²/12)`` with ``z`` the coordinate along the
    unit normal, ``M = Σ q z``, ``M₂ = Σ q z²``, ``Q = Σ q`` and ``h`` the cell height.
    """
    a, b = cell[pbc]  # the two periodic cell vectors
    normal = torch.linalg.cross(a, b)
    area = torch.linalg.vector_norm(normal)
    normal = normal / area
    z = (positions @ normal)[:, None]  # (n, 1)
    height = volume / area
    total = charges.sum(0)  # (C,)
    first = (charges * z).sum(0)
    second = (charges * z * z).sum(0)
    return (4.0 * math.pi / volume) * (
        z * first - 0.5 * (second + total * z * z) - total * height**2 / 12.0
    )


def short_range_potential(
    graph: Graph, charges: torch.Tensor, smearing: float, cutoff: float
) -> torch.Tensor:
    """Ewald real-space potential ``φ_i = Σ_{j (edges), r<r_c} q_j erfc(r/√2σ)/r``, ``(N,)``."""
    r = torch.linalg.vector_norm(_edge_vectors(graph), dim=-1)  # (E,)
    inside = r < cutoff
    safe = torch.where(inside, r, torch.ones_like(r))
    centre, neighbour = graph[EDGE_INDEX]
    kernel = torch.erfc(safe / (math.sqrt(2.0) * smearing)) / safe
    kernel = torch.where(inside, kernel, torch.zeros_like(kernel))
    out = charges.new_zeros(charges.shape[0])
    return out.index_add(0, centre, kernel * charges[neighbour])  # (N,)


def batch_long_range_potential(
    graph: Graph, charges: torch.Tensor, settings: LongRangeSettings
) -> torch.Tensor:
    """:func:`long_range_potential` of per-atom ``charges (N,)`` for every structure, ``(N,)``."""
    positions = graph[POSITIONS]
    parts = []
    for s, atoms in enumerate(structure_slices(graph)):
        cell = graph[CELL][s]
        pbc = graph[PBC][s].to(torch.bool)
        phi = long_range_potential(charges[atoms, None], positions[atoms], cell, pbc, settings)
        parts.append(phi[:, 0])
    return torch.cat(parts)  # (N,)
