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
from typing import NamedTuple

import torch

from mlpot.data.graph import BATCH, EDGE_INDEX, N_ATOMS, NUMBERS, Graph, edge_vectors
from mlpot.nn.cutoff import cosine_cutoff, cosine_cutoff_slope
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
        # monomials and their gradients as products of three powers u_d^e, picked by flat
        # index d·(K+1) + e from the (C, 3·(K+1)) table of powers; the gradient's
        # coefficient w_m a_{m,c} multiplies Π_d u_d^(a_{m,d} - δ_cd)
        axis = torch.arange(3) * (max_order + 1)
        self.register_buffer("monomial_index", axis + exponents, persistent=False)  # (M, 3)
        lowered = (exponents[None] - torch.eye(3, dtype=torch.long)[:, None, :]).clamp(min=0)
        self.register_buffer("monomial_grad_index", axis + lowered, persistent=False)  # (3, M, 3)
        self.register_buffer(
            "monomial_grad_weights", weights * exponents.T.to(torch.float64), persistent=False
        )  # (3, M)
        self.register_buffer("monomial_orders", orders.to(torch.float64), persistent=False)
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
        pair_weight = torch.tensor([0.5 if a == b else 1.0 for a, b in pairs], dtype=torch.float64)
        self.register_buffer("pair_weight", pair_weight[:, None, None, None], persistent=False)
        self.register_buffer(
            "same_pair_of_species",
            torch.tensor([pairs.index((a, a)) for a in range(n_species)]),
            persistent=False,
        )
        self.n_radial = n_species * radial_count
        self.n_combos = coeff.shape[1]
        self.n_angular = len(pairs) * len(angular_etas) * coeff.shape[1]
        self.n_features = self.n_radial + self.n_angular

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.features_from_densities(self.densities(graph, edge_vectors(graph)))

    def edge_slots(self, graph: Graph) -> torch.Tensor:
        """Accumulator row of every edge ``(E,)``: centre atom × neighbour species."""
        centre, neighbour = graph[EDGE_INDEX]
        return centre * self.species.n_species + self.species(graph[NUMBERS])[neighbour]

    def densities(self, graph: Graph, vectors: torch.Tensor) -> Densities:
        """The per-(atom, neighbour species) sums over edges that the features are built of."""
        n_rows = graph[NUMBERS].shape[0] * self.species.n_species
        slot = self.edge_slots(graph)
        n_eta = self.angular_etas.shape[0]
        n_monomials = self.order_onehot.shape[0]
        g2 = vectors.new_zeros(n_rows, self.radial_shifts.shape[0])
        moments = vectors.new_zeros(n_rows, n_eta, n_monomials)
        self_term = vectors.new_zeros(n_rows, n_eta)
        # Edges go through in chunks so that no per-edge temporary (the largest is
        # (chunk, A, M)) exceeds EDGE_CHUNK_BYTES: large systems then reuse the same heap
        # blocks every step instead of page-faulting fresh memory, and the cost per atom
        # stays flat (bench/inference_scaling.py). ``split`` keeps the backward one cat.
        for vec, slot_c in zip(*self._chunks(vectors, slot), strict=True):
            self._accumulate(vec, slot_c, g2, moments, self_term)
        return Densities(g2, moments, self_term)

    def _chunks(self, vectors: torch.Tensor, *per_edge: torch.Tensor, width: int | None = None):
        """Edge tensors split into chunks whose largest per-edge temporary, ``width``
        numbers per edge (default: the angular moments), stays within EDGE_CHUNK_BYTES."""
        width = width or self.angular_etas.shape[0] * self.order_onehot.shape[0]
        chunk = max(MIN_EDGE_CHUNK, EDGE_CHUNK_BYTES // (vectors.element_size() * width))
        return [vectors.split(chunk)] + [x.split(chunk) for x in per_edge]

    def features_from_densities(self, densities: Densities) -> torch.Tensor:
        """Per-atom features ``(N, F)``: G2 as summed, G5 from products of the moments."""
        n_species = self.species.n_species
        n_atoms = densities.g2.shape[0] // n_species
        n_eta = self.angular_etas.shape[0]
        moments = densities.moments.view(n_atoms, n_species, n_eta, -1)  # (N, S, A, M)
        self_term = densities.self_term.view(n_atoms, n_species, n_eta)
        pair_a = moments.index_select(1, self.pair_a)  # (N, P, A, M)
        products = pair_a * moments.index_select(1, self.pair_b)  # (N, P, A, M)
        by_order = products @ self.order_onehot  # (N, P, A, K): Σ_jk g_j g_k cos^n θ_jk
        same = self.pair_same[None, :, None, None]
        by_order = torch.where(
            same, 0.5 * (by_order - self_term.index_select(1, self.pair_a)[..., None]), by_order
        )  # unordered pairs j != k
        g5 = by_order @ self.g5_coefficients  # (N, P, A, Z)
        return torch.cat([densities.g2.view(n_atoms, -1), g5.reshape(n_atoms, -1)], dim=1)

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

    # ---- explicit vector-Jacobian products for a batch of cotangents -------------------
    #
    # The derivatives of ``K`` scalar functions of the features (the heads of a shallow
    # ensemble) need ``K`` backward passes. Through autograd (batched with vmap) each repeats
    # the whole per-edge chain of elementwise derivatives. Written out, everything that does
    # not depend on the cotangent (the per-edge Jacobian of the edge terms) is built once and
    # the ``K`` cotangents meet it in one batched matrix product.

    def density_cotangents(self, densities: Densities, cotangent: torch.Tensor) -> torch.Tensor:
        """``∂f_k/∂(densities)`` for ``K`` cotangents ``∂f_k/∂(features) (N, K, F)``.

        One row per (atom, neighbour species), ``(N·S, K·R + A·K·M + K·A)``: the G2 block
        ``(K, R)``, the moment block ``(A, K, M)`` and the self-term block ``(K, A)``, the
        layout :meth:`position_strain_vjp` contracts without copies.
        """
        n_atoms, k = cotangent.shape[:2]
        n_species, n_eta = self.species.n_species, self.angular_etas.shape[0]
        n_radial = self.radial_shifts.shape[0]
        moments = densities.moments.view(n_atoms, n_species, n_eta, 1, -1)  # (N, S, A, 1, M)
        c_g2 = cotangent[..., : self.n_radial].reshape(n_atoms, k, n_species, n_radial)
        c_g5 = cotangent[..., self.n_radial :].reshape(n_atoms, k, -1, n_eta, self.n_combos)
        c_g5 = c_g5.permute(0, 2, 3, 1, 4)  # (N, P, A, K, Z)
        # same-species pairs count each unordered pair once and subtract the self term
        c_by_order = (c_g5 @ self.g5_coefficients.T) * self.pair_weight  # (N, P, A, K, K_order)
        c_self = -c_by_order.index_select(1, self.same_pair_of_species).sum(-1)  # (N, S, A, K)
        c_products = c_by_order @ self.order_onehot.T  # (N, P, A, K, M)
        c_moments = c_products.new_zeros(n_atoms, n_species, n_eta, k, moments.shape[-1])
        c_moments.index_add_(1, self.pair_a, c_products * moments.index_select(1, self.pair_b))
        c_moments.index_add_(1, self.pair_b, c_products * moments.index_select(1, self.pair_a))
        rows = n_atoms * n_species
        return torch.cat(
            [
                c_g2.transpose(1, 2).reshape(rows, -1),
                c_moments.view(rows, -1),
                c_self.transpose(-1, -2).reshape(rows, -1),
            ],
            dim=1,
        )

    def edge_derivatives(self, vectors: torch.Tensor) -> EdgeDerivatives:
        """The factors of the edge terms' derivatives with respect to the edge vectors.

        The terms are G2 ``g(r)``, G5 moments ``R_η(r) m(u)`` and self terms ``R_η(r)²``.
        With ``u = v/r``: ``∂r/∂v = u`` and ``∂m(u)/∂v = (∇_u m - n m u)/r`` for a monomial
        ``m`` of order ``n`` (Euler: ``u·∇_u m = n m``).
        """
        r = torch.linalg.vector_norm(vectors, dim=-1)  # (C,)
        unit = vectors / r[:, None]
        fc = cosine_cutoff(r, self.cutoff)
        fc_slope = cosine_cutoff_slope(r, self.cutoff)
        offset = r[:, None] - self.radial_shifts  # (C, R)
        gauss = torch.exp(-self.radial_eta * offset**2)
        g2_slope = gauss * (fc_slope[:, None] - 2.0 * self.radial_eta * offset * fc[:, None])
        afc = cosine_cutoff(r, self.angular_cutoff)
        afc_slope = cosine_cutoff_slope(r, self.angular_cutoff)
        agauss = torch.exp(-self.angular_etas * (r * r)[:, None])  # (C, A)
        radial = agauss * afc[:, None]
        radial_slope = agauss * (
            afc_slope[:, None] - 2.0 * self.angular_etas * r[:, None] * afc[:, None]
        )
        # powers u_d^e as rows (d·(K+1) + e, C): the monomials and their gradients are
        # products of three rows each, picked by row gathers
        n_powers = self.order_onehot.shape[1]
        powers = torch.stack([unit.T**p for p in range(n_powers)], dim=1).flatten(0, 1)
        picked = powers.index_select(0, self.monomial_index.T.flatten()).view(3, -1, r.shape[0])
        monomials = (picked[0] * picked[1] * picked[2]).T * self.monomial_weights  # (C, M)
        picked = powers.index_select(0, self.monomial_grad_index.permute(2, 0, 1).flatten())
        picked = picked.view(3, 3, -1, r.shape[0])  # (factor, component, M, C)
        gradients = picked[0] * picked[1] * picked[2] * self.monomial_grad_weights[:, :, None]
        return EdgeDerivatives(
            r,
            unit,
            g2_slope,
            radial,
            radial_slope,
            monomials,
            gradients.permute(2, 1, 0).contiguous(),
        )

    def position_strain_vjp(
        self, graph: Graph, vectors: torch.Tensor, cotangent: torch.Tensor, *, strain: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """From :meth:`density_cotangents` rows to ``∂f_k/∂x (K, N, 3)`` and, with
        ``strain``, ``∂f_k/∂ε (K, S, 3, 3)`` for the symmetric strain of
        :func:`~mlpot.physics.derivatives.strained_graph`. Edges go in chunks."""
        centre, neighbour = graph[EDGE_INDEX]
        n_radial, n_eta = self.radial_shifts.shape[0], self.angular_etas.shape[0]
        k = cotangent.shape[1] // (n_radial + n_eta * (self.order_onehot.shape[0] + 1))
        n_moment = n_eta * k * self.order_onehot.shape[0]
        d_positions = vectors.new_zeros(graph[NUMBERS].shape[0], k, 3)
        d_strain = vectors.new_zeros(graph[N_ATOMS].shape[0], k, 3, 3) if strain else None
        edge_structure = graph[BATCH].index_select(0, centre) if strain else centre
        chunks = self._chunks(
            vectors,
            self.edge_slots(graph),
            centre,
            neighbour,
            edge_structure,
            width=cotangent.shape[1],  # the gathered rows are the largest temporary
        )
        for vec, slot, i, j, s in zip(*chunks, strict=True):
            n_edges = vec.shape[0]
            f = self.edge_derivatives(vec)
            rows = cotangent.index_select(0, slot)  # (C, K·R + A·K·M + K·A)
            c_g2 = rows[:, : k * n_radial].view(n_edges, k, n_radial)
            c_moments = rows[:, k * n_radial : k * n_radial + n_moment].view(n_edges, n_eta, -1)
            c_self = rows[:, k * n_radial + n_moment :].view(n_edges, k, n_eta)
            # Σ_η c R_η and Σ_η c R_η' per (edge, member, monomial)
            weights = torch.stack([f.radial, f.radial_slope], dim=1)  # (C, 2, A)
            by_monomial = torch.bmm(weights, c_moments).view(n_edges, 2, k, -1)
            radial, slope = by_monomial[:, 0], by_monomial[:, 1]  # (C, K, M)
            along = torch.bmm(c_g2, f.g2_slope[:, :, None]) + torch.bmm(
                c_self, (2.0 * f.radial * f.radial_slope)[:, :, None]
            )  # (C, K, 1)
            euler = (self.monomial_orders / f.r[:, None])[:, None, :]  # n_m / r, (C, 1, M)
            along = along + ((slope - radial * euler) * f.monomials[:, None, :]).sum(
                -1, keepdim=True
            )
            tangential = torch.bmm(radial, f.monomial_gradients) / f.r[:, None, None]
            d_vec = along * f.unit[:, None, :] + tangential  # (C, K, 3)
            d_positions.index_add_(0, j, d_vec).index_add_(0, i, -d_vec)
            if strain:  # v -> v (1 + ε): ∂f/∂ε_ab = Σ_e v_a ∂f/∂v_b, symmetrised
                d_strain.index_add_(0, s, vec[:, None, :, None] * d_vec[:, :, None, :])
        if strain:
            d_strain = 0.5 * (d_strain + d_strain.transpose(-1, -2))
            d_strain = d_strain.transpose(0, 1)
        return d_positions.transpose(0, 1), d_strain


class EdgeDerivatives(NamedTuple):
    """Per-edge factors of the edge terms' derivatives (see :meth:`ACSF.edge_derivatives`):
    ``r (C,)``, ``unit (C, 3)``, G2 slopes ``dg/dr (C, R)``, G5 radial factors and slopes
    ``(C, A)``, ``monomials (C, M)`` and their gradients ``∂m/∂u (C, M, 3)``."""

    r: torch.Tensor
    unit: torch.Tensor
    g2_slope: torch.Tensor
    radial: torch.Tensor
    radial_slope: torch.Tensor
    monomials: torch.Tensor
    monomial_gradients: torch.Tensor


class Densities(NamedTuple):
    """Sums over edges, one row per (atom, neighbour species): ``g2 (N·S, R)``, G5
    ``moments (N·S, A, M)`` and their ``self_term (N·S, A)`` (Σ_j R_η(r_ij)²)."""

    g2: torch.Tensor
    moments: torch.Tensor
    self_term: torch.Tensor
