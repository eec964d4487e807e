"""Atom-centred symmetry functions (Behler), computed in torch.

Radial ``G2`` per neighbour element ``B``::

    G2_i[B, k] = Σ_{j∈B} exp(-η_k (r_ij - r_k)²) f_c(r_ij)

Angular ``G5`` per unordered neighbour-element pair ``(A, B)`` (each unordered pair of
neighbours counted once)::

    G5_i[AB, η, ζ, λ] = 2^(1-ζ) Σ_{j∈A, k∈B} (1 + λ cos θ_jik)^ζ
                        exp(-η (r_ij² + r_ik²)) f_c(r_ij) f_c(r_ik)

``G5`` is evaluated without enumerating triplets: expanding ``(1 + λ cos θ)^ζ`` in powers
``cos^n θ = (u_j · u_k)^n`` and writing ``(u_j · u_k)^n`` as the inner product of the
symmetric tensor powers ``u^{⊗n}`` (stored as ``(n+1)(n+2)/2`` weighted monomials) turns
the double sum over neighbours into the square of a single sum. The cost is linear in the
number of neighbours, not quadratic, and the result is identical to the triplet sum.
"""

from __future__ import annotations

import math

import torch

from mlpot.data.graph import EDGE_INDEX, NUMBERS, Graph, edge_vectors
from mlpot.nn.cutoff import cosine_cutoff
from mlpot.nn.species import SpeciesIndex

EDGE_CHUNK_BYTES = 4 * 2**20  # largest per-edge temporary of the angular terms
MIN_EDGE_CHUNK = 1024


def _monomial_table(max_order: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exponents ``(M, 3)``, weights ``(M,)`` and orders ``(M,)`` of the weighted monomials.

    ``Σ_m w_m² u^{a_m} v^{a_m} = (u · v)^n`` summed over the monomials of order ``n``.
    """
    exponents, weights, orders = [], [], []
    for n in range(max_order + 1):
        for a in range(n, -1, -1):
            for b in range(n - a, -1, -1):
                c = n - a - b
                exponents.append((a, b, c))
                multinomial = math.factorial(n) / (
                    math.factorial(a) * math.factorial(b) * math.factorial(c)
                )
                weights.append(math.sqrt(multinomial))
                orders.append(n)
    return (
        torch.tensor(exponents, dtype=torch.long),
        torch.tensor(weights, dtype=torch.float64),
        torch.tensor(orders, dtype=torch.long),
    )


class ACSF(torch.nn.Module):
    """Radial G2 and angular G5 symmetry functions per element (pair), shape ``(N, F)``.

    Args:
        elements: atomic numbers of the species.
        cutoff: radial cutoff ``r_c``, Å.
        radial_count: number of G2 Gaussians, centres evenly spaced from ``radial_min`` to
            ``r_c``, width equal to their spacing.
        radial_min: first G2 centre, Å.
        angular_cutoff: cutoff of the G5 terms, Å (defaults to ``cutoff``).
        angular_etas: G5 widths ``η``, Å⁻².
        zetas: G5 angular resolutions ``ζ`` (positive integers).
        lambdas: G5 signs ``λ`` (each +1 or -1).
    """

    def __init__(
        self,
        elements: list[int],
        cutoff: float,
        radial_count: int = 12,
        radial_min: float = 0.5,
        angular_cutoff: float | None = None,
        angular_etas: tuple[float, ...] = (0.005, 0.03, 0.1),
        zetas: tuple[int, ...] = (1, 2, 4),
        lambdas: tuple[int, ...] = (1, -1),
    ) -> None:
        super().__init__()
        if any(int(z) != z or z < 1 for z in zetas):
            raise ValueError(f"zetas must be positive integers, got {zetas}")
        if any(lam not in (1, -1) for lam in lambdas):
            raise ValueError(f"lambdas must be +1 or -1, got {lambdas}")
        self.cutoff = float(cutoff)
        self.angular_cutoff = float(angular_cutoff or cutoff)
        if self.angular_cutoff > self.cutoff:
            raise ValueError("angular_cutoff must not exceed cutoff")
        self.species = SpeciesIndex(elements)
        n_species = len(elements)

        shifts = torch.linspace(radial_min, cutoff, radial_count + 1, dtype=torch.float64)[:-1]
        spacing = (cutoff - radial_min) / radial_count
        self.register_buffer("radial_shifts", shifts)
        self.register_buffer("radial_eta", torch.tensor(0.5 / spacing**2, dtype=torch.float64))
        self.register_buffer("angular_etas", torch.tensor(angular_etas, dtype=torch.float64))

        max_order = int(max(zetas))
        exponents, weights, orders = _monomial_table(max_order)
        self.register_buffer("exponents", exponents, persistent=False)
        self.register_buffer("monomial_weights", weights, persistent=False)
        order_onehot = torch.nn.functional.one_hot(orders, max_order + 1).to(torch.float64)
        self.register_buffer("order_onehot", order_onehot, persistent=False)  # (M, K)
        # coefficient of P_n in G5(ζ, λ): 2^(1-ζ) C(ζ, n) λ^n
        coeff = torch.zeros(max_order + 1, len(zetas) * len(lambdas), dtype=torch.float64)
        for col, (zeta, lam) in enumerate((z, lam) for z in zetas for lam in lambdas):
            for n in range(int(zeta) + 1):
                coeff[n, col] = 2.0 ** (1 - zeta) * math.comb(int(zeta), n) * lam**n
        self.register_buffer("g5_coefficients", coeff, persistent=False)
        pairs = [(a, b) for a in range(n_species) for b in range(a, n_species)]
        self.register_buffer("pair_a", torch.tensor([p[0] for p in pairs]), persistent=False)
        self.register_buffer("pair_b", torch.tensor([p[1] for p in pairs]), persistent=False)
        self.register_buffer(
            "pair_same", torch.tensor([p[0] == p[1] for p in pairs]), persistent=False
        )
        self.n_radial = n_species * radial_count
        self.n_angular = len(pairs) * len(angular_etas) * coeff.shape[1]
        self.n_features = self.n_radial + self.n_angular

    def forward(self, graph: Graph) -> torch.Tensor:
        numbers = graph[NUMBERS]
        n_atoms = numbers.shape[0]
        n_species = self.species.n_species
        vectors = edge_vectors(graph)  # (E, 3)
        centre, neighbour = graph[EDGE_INDEX]
        slot = centre * n_species + self.species(numbers)[neighbour]  # (E,)

        # per-edge terms are summed into per-(atom, neighbour element) accumulators
        n_eta = self.angular_etas.shape[0]
        n_monomials = self.order_onehot.shape[0]
        g2 = vectors.new_zeros(n_atoms * n_species, self.radial_shifts.shape[0])
        moments = vectors.new_zeros(n_atoms * n_species, n_eta, n_monomials)
        self_term = vectors.new_zeros(n_atoms * n_species, n_eta)
        # Edges go through in chunks so that no per-edge temporary (the largest is
        # (chunk, A, M)) exceeds EDGE_CHUNK_BYTES: large systems then reuse the same heap
        # blocks every step instead of page-faulting fresh memory, and the cost per atom
        # stays flat (bench/inference_scaling.py). ``split`` keeps the backward one cat.
        edge_bytes = vectors.element_size() * n_eta * n_monomials
        chunk = max(MIN_EDGE_CHUNK, EDGE_CHUNK_BYTES // edge_bytes)
        for vec, slot_c in zip(vectors.split(chunk), slot.split(chunk), strict=True):
            self._accumulate(vec, slot_c, g2, moments, self_term)

        moments = moments.view(n_atoms, n_species, n_eta, -1)  # (N, S, A, M)
        self_term = self_term.view(n_atoms, n_species, n_eta)
        pair_a = moments.index_select(1, self.pair_a)  # (N, P, A, M)
        products = pair_a * moments.index_select(1, self.pair_b)  # (N, P, A, M)
        by_order = products @ self.order_onehot  # (N, P, A, K): Σ_jk g_j g_k cos^n θ_jk
        same = self.pair_same[None, :, None, None]
        by_order = torch.where(
            same, 0.5 * (by_order - self_term.index_select(1, self.pair_a)[..., None]), by_order
        )  # unordered pairs j != k
        g5 = by_order @ self.g5_coefficients  # (N, P, A, Z)
        return torch.cat([g2.view(n_atoms, -1), g5.reshape(n_atoms, -1)], dim=1)  # (N, F)

    def _accumulate(
        self,
        vectors: torch.Tensor,
        slot: torch.Tensor,
        g2: torch.Tensor,
        moments: torch.Tensor,
        self_term: torch.Tensor,
    ) -> None:
        """Add the G2 terms, G5 moments and G5 self terms of some edges (in place)."""
        r = torch.linalg.vector_norm(vectors, dim=-1)  # (C,)
        fc = cosine_cutoff(r, self.cutoff)
        gauss = torch.exp(-self.radial_eta * (r[:, None] - self.radial_shifts) ** 2)  # (C, R)
        g2.index_add_(0, slot, gauss * fc[:, None])

        # angular G5 through weighted monomials of unit vectors
        if self.angular_cutoff < self.cutoff:
            keep = r < self.angular_cutoff
            vectors, r, slot = vectors[keep], r[keep], slot[keep]
        unit = vectors / r[:, None]  # (C, 3)
        radial = torch.exp(-self.angular_etas * (r * r)[:, None])  # (C, A)
        radial = radial * cosine_cutoff(r, self.angular_cutoff)[:, None]
        k = self.order_onehot.shape[1]
        powers = torch.stack([unit**p for p in range(k)], dim=-1)  # (C, 3, K)
        monomials = (
            powers[:, 0].index_select(1, self.exponents[:, 0])
            * powers[:, 1].index_select(1, self.exponents[:, 1])
            * powers[:, 2].index_select(1, self.exponents[:, 2])
            * self.monomial_weights
        )  # (C, M)
        moments.index_add_(0, slot, radial[:, :, None] * monomials[:, None, :])
        self_term.index_add_(0, slot, radial * radial)
