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


def _g5_coefficients(
    zetas: tuple[int, ...], lambdas: tuple[int, ...], max_order: int
) -> torch.Tensor:
    """Coefficient of ``P_n`` in ``G5(ζ, λ)``, ``2^(1-ζ) C(ζ, n) λ^n``, ``(orders, Z)``
    with one column per ``(ζ, λ)``, ζ major."""
    coeff = torch.zeros(max_order + 1, len(zetas) * len(lambdas), dtype=torch.float64)
    for col, (zeta, lam) in enumerate((z, lam) for z in zetas for lam in lambdas):
        for n in range(int(zeta) + 1):
            coeff[n, col] = 2.0 ** (1 - zeta) * math.comb(int(zeta), n) * lam**n
    return coeff


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
        if not 0 <= radial_min < cutoff:
            raise ValueError(f"need 0 <= radial_min < cutoff, got {radial_min} and {cutoff}")
        self.cutoff = float(cutoff)
        self.angular_cutoff = float(angular_cutoff or cutoff)
        if self.angular_cutoff > self.cutoff:
            raise ValueError("angular_cutoff must not exceed cutoff")
        self.species = SpeciesIndex(elements)
        self._register_radial(radial_min, radial_count, angular_etas)
        max_order = int(max(zetas))
        self._register_monomials(max_order)
        coeff = _g5_coefficients(zetas, lambdas, max_order)
        self.register_buffer("g5_coefficients", coeff, persistent=False)
        n_pairs = self._register_pairs(len(elements))
        self.n_radial = len(elements) * radial_count
        self.n_combos = coeff.shape[1]
        self.n_angular = n_pairs * len(angular_etas) * coeff.shape[1]
        self.n_features = self.n_radial + self.n_angular

    def _register_radial(
        self, radial_min: float, radial_count: int, angular_etas: tuple[float, ...]
    ) -> None:
        """G2 centres and width, G5 widths (the saved hyper-parameters)."""
        cutoff = self.cutoff
        shifts = torch.linspace(radial_min, cutoff, radial_count + 1, dtype=torch.float64)[:-1]
        spacing = (cutoff - radial_min) / radial_count
        self.register_buffer("radial_shifts", shifts)
        self.register_buffer("radial_eta", torch.tensor(0.5 / spacing**2, dtype=torch.float64))
        self.register_buffer("angular_etas", torch.tensor(angular_etas, dtype=torch.float64))

    def _register_monomials(self, max_order: int) -> None:
        """The weighted monomials up to ``max_order``, their lowering to derivatives, and
        the range of rows of each order."""
        exponents, weights, orders = _monomial_table(max_order)
        self.register_buffer("exponents", exponents, persistent=False)
        self.register_buffer("monomial_weights", weights, persistent=False)
        self.register_buffer("monomial_orders", orders.to(torch.float64), persistent=False)
        # ∂m/∂u_c of a monomial of order n is a monomial of order n - 1:
        # ∂m_k/∂u_c = Σ_l m_l(u) lowering[l, k, c] over the monomials l of orders < max order
        n_lower = int((orders < max_order).sum())
        index = {tuple(e): row for row, e in enumerate(exponents.tolist())}
        lowering = torch.zeros(n_lower, len(orders), 3, dtype=torch.float64)
        for row, e in enumerate(exponents.tolist()):
            for c in range(3):
                if e[c] > 0:
                    low = index[tuple(x - (d == c) for d, x in enumerate(e))]
                    lowering[low, row, c] = e[c] * weights[row] / weights[low]
        self.register_buffer("monomial_lowering", lowering.flatten(1), persistent=False)
        order_onehot = torch.nn.functional.one_hot(orders, max_order + 1).to(torch.float64)
        self.register_buffer("order_onehot", order_onehot, persistent=False)  # (M, K)
        counts = torch.bincount(orders).tolist()  # monomials are ordered by order
        ends = torch.cumsum(torch.tensor(counts), 0).tolist()
        self.order_ranges = [(end - n, end) for n, end in zip(counts, ends, strict=True)]

    def _register_pairs(self, n_species: int) -> int:
        """Index tables of the unordered neighbour-species pairs; returns their number."""
        pairs = [(a, b) for a in range(n_species) for b in range(a, n_species)]
        self.register_buffer("pair_a", torch.tensor([p[0] for p in pairs]), persistent=False)
        self.register_buffer("pair_b", torch.tensor([p[1] for p in pairs]), persistent=False)
        self.register_buffer(
            "pair_same", torch.tensor([p[0] == p[1] for p in pairs]), persistent=False
        )
        pair_of = [
            pairs.index((min(a, b), max(a, b))) for a in range(n_species) for b in range(n_species)
        ]
        self.register_buffer("pair_of_species_pair", torch.tensor(pair_of), persistent=False)
        self.register_buffer(
            "same_pair_of_species",
            torch.tensor([pairs.index((a, a)) for a in range(n_species)]),
            persistent=False,
        )
        return len(pairs)

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
        if torch.jit.is_tracing():  # a traced model (export): one chunk of any length
            return [[vectors]] + [[x] for x in per_edge]
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
        monomials = self._monomials(unit)  # (C, M)
        moments.index_add_(0, slot, radial[:, :, None] * monomials[:, None, :])
        self_term.index_add_(0, slot, radial * radial)

    def _monomials(self, unit: torch.Tensor) -> torch.Tensor:
        """Weighted monomials ``(C, M)`` of unit vectors ``(C, 3)``."""
        k = self.order_onehot.shape[1]
        powers = torch.stack([unit**p for p in range(k)], dim=-1)  # (C, 3, K)
        return (
            powers[:, 0].index_select(1, self.exponents[:, 0])
            * powers[:, 1].index_select(1, self.exponents[:, 1])
            * powers[:, 2].index_select(1, self.exponents[:, 2])
            * self.monomial_weights
        )

    # ---- explicit vector-Jacobian products for a batch of cotangents -------------------
    #
    # The derivatives of ``K`` scalar functions of the features (the heads of a shallow
    # ensemble) need ``K`` backward passes. Through autograd (batched with vmap) each repeats
    # the whole per-edge chain of elementwise derivatives. Written out, everything that does
    # not depend on the cotangent (the per-edge factors of the edge terms' derivatives) is
    # built once, in the same pass as the densities, and the ``K`` cotangents meet it in a
    # few batched products.

    def density_cotangents(
        self, densities: Densities, cotangent: torch.Tensor
    ) -> DensityCotangents:
        """``∂f_k/∂(densities)`` for ``K`` cotangents ``∂f_k/∂(features) (N, K, F)``, in the
        layout :meth:`position_strain_vjp` contracts without copies.

        G5 is bilinear in the moments: with ``W_st`` the cotangent of the pair of neighbour
        species ``(s, t)`` (either order), ``∂f/∂M_s = Σ_t W_st M_t`` per monomial order,
        one small matrix product per order; the self term enters with ``-1/2``.
        """
        n_atoms, k = cotangent.shape[:2]
        n_species, n_eta = self.species.n_species, self.angular_etas.shape[0]
        n_radial = self.radial_shifts.shape[0]
        c_g2 = cotangent[..., : self.n_radial].reshape(n_atoms, k, n_species, n_radial)
        c_g5 = cotangent[..., self.n_radial :].reshape(n_atoms, k, -1, n_eta, self.n_combos)
        c_by_order = c_g5 @ self.g5_coefficients.T  # (N, K, P, A, orders)
        c_self = -0.5 * c_by_order.index_select(2, self.same_pair_of_species).sum(-1)
        # W (N, A, order, S, K, T): the batch (N, A) of (S·K, T) matrices per order
        pair_cotangent = c_by_order.index_select(2, self.pair_of_species_pair)
        pair_cotangent = pair_cotangent.view(n_atoms, k, n_species, n_species, n_eta, -1)
        pair_cotangent = pair_cotangent.permute(0, 4, 5, 2, 1, 3).contiguous()
        moments = densities.moments.view(n_atoms, n_species, n_eta, -1)
        moments = moments.transpose(1, 2).contiguous()  # (N, A, T, M)
        batch = n_atoms * n_eta
        by_order = []
        for order, (first, last) in enumerate(self.order_ranges):
            lhs = pair_cotangent[:, :, order].view(batch, n_species * k, n_species)
            rhs = moments[..., first:last].reshape(batch, n_species, last - first)
            by_order.append(torch.bmm(lhs, rhs))  # (N·A, S·K, monomials of the order)
        c_moments = torch.cat(by_order, dim=-1).view(n_atoms, n_eta, n_species, k, -1)
        rows = n_atoms * n_species
        return DensityCotangents(
            c_moments.transpose(1, 2).reshape(rows, n_eta, k, -1),
            torch.cat([c_g2.transpose(1, 2), c_self.transpose(1, 2)], dim=-1).reshape(rows, k, -1),
        )

    def densities_and_derivatives(
        self, graph: Graph, vectors: torch.Tensor, members: int
    ) -> tuple[Densities, list[EdgeDerivatives]]:
        """:meth:`densities` (no autograd) and, per chunk of edges, the factors of the edge
        terms' derivatives that :meth:`position_strain_vjp` contracts with ``members``
        cotangents (chunked as it will be, so both passes share the per-edge work).

        The terms are G2 ``g(r)``, G5 moments ``R_η(r) m(u)`` and self terms ``R_η(r)²``.
        With ``u = v/r``: ``∂r/∂v = u`` and ``∂m(u)/∂v = (∇_u m - n m u)/r`` for a monomial
        ``m`` of order ``n`` (Euler: ``u·∇_u m = n m``), so every term's derivative is a
        part along ``u`` plus, for the moments, ``R_η ∇_u m / r``.
        """
        n_rows = graph[NUMBERS].shape[0] * self.species.n_species
        n_eta, n_monomials = self.angular_etas.shape[0], self.order_onehot.shape[0]
        g2 = vectors.new_zeros(n_rows, self.radial_shifts.shape[0])
        moments = vectors.new_zeros(n_rows, n_eta, n_monomials)
        self_term = vectors.new_zeros(n_rows, n_eta)
        derivatives = []
        width = n_eta * members * n_monomials
        chunks = self._chunks(vectors, self.edge_slots(graph), width=width)
        for vec, slot in zip(*chunks, strict=True):
            r = torch.linalg.vector_norm(vec, dim=-1)  # (C,)
            unit = vec / r[:, None]
            fc, fc_slope = cosine_cutoff(r, self.cutoff), cosine_cutoff_slope(r, self.cutoff)
            offset = r[:, None] - self.radial_shifts  # (C, R)
            gauss = torch.exp(-self.radial_eta * offset**2)
            g2.index_add_(0, slot, gauss * fc[:, None])
            g2_slope = gauss * (fc_slope[:, None] - 2.0 * self.radial_eta * offset * fc[:, None])
            if self.angular_cutoff < self.cutoff:
                fc = cosine_cutoff(r, self.angular_cutoff)
                fc_slope = cosine_cutoff_slope(r, self.angular_cutoff)
            agauss = torch.exp(-self.angular_etas * (r * r)[:, None])  # (C, A)
            radial = agauss * fc[:, None]
            radial_slope = agauss * (
                fc_slope[:, None] - 2.0 * self.angular_etas * r[:, None] * fc[:, None]
            )
            monomials = self._monomials(unit)  # (C, M)
            moments.index_add_(0, slot, radial[:, :, None] * monomials[:, None, :])
            self_term.index_add_(0, slot, radial * radial)
            derivatives.append(
                EdgeDerivatives(
                    unit=unit,
                    others_along=torch.cat([g2_slope, 2.0 * radial * radial_slope], dim=1),
                    radial_over_r=radial / r[:, None],
                    radial_slope=radial_slope,
                    monomials=monomials,
                )
            )
        return Densities(g2, moments, self_term), derivatives

    def position_strain_vjp(
        self,
        graph: Graph,
        vectors: torch.Tensor,
        cotangent: DensityCotangents,
        derivatives: list[EdgeDerivatives],
        *,
        strain: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """From :meth:`density_cotangents` and the edge factors of
        :meth:`densities_and_derivatives` to ``∂f_k/∂x (K, N, 3)`` and, with ``strain``,
        ``∂f_k/∂ε (K, S, 3, 3)`` for the symmetric strain of
        :func:`~mlpot.physics.derivatives.strained_graph`."""
        centre, neighbour = graph[EDGE_INDEX]
        n_eta, k, n_monomials = cotangent.moments.shape[1:]
        n_lower = self.monomial_lowering.shape[0]
        d_positions = vectors.new_zeros(graph[NUMBERS].shape[0], k, 3)
        d_strain = vectors.new_zeros(graph[N_ATOMS].shape[0], k, 3, 3) if strain else None
        edge_structure = graph[BATCH].index_select(0, centre) if strain else centre
        chunks = self._chunks(
            vectors,
            self.edge_slots(graph),
            centre,
            neighbour,
            edge_structure,
            width=cotangent.moments[0].numel(),  # the gathered moment rows are the largest
        )
        for vec, slot, i, j, s, f in zip(*chunks, derivatives, strict=True):
            # Σ_η of the moments' cotangents weighted by R_η/r and by R_η' (C, K, M): one
            # η at a time, so the gathered rows reuse one buffer
            for eta in range(n_eta):
                rows = cotangent.moments[:, eta].index_select(0, slot)  # (C, K, M)
                weight = f.radial_over_r[:, eta, None, None]
                slope = f.radial_slope[:, eta, None, None]
                if eta == 0:
                    by_radial, by_slope = rows * weight, rows * slope
                else:
                    by_radial.addcmul_(rows, weight)
                    by_slope.addcmul_(rows, slope)
            c_others = cotangent.others.index_select(0, slot)  # (C, K, R + A)
            along = torch.bmm(c_others, f.others_along[:, :, None])  # (C, K, 1)
            along = along + torch.bmm(by_slope, f.monomials[:, :, None])
            along = along - torch.bmm(by_radial, (self.monomial_orders * f.monomials)[:, :, None])
            # R_η ∇_u m / r: the gradients are lower-order monomials (monomial_lowering)
            gradients = f.monomials[:, :n_lower] @ self.monomial_lowering  # (C, M·3)
            tangential = torch.bmm(by_radial, gradients.view(-1, n_monomials, 3))
            d_vec = along * f.unit[:, None, :] + tangential  # (C, K, 3)
            d_positions.index_add_(0, j, d_vec).index_add_(0, i, -d_vec)
            if strain:  # v -> v (1 + ε): ∂f/∂ε_ab = Σ_e v_a ∂f/∂v_b, symmetrised
                d_strain.index_add_(0, s, vec[:, None, :, None] * d_vec[:, :, None, :])
        if strain:
            d_strain = 0.5 * (d_strain + d_strain.transpose(-1, -2))
            d_strain = d_strain.transpose(0, 1)
        return d_positions.transpose(0, 1), d_strain


class DensityCotangents(NamedTuple):
    """Cotangents of the densities for ``K`` functions, one row per (atom, neighbour
    species): ``moments (N·S, A, K, M)`` and ``others (N·S, K, R + A)`` (G2, self terms)."""

    moments: torch.Tensor
    others: torch.Tensor


class EdgeDerivatives(NamedTuple):
    """Per-edge factors of the edge terms' derivatives (:meth:`ACSF.densities_and_derivatives`):
    ``unit (C, 3)``; the G2 and self terms' slopes ``others_along (C, R + A)``; the G5
    radial factors over ``r`` and their slopes ``(C, A)``; ``monomials (C, M)``."""

    unit: torch.Tensor
    others_along: torch.Tensor
    radial_over_r: torch.Tensor
    radial_slope: torch.Tensor
    monomials: torch.Tensor


class Densities(NamedTuple):
    """Sums over edges, one row per (atom, neighbour species): ``g2 (N·S, R)``, G5
    ``moments (N·S, A, M)`` and their ``self_term (N·S, A)`` (Σ_j R_η(r_ij)²)."""

    g2: torch.Tensor
    moments: torch.Tensor
    self_term: torch.Tensor
