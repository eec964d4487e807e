"""A Hessian without any oracle call: Lindh's model Hessian (R. Lindh, A. Bernhardsson,
G. Karlström, P.-Å. Malmqvist, Chem. Phys. Lett. 241, 423 (1995)).

Every bond stretch, bend and torsion of the molecule contributes a harmonic term whose
force constant decays with the distances involved, ``k ∏ ρ_ij`` with
``ρ_ij = exp(α_ij (r_ref,ij² − r_ij²))`` (bohr), the parameters by the rows of the periodic
table of ``i`` and ``j``. At the given geometry (taken as the model's minimum) the Cartesian
Hessian is ``Bᵀ K B``, ``B`` the Wilson matrix of the internal coordinates. It is what
quantum-chemistry optimisers start from: the right couplings and roughly the right
stiffness of stretches, bends and torsions, for the price of a few array operations. Used
here for normal-mode sampling of the initial data instead of a ``6N``-call oracle Hessian.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from ase import Atoms
from ase.units import Bohr, Hartree

# rows 1, 2, >= 3 of the periodic table
_ALPHA = np.array([[1.0, 0.3949, 0.3949], [0.3949, 0.28, 0.28], [0.3949, 0.28, 0.28]])
_R_REF = np.array([[1.35, 2.10, 2.53], [2.10, 2.87, 3.40], [2.53, 3.40, 3.40]])  # bohr
K_STRETCH, K_BEND, K_TORSION = 0.45, 0.15, 0.005  # Hartree/bohr², Hartree/rad²
SMALL = 1e-3  # terms whose ρ product is below this (relative to a bonded pair's ~1) are left out
LINEAR = np.deg2rad(175.0)  # bends beyond this have no well-defined angle derivative


def _row(z: int) -> int:
    return 0 if z <= 2 else 1 if z <= 10 else 2


def valence_hessian(atoms: Atoms) -> np.ndarray:
    """Lindh's model Hessian of ``atoms`` (a molecule), ``(3N, 3N)`` in eV/Å²."""
    positions = atoms.positions
    n = len(atoms)
    rows = np.array([_row(int(z)) for z in atoms.numbers])
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1) / Bohr
    alpha, r_ref = _ALPHA[rows[:, None], rows[None]], _R_REF[rows[:, None], rows[None]]
    rho = np.exp(alpha * (r_ref**2 - distance**2))
    np.fill_diagonal(rho, 0.0)
    near = [sorted(np.flatnonzero(rho[i] > SMALL).tolist()) for i in range(n)]

    x = torch.tensor(positions, dtype=torch.float64)
    terms: list[tuple[float, object]] = []
    for i, j in itertools.combinations(range(n), 2):
        if rho[i, j] > SMALL:
            terms.append((K_STRETCH * rho[i, j] * Hartree / Bohr**2, (i, j)))
    for j in range(n):
        for i, k in itertools.combinations(near[j], 2):
            weight = rho[i, j] * rho[j, k]
            if weight > SMALL and _angle(positions, i, j, k) < LINEAR:
                terms.append((K_BEND * weight * Hartree, (i, j, k)))
    for j in range(n):
        for k in near[j]:
            if k <= j:
                continue  # each central bond once
            for i in near[j]:
                for m in near[k]:
                    if len({i, j, k, m}) < 4:
                        continue
                    weight = rho[i, j] * rho[j, k] * rho[k, m]
                    if (
                        weight > SMALL
                        and max(_angle(positions, i, j, k), _angle(positions, j, k, m)) < LINEAR
                    ):
                        terms.append((K_TORSION * weight * Hartree, (i, j, k, m)))

    hessian = np.zeros((3 * n, 3 * n))
    for k, indices in terms:
        b = torch.autograd.functional.jacobian(lambda y, ix=indices: _internal(y, ix), x)
        b = b.reshape(-1).numpy()
        hessian += k * np.outer(b, b)
    return hessian


def _angle(positions: np.ndarray, i: int, j: int, k: int) -> float:
    a, b = positions[i] - positions[j], positions[k] - positions[j]
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def _internal(x: torch.Tensor, indices: tuple[int, ...]) -> torch.Tensor:
    """A bond length (Å), bend or torsion angle (rad) of positions ``x (N, 3)``."""
    if len(indices) == 2:
        i, j = indices
        return torch.linalg.norm(x[i] - x[j])
    if len(indices) == 3:
        i, j, k = indices
        a, b = x[i] - x[j], x[k] - x[j]
        return torch.atan2(torch.linalg.norm(torch.linalg.cross(a, b)), a @ b)
    i, j, k, m = indices
    b1, b2, b3 = x[j] - x[i], x[k] - x[j], x[m] - x[k]
    n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
    y = torch.linalg.cross(n1, n2) @ b2 / torch.linalg.norm(b2)
    return torch.atan2(y, n1 @ n2)
