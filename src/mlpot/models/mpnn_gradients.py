"""Exact forces of many read-outs of one mpnn at once: an explicit reverse pass.

The ``K`` members of a shallow mpnn (``K`` heads on the last layer) or of a last-layer
prediction-rigidity ensemble (``K`` shifted read-out weights) share the message-passing
body and differ only in the linear maps that read energies out of each layer's features.
Each member still needs its own vector-Jacobian product through the body. Autograd with
``K`` batched cotangents repeats the whole backward pass per member, including the
per-edge radial networks that dominate it (``W·H·C`` per atom and layer): on one CPU
thread eight members cost 4.3-4.8 single models' energy + forces on aspirin and 10-11 on
500 Cu atoms (``bench/cheap_uncertainty.py``).

Here the body is traced once, without autograd (:func:`trace_body`), keeping what the
reverse pass needs, and the reverse pass is written out once for all members, the member
axis ``K`` beside the channels in every array (:func:`pull_back`). The reverse pass is
linear in its cotangents, so everything that does not depend on them is computed once, in
the trace; only the multiply-adds scale with ``K``:

* the radial functions ``R_t(r)`` depend on an edge only through its length, so their
  derivative is one member-independent per-edge array ``R'_t = dR_t/dr`` (closed form, in
  the same matrix product as ``R_t``): a member's cotangent on ``R_t`` reaches ``r`` by a
  contraction over channels instead of a backward pass through the radial network;
* the atomic moments ``A = Yᵀ (R ⊙ h_j)`` pass their cotangents ``Ā`` on to the harmonics
  ``Y`` and the edge lengths ``r`` through one batched product per layer with the
  stacked ``[R ⊙ h_j, R' ⊙ h_j]`` ``(N, 2W, C) @ (N, C, M·K)``, accumulated over the layers
  (``Y`` is shared by all layers), so no ``(N, W, K, C)`` array is formed for them; only
  the neighbours' features (layers after the first) need ``(Y Ā) ⊙ R``, formed in blocks
  of atoms that stay in cache and scattered to the neighbours;
* the per-atom part of each layer (channel mixing, invariant products, update MLP) goes
  back in closed form: the trace keeps the activation slopes and the partial derivatives
  of the invariants (``V_1``, ``2 M(V_2) U_1``, ...), so that for all members together it
  is two matrix products of ``K·N`` rows, a dozen elementwise products and one batched
  product with the mixing matrices;
* the edge vectors get their cotangents from those on ``r`` and ``Y`` (closed-form
  derivatives of the Cartesian harmonics); positions and the symmetric strain from the
  edge vectors, as :func:`~mlpot.physics.derivatives.strained_graph` defines them.

The trace costs about 0.7 of one model's energy + forces (a forward pass, the radial
derivatives and the partial derivatives); each member adds about 0.1 on aspirin and
0.1-0.2 on 500 Cu atoms, most of it its products with the channel mixing and with the
moments' edge weights, which no member can share. ``energy_std + forces_std`` on one CPU
thread (``bench/cheap_uncertainty.py --cost-sizes 2,4,8``, aspirin and 500 Cu atoms):
2 members 1.0-1.1x, 4 members 1.1-1.3x, 8 members 1.5-1.6x (aspirin) and 2.1-2.3x (Cu);
with one autograd pass per member through the per-atom update (the previous version)
1.4-1.55x, 1.8-2.0x and 3.0-3.3x.

:func:`readout_gradients` puts these together for any set of per-layer read-out weights.
Evaluation only: the results are detached (no second derivatives), and the body must have
scalar features only (``vector_channels: 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mlpot.data.graph import BATCH, EDGE_INDEX, N_ATOMS, NUMBERS, Graph, edge_vectors
from mlpot.models.base import EnergyModel, MemberGradients
from mlpot.nn.cartesian import CartesianInvariants
from mlpot.nn.mlp import _activation_slope as activation_slope
from mlpot.nn.moments import NeighbourSlots, atomic_moments, neighbour_slots, pad_edges
from mlpot.nn.radial import polynomial_envelope

#: doubles per block of the neighbours' cotangents (2 MiB: the block stays in cache)
_BLOCK = 1 << 18


def mlp_forward(
    network: torch.nn.Sequential, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A network of linear layers and activations on ``x (N, F)``: its output and the slope
    ``σ'`` of every activation ``(N, width)``, for :func:`mlp_pull_back`."""
    slopes = []
    for layer in network:
        if not isinstance(layer, torch.nn.Linear):
            slopes.append(activation_slope(layer, x))
        x = layer(x)
    return x, slopes


def mlp_pull_back(
    network: torch.nn.Sequential, slopes: list[torch.Tensor], cotangents: torch.Tensor
) -> torch.Tensor:
    """``K`` cotangents ``(N, K, out)`` of the network's output to its input ``(N, K, in)``
    (``slopes`` from :func:`mlp_forward`)."""
    g, slopes = cotangents, list(slopes)
    for layer in reversed(network):
        if isinstance(layer, torch.nn.Linear):
            g = g @ layer.weight  # (N, K, in)
        else:
            g = g * slopes.pop()[:, None, :]  # (N, K, width)
    return g


@dataclass
class UpdateTrace:
    """What the reverse pass of one layer's per-atom update needs.

    Attributes:
        mixing: ``(2, M, K', C)`` the transposed channel mixings of each harmonic component
            into ``U`` and ``V``; with element mixing ``(S, 2, M, K', C)``, one per element.
        partials: ``(half, components, invariant, ∂I/∂x)``: the invariant ``I``'s partial
            derivative ``(n, N, 1, K')`` (None: 1) with respect to the components
            ``components`` of the mixed tensors ``U`` (half 0) or ``V`` (half 1).
        update: the update MLP, and ``slopes``, its activations' slopes.
        species: ``(N,)`` species index of each atom (used with element mixing).
    """

    mixing: torch.Tensor
    partials: list[tuple[int, slice, int, torch.Tensor | None]]
    update: torch.nn.Sequential
    slopes: list[torch.Tensor]
    species: torch.Tensor


@dataclass
class LayerTrace:
    """One message-passing layer of a traced forward pass.

    Attributes:
        radial: ``R_t (N, W, C)`` radial functions of the edge slots (None in the first
            layer, whose inputs, the element embeddings, need no cotangent).
        products: ``[R_t ⊙ h_j, R'_t ⊙ h_j]`` ``(N, 2W, C)``, with ``R'_t = dR_t/dr`` per Å:
            the moments' per-edge channel weights and their derivative along ``r``.
        update: the per-atom update's :class:`UpdateTrace`.
        outputs: ``h_t (N, C)``.
    """

    radial: torch.Tensor | None
    products: torch.Tensor
    update: UpdateTrace
    outputs: torch.Tensor


@dataclass
class BodyTrace:
    """What the reverse pass needs of one forward pass of the body.

    Attributes:
        species: ``(N,)`` species index of each atom.
        slots: the dense layout of the edges.
        inverse_radius: ``(N, W)`` inverse edge lengths times ``1 / n̄``, per Å (the
            harmonics' scale goes with the derivative of the directions).
        unit: ``(N, W, 3)`` edge directions.
        harmonics: ``(N, W, M)`` Cartesian harmonics of the directions times ``1 / n̄``.
        rank2_slopes: ``(N, W, 3, 5)`` ``∂Y_2,k/∂u`` (before ``1 / n̄``; None for
            ``l_max = 1``).
        layers: one :class:`LayerTrace` per layer.
    """

    species: torch.Tensor
    slots: NeighbourSlots
    inverse_radius: torch.Tensor
    unit: torch.Tensor
    harmonics: torch.Tensor
    rank2_slopes: torch.Tensor | None
    layers: list[LayerTrace]


def radial_features_and_slopes(model: EnergyModel, r: torch.Tensor) -> torch.Tensor:
    """``φ_h(r)`` of :meth:`~mlpot.models.mpnn.CartesianMPNN.radial_features` and
    ``dφ_h/dr`` per Å of edge slots ``r (N, W)`` Å, channels first ``(H, N, 2, W)``, for
    ``φ = SiLU(W (b(r) u(r)))`` (or tanh) with the Bessel functions ``b_n = sin(nπx)/x``
    and the polynomial envelope ``u`` of :mod:`mlpot.nn.radial` (``x = r / r_c``),
    differentiated in closed form (forward-mode autograd costs ten times the features
    themselves on small molecules)."""
    linear, activation = model.radial[0], model.radial[1]
    if not isinstance(activation, torch.nn.SiLU | torch.nn.Tanh) or linear.bias is not None:
        raise TypeError("radial slopes expect the mpnn's bias-free linear layer + SiLU/tanh")
    n_atoms, width = r.shape
    cutoff, power = model.cutoff, float(model.envelope_power)
    r = r.reshape(1, n_atoms * width)  # (1, E)
    x = r / cutoff  # (1, E)
    n = torch.arange(1, model.n_radial + 1, dtype=r.dtype, device=r.device)[:, None]  # (B, 1)
    n_pi = n * math.pi
    bessel = torch.sin(n_pi * x) / x  # (B, E), as mlpot.nn.radial.bessel_basis
    d_bessel = (n_pi * torch.cos(n_pi * x) - bessel) / (x * cutoff)  # (B, E)
    envelope = polynomial_envelope(r, cutoff, model.envelope_power)  # (1, E)
    # u'(x) = -p (p+1) (p+2) / 2 · x^(p-1) (1 - x)² inside the cutoff, 0 beyond
    d_envelope = -0.5 * power * (power + 1) * (power + 2) * x.pow(power - 1) * (1 - x) ** 2
    d_envelope = torch.where(x < 1.0, d_envelope / cutoff, torch.zeros_like(x))  # (1, E)
    rows = (model.n_radial, n_atoms, width)
    basis = torch.stack(
        [(bessel * envelope).view(rows), (d_bessel * envelope + bessel * d_envelope).view(rows)],
        dim=2,
    )  # (B, N, 2, W): b u and d(b u)/dr
    # channels first: (H, B) @ (B, N*2*W) runs at several times the speed of the
    # (N*2*W, B) @ (B, H) product of the edges-first layout on CPUs
    both = (linear.weight @ basis.flatten(1)).view(linear.out_features, n_atoms, 2, width)
    z, dz = both.unbind(2)  # 2 x (H, N, W), views: z = W·(b u) and dz/dr
    if isinstance(activation, torch.nn.Tanh):
        z.tanh_()  # φ
        dz.mul_(1.0 - z**2)  # dφ/dr
    else:
        sigmoid = torch.sigmoid(z)
        z.mul_(sigmoid)  # φ = z σ(z)
        dz.mul_(torch.addcmul(sigmoid, z, 1.0 - sigmoid))  # dφ/dr = (σ + φ (1 - σ)) dz/dr
    return both  # (H, N, 2, W)


def trace_body(model: EnergyModel, graph: Graph) -> BodyTrace:
    """Run the body of a :class:`~mlpot.models.mpnn.CartesianMPNN` (scalar features only)
    once without autograd, keeping what :func:`pull_back` needs: edge geometry, radial
    functions and their ``r``-derivatives, and each layer's per-atom partial derivatives.

    The per-edge arrays are stored channels first, ``(C, N, 2, W)`` and seen through
    ``(N, ·, C)`` views: the radial networks' products are then twice as fast, and batched
    products take the views as they are (column-major matrices)."""
    if any(i.vectors_in or i.vectors_out for i in model.interactions):
        raise ValueError("the explicit reverse pass covers scalar features only")
    if any(i.radial.bias is not None for i in model.interactions):
        raise TypeError("the explicit reverse pass expects bias-free radial functions")
    species = model.species(graph[NUMBERS])  # (N,)
    n_atoms = species.shape[0]
    centre, neighbour = graph[EDGE_INDEX]
    slots = neighbour_slots(centre, neighbour, species)
    width = slots.width
    with torch.no_grad():
        vectors = edge_vectors(graph)  # (E, 3)
        far = vectors.new_tensor([2.0 * model.cutoff, 0.0, 0.0])  # dummy edge of empty slots
        vectors = pad_edges(vectors, slots, far).view(-1, 3)  # (N*W, 3)
        r = torch.linalg.vector_norm(vectors, dim=-1)  # (N*W,)
        unit = vectors / r[:, None]  # (N*W, 3)
        harmonics = model.harmonics(unit) * model.inverse_neighbors  # (N*W, M)
        harmonics = harmonics.view(n_atoms, width, harmonics.shape[-1])  # (N, W, M)
        r_eff, stretch = model.floored_distances(r, species, slots)  # (N*W,) x 2
        phi = radial_features_and_slopes(model, r_eff.view(n_atoms, width))  # (H, N, 2, W)
        phi[:, :, 1].mul_(stretch.view(n_atoms, width))  # dφ/dr = dφ/dr_eff · dr_eff/dr
        phi = phi.flatten(1)  # (H, N*2*W)
        h = model.embedding[species]  # (N, C)
        layers = []
        for t, interaction in enumerate(model.interactions):
            channels = h.shape[1]
            both = interaction.radial.weight @ phi  # (C, N*2*W): R_t, dR_t/dr
            both = both.view(channels, n_atoms, 2, width)
            products = both * h.T.contiguous()[:, slots.neighbours][:, :, None]  # (C, N, 2, W)
            weights = products[:, :, 0].permute(1, 2, 0)  # (N, W, C): R ⊙ h_j
            moments = atomic_moments(harmonics, weights)  # (N, M, C)
            outputs, update = _update_forward(interaction, h, moments, species)  # (N, C)
            radial = both[:, :, 0].permute(1, 2, 0) if t > 0 else None  # (N, W, C)
            products = products.view(channels, n_atoms, 2 * width).permute(1, 2, 0)  # (N, 2W, C)
            layers.append(LayerTrace(radial, products, update, outputs))
            h = outputs
        rank2_slopes = None
        if harmonics.shape[-1] == 9:  # ∂Y_2,k/∂u_a = 2 Σ_b P[(a, b), k] u_b, P symmetric in a, b
            projection = model.harmonics.projection.reshape(3, 15)  # (a, (b, k))
            rank2_slopes = 2.0 * (unit @ projection).view(n_atoms, width, 3, 5)  # (N, W, 3, 5)
        inverse_radius = (model.inverse_neighbors / r).view(n_atoms, width)  # (N, W)
    unit = unit.view(n_atoms, width, 3)
    return BodyTrace(species, slots, inverse_radius, unit, harmonics, rank2_slopes, layers)


def _update_forward(
    interaction: torch.nn.Module, h: torch.Tensor, moments: torch.Tensor, species: torch.Tensor
) -> tuple[torch.Tensor, UpdateTrace]:
    """:meth:`~mlpot.models.mpnn.Interaction.update_features` (scalar features only):
    the new features ``(N, C)`` from ``h (N, C)`` and the moments ``(N, M, C)``, and the
    partial derivatives its reverse pass needs."""
    mixed = interaction.mix(moments, species)  # (M, N, 2K')
    u, v = mixed.chunk(2, dim=2)  # 2 x (M, N, K')
    invariants, partials = _invariants_and_partials(interaction.invariants, u, v)
    change, slopes = mlp_forward(interaction.update, torch.cat([h, invariants], dim=1))
    mixing = interaction.mixing[..., interaction.l_of_m, :, :]  # ([S,] M, C, 2K')
    halves = mixing.transpose(-1, -2).chunk(2, dim=-2)  # U, V: 2 x ([S,] M, K', C)
    mixing = torch.stack(halves, dim=-4)  # ([S,] 2, M, K', C)
    trace = UpdateTrace(mixing, partials, interaction.update, slopes, species)
    return h + change, trace  # (N, C)


def _mixing_pull_back(g_u: torch.Tensor, g_v: torch.Tensor, mixing: torch.Tensor) -> torch.Tensor:
    """Cotangents ``(M, R, K')`` of ``U`` and ``V`` back to the moments ``(M, R, C)``
    through one channel mixing ``(2, M, K', C)``."""
    g_moments = torch.bmm(g_u, mixing[0])  # (M, R, C)
    g_moments[1:].baddbmm_(g_v[1:], mixing[1, 1:])  # no invariant reads V_0
    return g_moments


def _invariants_and_partials(
    module: CartesianInvariants, u: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, list[tuple[int, slice, int, torch.Tensor | None]]]:
    """The invariants of :class:`~mlpot.nn.cartesian.CartesianInvariants` ``(N, n_inv K')``
    of ``u, v (M, N, K')``, and their nonzero partial derivatives (see
    :attr:`UpdateTrace.partials`), all member-independent:

    ``∂(U_1·V_1) = V_1 dU_1 + U_1 dV_1``; ``∂(U_2·V_2) = V_2 dU_2 + U_2 dV_2``;
    ``∂(U_1ᵀ M(V_2) U_1) = 2 M(V_2) U_1 · dU_1 + <E_k, U_1 U_1ᵀ> dV_2,k``;
    ``∂ tr(M(U_2)² M(V_2)) = <E_k, M(U_2) M(V_2) + M(V_2) M(U_2)> dU_2,k + <E_k, M(U_2)²>
    dV_2,k``, with ``E_k`` the traceless symmetric basis of ``M(·)``."""
    u1, v1 = u[1:4], v[1:4]  # (3, N, K')
    out = [u[0], (u1 * v1).sum(0)]  # 2 x (N, K')
    partials = [(0, slice(0, 1), 0, None), (0, slice(1, 4), 1, v1), (1, slice(1, 4), 1, u1)]
    if module.l_max == 2:
        u2, v2 = u[4:9], v[4:9]  # (5, N, K')
        mu, mv = module.matrix(u2), module.matrix(v2)  # (3, 3, N, K')
        mu_mu = (mu[:, :, None] * mu[None, :, :]).sum(1)  # (3, 3, N, K')
        out += [(u2 * v2).sum(0), (u1[:, None] * mv * u1[None, :]).sum((0, 1))]
        out.append((mu_mu * mv).sum((0, 1)))
        mv_u1 = (mv * u1[None, :]).sum(1)  # (3, N, K'): M(V_2) U_1
        mu_mv = (mu[:, :, None] * mv[None, :, :]).sum(1)  # (3, 3, N, K')
        squares = torch.stack([u1[:, None] * u1[None, :], mu_mu, mu_mv + mu_mv.transpose(0, 1)])
        onto_basis = module.matrices.T @ squares.view(3, 9, -1)  # (3, 5, N*K')
        uu, mumu, sym = onto_basis.view(3, 5, *u1.shape[1:]).unbind(0)  # 3 x (5, N, K')
        partials += [
            (0, slice(1, 4), 3, 2.0 * mv_u1),
            (0, slice(4, 9), 2, v2),
            (0, slice(4, 9), 4, sym),
            (1, slice(4, 9), 2, u2),
            (1, slice(4, 9), 3, uu),
            (1, slice(4, 9), 4, mumu),
        ]
    partials = [(half, m, i, None if p is None else p[:, :, None]) for half, m, i, p in partials]
    return torch.cat(out, dim=1), partials  # (N, n_inv * K')


def _update_pull_back(
    trace: UpdateTrace, cotangents: torch.Tensor, *, inputs: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``K`` cotangents ``(N, K, C)`` of a layer's new features to its moments
    ``(N, M, K, C)`` and, with ``inputs``, to its input features ``(N, K, C)``."""
    n_atoms, k_members, channels = cotangents.shape
    m_size, half_width = trace.mixing.shape[-3:-1]  # M, K'
    g_x = mlp_pull_back(trace.update, trace.slopes, cotangents)  # (N, K, C + n_inv K')
    g_invariants = g_x[..., channels:].unflatten(-1, (-1, half_width))  # (N, K, n_inv, K')
    g_mixed = cotangents.new_empty(2, m_size, n_atoms, k_members, half_width)  # U, V
    written = set()
    for half, components, invariant, partial in trace.partials:
        target = g_mixed[half, components]  # (n, N, K, K')
        g_i = g_invariants[:, :, invariant]  # (N, K, K')
        if (half, components.start) in written:
            target.addcmul_(g_i, partial)
        elif partial is None:
            target.copy_(g_i.expand_as(target))
        else:
            torch.mul(g_i, partial, out=target)
        written.add((half, components.start))
    if trace.mixing.dim() == 4 or trace.mixing.shape[0] == 1:  # one mixing for all atoms
        g_u, g_v = g_mixed.view(2, m_size, n_atoms * k_members, half_width)  # (M, N*K, K')
        g_moments = _mixing_pull_back(g_u, g_v, trace.mixing.view(-1, *trace.mixing.shape[-3:]))
    else:  # each element's atoms through their own mixing
        g_moments = cotangents.new_empty(m_size, n_atoms, k_members, channels)
        for s, mixing in enumerate(trace.mixing):
            rows = (trace.species == s).nonzero().squeeze(1)  # (N_s,)
            g_u, g_v = g_mixed[:, :, rows].flatten(2, 3)  # 2 x (M, N_s*K, K')
            g_s = _mixing_pull_back(g_u, g_v, mixing)  # (M, N_s*K, C)
            g_moments[:, rows] = g_s.view(m_size, -1, k_members, channels)
    g_moments = g_moments.view(m_size, n_atoms, k_members, channels).transpose(0, 1)
    g_inputs = cotangents + g_x[..., :channels] if inputs else None  # (N, K, C)
    return g_moments.contiguous(), g_inputs  # (N, M, K, C)


@torch.no_grad()
def pull_back(
    model: EnergyModel,
    body: BodyTrace,
    graph: Graph,
    cotangents: list[torch.Tensor | None],
    *,
    strain: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The derivatives of ``K`` scalars ``Σ_t <cotangents[t][:, k], h_t>`` (summed over atoms
    and channels) with respect to positions ``(K, N, 3)`` and, with ``strain``, to the
    symmetric strain ``(K, S, 3, 3)``.

    Args:
        model: the traced :class:`~mlpot.models.mpnn.CartesianMPNN`.
        body: its :func:`trace_body` of ``graph``.
        graph: the structures.
        cotangents: per layer, ``(N, K, C)`` derivatives of the ``K`` scalars with respect
            to that layer's output features ``h_t`` (None: the scalars do not read it).
    """
    n_atoms, width = body.slots.n_atoms, body.slots.width
    m_size = body.harmonics.shape[-1]
    g_h, edge_sums = None, None  # (N, K, C); (N, 2W, M*K)
    for t in reversed(range(len(body.layers))):
        layer = body.layers[t]
        if cotangents[t] is not None:
            g_h = cotangents[t] if g_h is None else g_h + cotangents[t]
        if g_h is None:
            continue
        g_moments, g_inputs = _update_pull_back(layer.update, g_h, inputs=t > 0)
        # Σ_c [R ⊙ h_j, R' ⊙ h_j][w, c] Ā[m, k, c]: Y's cotangent, and r's before the sum over m
        by_channel = g_moments.view(n_atoms, -1, g_moments.shape[-1]).transpose(1, 2)
        if edge_sums is None:
            edge_sums = torch.bmm(layer.products, by_channel)  # (N, 2W, M*K)
        else:
            edge_sums.baddbmm_(layer.products, by_channel)
        g_h = g_inputs + _neighbour_cotangents(body, layer, g_moments) if t > 0 else None
    k_members = edge_sums.shape[-1] // m_size
    edge_sums = edge_sums.view(n_atoms, 2, width, m_size, k_members)
    g_y = edge_sums[:, 0]  # (N, W, M, K)
    g_r = (body.harmonics[:, :, None, :] @ edge_sums[:, 1]).squeeze(2)  # (N, W, K)
    g_edges = _edge_cotangents(body, g_r, g_y)  # (E, 3, K)
    return _positions_and_strain(graph, g_edges, strain=strain)


def _neighbour_cotangents(
    body: BodyTrace, layer: LayerTrace, g_moments: torch.Tensor
) -> torch.Tensor:
    """Cotangents ``(N, K, C)`` of a layer's input features through the neighbours' side of
    its moments ``A_i = Σ_j Y_ij (R_ij ⊙ h_j)``, from ``Ā (N, M, K, C)``: ``Σ_i (Y_ij Ā_i) ⊙
    R_ij``, in blocks of atoms that keep the ``(n, W, K, C)`` arrays in cache."""
    slots = body.slots
    n_atoms, m_size, k_members, channels = g_moments.shape
    width = slots.width
    by_harmonic = g_moments.view(n_atoms, m_size, k_members * channels)  # (N, M, K*C)
    gathered = g_moments.new_zeros(n_atoms, k_members * channels)
    block = max(1, _BLOCK // max(1, width * k_members * channels))
    for start in range(0, n_atoms, block):
        rows = slice(start, start + block)
        g_weights = torch.bmm(body.harmonics[rows], by_harmonic[rows])  # (n, W, K*C)
        n_rows = g_weights.shape[0]  # (explicit: W may be 0, structures without edges)
        messages = g_weights.view(n_rows, width, k_members, channels)
        messages.mul_(layer.radial[rows, :, None, :])  # (n, W, K, C)
        gathered.index_add_(
            0, slots.neighbours[rows].reshape(-1), messages.view(-1, k_members * channels)
        )
    return gathered.view(n_atoms, k_members, channels)  # (N, K, C)


def _edge_cotangents(body: BodyTrace, g_r: torch.Tensor, g_y: torch.Tensor) -> torch.Tensor:
    """Cotangents of the edge vectors ``(E, 3, K)`` from those of their lengths
    ``(N, W, K)`` and of their (scaled) harmonics ``(N, W, M, K)``."""
    unit = body.unit[..., None]  # (N, W, 3, 1)
    g_u = math.sqrt(3.0) * g_y[:, :, 1:4]  # (N, W, 3, K): Y_1 = √3 u
    if body.rank2_slopes is not None:  # Y_2 = (u uᵀ) · P
        g_u = g_u + body.rank2_slopes @ g_y[:, :, 4:9]  # (N, W, 3, 5) @ (N, W, 5, K)
    tangential = g_u - (g_u * unit).sum(2, keepdim=True) * unit  # (N, W, 3, K)
    g_vectors = g_r[:, :, None] * unit + tangential * body.inverse_radius[..., None, None]
    flat = g_vectors.flatten(0, 1)  # (N*W, 3, K)
    return flat.index_select(0, body.slots.index)  # (E, 3, K)


def _positions_and_strain(
    graph: Graph, g_edges: torch.Tensor, *, strain: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``r_ij = x_j - x_i + shift @ cell``: edge cotangents ``(E, 3, K)`` to positions
    ``(K, N, 3)`` and to the symmetric strain ``(K, S, 3, 3)`` (``r -> r (1 + ε)``)."""
    i, j = graph[EDGE_INDEX]
    n_atoms = graph[NUMBERS].shape[0]
    d_positions = g_edges.new_zeros(n_atoms, *g_edges.shape[1:])  # (N, 3, K)
    d_positions.index_add_(0, j, g_edges).index_add_(0, i, -g_edges)
    d_strain = None
    if strain:
        with torch.no_grad():
            vectors = edge_vectors(graph)  # (E, 3)
        outer = vectors[:, :, None, None] * g_edges[:, None]  # (E, 3, 3, K)
        n_structures = graph[N_ATOMS].shape[0]
        per_structure = outer.new_zeros(n_structures, *outer.shape[1:])  # (S, 3, 3, K)
        per_structure.index_add_(0, graph[BATCH][i], outer)
        d_strain = 0.5 * (per_structure + per_structure.transpose(1, 2))
        d_strain = d_strain.permute(3, 0, 1, 2)  # (K, S, 3, 3)
    return d_positions.permute(2, 0, 1), d_strain  # (K, N, 3)


def readout_gradients(
    model: EnergyModel,
    graph: Graph,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    *,
    strain: bool = False,
) -> MemberGradients:
    """``K`` mpnns that share the body of ``model`` and read layer ``t`` out with the last
    linear layer ``weights[t] (K, width_t)``, ``biases[t] (K,)`` (or ``(1,)``) in place of
    that of ``model.interactions[t].readout``: their per-atom energies ``(K, N)`` eV and
    exact derivatives (see :class:`~mlpot.models.base.MemberGradients`), detached."""
    body = trace_body(model, graph)
    scale = model.energy_scale
    total, cotangents = None, []
    with torch.no_grad():
        for interaction, layer, w, b in zip(
            model.interactions, body.layers, weights, biases, strict=True
        ):
            hidden = interaction.readout[:-1]
            z, slopes = mlp_forward(hidden, layer.outputs)  # (N, width)
            local = z @ w.T + b  # (N, K)
            total = local if total is None else total + local
            g_z = (scale * w).expand(z.shape[0], *w.shape)  # (N, K, width)
            cotangents.append(mlp_pull_back(hidden, slopes, g_z))  # (N, K, C)
        energies = (total - model.energy_shift[body.species][:, None]) * scale  # (N, K)
        d_positions, d_strain = pull_back(model, body, graph, cotangents, strain=strain)
    return MemberGradients(energies=energies.T, positions=d_positions, strain=d_strain)
