"""Cartesian equivariant features up to rank 2, and their rotation-invariant contractions.

Edge directions ``u = r_ij / |r_ij|`` are expanded in Cartesian harmonics (the real
spherical harmonics up to normalisation), stored side by side in one axis of size
``M = 1 + 3 + 5`` (``l_max = 2``) or ``M = 4`` (``l_max = 1``)::

    Y_0 = 1,    Y_1 = √3 u,    Y_2[k] = √(15/2) <E_k, u uᵀ - I/3>,

with ``E_1..E_5`` an orthonormal (Frobenius) basis of traceless symmetric 3x3 matrices,
so that the sum of squares of each block is ``2l + 1``. Under a rotation or reflection
``Q`` the ``l = 1`` block transforms as a vector and the ``l = 2`` block as the matrix
``M(y) = Σ_k y_k E_k`` does (``M -> Q M Qᵀ``); dot products within a block, ``aᵀ M(y) a``
and ``tr(M M' M'')`` are therefore invariant, and even under inversion (each has an even
number of ``l = 1`` factors), so all contractions here are proper scalars.
"""

from __future__ import annotations

import math

import torch


def traceless_symmetric_basis(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The orthonormal basis ``E_k`` of traceless symmetric matrices, shape ``(5, 3, 3)``."""
    basis = torch.zeros(5, 3, 3, dtype=torch.float64)
    s2, s6 = math.sqrt(2.0), math.sqrt(6.0)
    basis[0, 0, 1] = basis[0, 1, 0] = 1.0 / s2  # xy
    basis[1, 1, 2] = basis[1, 2, 1] = 1.0 / s2  # yz
    basis[2, 0, 2] = basis[2, 2, 0] = 1.0 / s2  # xz
    basis[3, 0, 0], basis[3, 1, 1] = 1.0 / s2, -1.0 / s2  # x² - y²
    basis[4, 0, 0], basis[4, 1, 1], basis[4, 2, 2] = -1.0 / s6, -1.0 / s6, 2.0 / s6  # 3z² - r²
    return basis.to(dtype)


def harmonics_size(l_max: int) -> int:
    """Number of components ``M`` of the harmonics up to ``l_max`` (1 or 2)."""
    if l_max not in (1, 2):
        raise ValueError(f"l_max must be 1 or 2, got {l_max}")
    return (l_max + 1) ** 2


class CartesianHarmonics(torch.nn.Module):
    """``Y(u)`` of unit vectors ``(E, 3)`` -> ``(E, M)`` (dimensionless), see module doc."""

    def __init__(self, l_max: int = 2) -> None:
        super().__init__()
        self.l_max = l_max
        self.size = harmonics_size(l_max)
        # projection of the flattened u uᵀ onto the E_k, scaled so Σ_k Y_2[k]² = 5
        projection = traceless_symmetric_basis().reshape(5, 9).T * math.sqrt(7.5)  # (9, 5)
        self.register_buffer("projection", projection, persistent=False)

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        ones = unit.new_ones(unit.shape[0], 1)  # (E, 1)
        parts = [ones, math.sqrt(3.0) * unit]
        if self.l_max == 2:
            outer = (unit[:, :, None] * unit[:, None, :]).reshape(-1, 9)  # (E, 9)
            parts.append(outer @ self.projection)  # (E, 5)
        return torch.cat(parts, dim=1)  # (E, M)


class CartesianInvariants(torch.nn.Module):
    """Invariant contractions of two equivariant feature sets ``U``, ``V`` of shape
    ``(M, N, K)`` (components first, blocks as :class:`CartesianHarmonics`; ``N`` atoms,
    ``K`` channels), channel by channel. Output ``(N, n_invariants * K)``:

    * ``U_0`` (scalar), ``U_1 · V_1``, and for ``l_max = 2`` also
    * ``U_2 · V_2``, ``U_1ᵀ M(V_2) U_1`` and ``tr(M(U_2) M(U_2) M(V_2))``.

    If ``U`` and ``V`` are sums over neighbours (one neighbour per factor), these are
    2-, 3-, 3-, 4- and 4-body terms (centre included). All operations are elementwise over
    ``(N, K)`` (no batched 3x3 matrix products, which are slow on CPUs).
    """

    def __init__(self, l_max: int = 2) -> None:
        super().__init__()
        self.l_max = l_max
        self.n_invariants = 5 if l_max == 2 else 2
        basis = traceless_symmetric_basis().reshape(5, 9)
        self.register_buffer("matrices", basis.T.contiguous(), persistent=False)  # (9, 5)

    def matrix(self, y2: torch.Tensor) -> torch.Tensor:
        """``M(y)`` of ``(5, N, K)`` rank-2 components: ``(3, 3, N, K)``."""
        return (self.matrices @ y2.reshape(5, -1)).view(3, 3, *y2.shape[1:])  # (3, 3, N, K)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        u1, v1 = u[1:4], v[1:4]  # (3, N, K)
        out = [u[0], (u1 * v1).sum(0)]  # 2 x (N, K)
        if self.l_max == 2:
            u2, v2 = u[4:9], v[4:9]  # (5, N, K)
            mu, mv = self.matrix(u2), self.matrix(v2)  # (3, 3, N, K)
            mu_mu = (mu[:, :, None] * mu[None, :, :]).sum(1)  # (3, 3, N, K)
            out += [
                (u2 * v2).sum(0),
                (u1[:, None] * mv * u1[None, :]).sum((0, 1)),
                (mu_mu * mv).sum((0, 1)),  # tr(A B C) = Σ (A B) ∘ Cᵀ, C symmetric
            ]
        return torch.cat(out, dim=1)  # (N, n_invariants * K)
