"""Exact forces of many read-outs of one mpnn at once: an explicit reverse pass.

The ``K`` members of a shallow mpnn (``K`` heads on the last layer) or of a last-layer
prediction-rigidity ensemble (``K`` shifted read-out weights) share the message-passing
body and differ only in the linear maps that read energies out of each layer's features.
Each member still needs its own vector-Jacobian product through the body. Autograd with
``K`` batched cotangents repeats the whole backward pass per member, including the
per-edge radial networks that dominate it (``W·H·C`` per atom and layer): on one CPU
thread eight members cost 4.3-4.8 single models' energy + forces on aspirin and 10-11 on
500 Cu atoms (``bench/cheap_uncertainty.py``).

Here the body is traced once (:func:`trace_body`) and its reverse pass is written out
with the member axis inside the per-edge tensors (:func:`pull_back`):

* the radial functions ``R_t(r)`` depend on an edge only through its length, so their
  derivative is one member-independent per-edge vector ``R'_t = dR_t/dr`` (closed form,
  :func:`radial_slope`): a member's cotangent on ``R_t`` reaches ``r`` by a dot product
  over channels instead of a backward pass through the radial network;
* the atomic moments ``A = Yᵀ (R ⊙ h_j)`` give their cotangents on ``Y``, ``R`` and ``h_j``
  as batched matrix products with the member axis folded into the channels (``W·M·C``
  per atom, ``M ≤ 9``), over blocks of atoms that stay in cache;
* the per-atom part of each layer (channel mixing, invariants, update MLP) goes back by
  autograd, one pass per member on a small per-atom graph;
* the edge vectors get their cotangents from those on ``r`` and ``Y`` (closed-form
  derivatives of the Cartesian harmonics); positions and the symmetric strain from the
  edge vectors, as :func:`~mlpot.physics.derivatives.strained_graph` defines them.

The trace costs about one model's energy + forces, each member about a fifth to a quarter
more (the per-atom passes about half of that, the moments' products a third): 8 members
3.0-3.3x, 2 members 1.4-1.55x. :func:`readout_gradients` puts these together for any set
of per-layer read-out weights. Evaluation only: the results are detached (no second
derivatives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mlpot.data.graph import BATCH, EDGE_INDEX, N_ATOMS, NUMBERS, Graph, edge_vectors
from mlpot.models.base import EnergyModel, MemberGradients
from mlpot.nn.moments import NeighbourSlots, atomic_moments, neighbour_slots, pad_edges
from mlpot.nn.radial import bessel_basis, polynomial_envelope


@dataclass
class LayerTrace:
    """One message-passing layer of a traced forward pass.

    Attributes:
        radial: ``R_t (N, W, C)`` radial functions of the edge slots.
        slope: ``dR_t/dr (N, W, C)``, per Å.
        weights: ``R_t ⊙ h_j (N, W, C)``, the moments' per-edge channel weights.
        inputs: ``h_{t-1} (N, C)``, a leaf (requiring grad except in the first layer).
        moments: ``(N, M, C)`` atomic moments, a leaf requiring grad.
        outputs: ``h_t (N, C)``, with the autograd graph of the per-atom update only.
    """

    radial: torch.Tensor
    slope: torch.Tensor
    weights: torch.Tensor
    inputs: torch.Tensor
    moments: torch.Tensor
    outputs: torch.Tensor


@dataclass
class BodyTrace:
    """What the reverse pass needs of one forward pass of the body.

    Attributes:
        species: ``(N,)`` species index of each atom.
        slots: the dense layout of the edges.
        radius: ``(N, W)`` edge lengths, Å (``2 r_c`` in empty slots).
        unit: ``(N, W, 3)`` edge directions.
        harmonics: ``(N, W, M)`` Cartesian harmonics of the directions times ``1 / n̄``.
        layers: one :class:`LayerTrace` per layer.
    """

    species: torch.Tensor
    slots: NeighbourSlots
    radius: torch.Tensor
    unit: torch.Tensor
    harmonics: torch.Tensor
    layers: list[LayerTrace]


def radial_slope(model: EnergyModel, r: torch.Tensor) -> torch.Tensor:
    """``dφ_h/dr`` ``(E, H)`` per Å of :meth:`~mlpot.models.mpnn.CartesianMPNN.radial_features`
    ``φ = SiLU(W (b(r) u(r)))`` (or tanh), with the Bessel functions ``b_n = sin(nπx)/x`` and the
    polynomial envelope ``u`` of :mod:`mlpot.nn.radial` (``x = r / r_c``), differentiated
    in closed form (forward-mode autograd costs ten times the features themselves on small
    molecules)."""
    linear, activation = model.radial[0], model.radial[1]
    if not isinstance(activation, torch.nn.SiLU | torch.nn.Tanh) or linear.bias is not None:
        raise TypeError("radial_slope expects the mpnn's bias-free linear layer + SiLU/tanh")
    cutoff, power = model.cutoff, float(model.envelope_power)
    x = (r / cutoff)[:, None]  # (E, 1)
    n_pi = math.pi * torch.arange(1, model.n_radial + 1, dtype=r.dtype, device=r.device)  # (B,)
    bessel = bessel_basis(r, cutoff, model.n_radial)  # (E, B)
    d_bessel = (n_pi * torch.cos(n_pi * x) - bessel) / (x * cutoff)  # (E, B)
    envelope = polynomial_envelope(r, cutoff, model.envelope_power)[:, None]  # (E, 1)
    # u'(x) = -p (p+1) (p+2) / 2 · x^(p-1) (1 - x)² inside the cutoff, 0 beyond
    d_envelope = -0.5 * power * (power + 1) * (power + 2) * x.pow(power - 1) * (1 - x) ** 2
    d_envelope = torch.where(x < 1.0, d_envelope / cutoff, torch.zeros_like(x))  # (E, 1)
    z = linear(bessel * envelope)  # (E, H)
    dz = linear(d_bessel * envelope + bessel * d_envelope)  # (E, H)
    if isinstance(activation, torch.nn.Tanh):
        return (1.0 - torch.tanh(z) ** 2) * dz  # (E, H)
    sigmoid = torch.sigmoid(z)
    return sigmoid * (1.0 + z * (1.0 - sigmoid)) * dz  # (E, H)


def trace_body(model: EnergyModel, graph: Graph) -> BodyTrace:
    """Run the body of a :class:`~mlpot.models.mpnn.CartesianMPNN` once, keeping what
    :func:`pull_back` needs: edge geometry, radial functions and their ``r``-derivatives
    (closed form), and each layer's per-atom update with its autograd graph."""
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
        phi_both = torch.stack([model.radial_features(r), radial_slope(model, r)])  # (2, N*W, H)
        harmonics = harmonics.view(n_atoms, width, harmonics.shape[-1])  # (N, W, M)
        h = model.embedding[species]  # (N, C)
    layers = []
    for t, interaction in enumerate(model.interactions):
        with torch.no_grad():
            both = interaction.radial(phi_both)  # (2, N*W, C)
            both = both.view(2, n_atoms, width, both.shape[-1])  # (2, N, W, C)
            radial, slope = both.unbind(0)  # 2 x (N, W, C)
            weights = radial * h[slots.neighbours]  # (N, W, C)
            moments = atomic_moments(harmonics, weights)  # (N, M, C)
        inputs = h.detach().requires_grad_(t > 0)
        moments = moments.requires_grad_(True)
        with torch.enable_grad():
            outputs = interaction.update_features(inputs, moments)[0]  # (N, C)
        layers.append(LayerTrace(radial, slope, weights, inputs, moments, outputs))
        h = outputs.detach()
    return BodyTrace(
        species,
        slots,
        r.view(n_atoms, width),
        unit.view(n_atoms, width, 3),
        harmonics,
        layers,
    )


def pull_back(
    model: EnergyModel,
    body: BodyTrace,
    graph: Graph,
    cotangents: list[torch.Tensor | None],
    *,
    strain: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The derivatives of ``K`` scalars ``Σ_t <cotangents[t][k], h_t>`` (summed over atoms
    and channels) with respect to positions ``(K, N, 3)`` and, with ``strain``, to the
    symmetric strain ``(K, S, 3, 3)``.

    Args:
        model: the traced :class:`~mlpot.models.mpnn.CartesianMPNN`.
        body: its :func:`trace_body` of ``graph`` (each trace pulls back once).
        graph: the structures.
        cotangents: per layer, ``(K, N, C)`` derivatives of the ``K`` scalars with respect
            to that layer's output features ``h_t`` (None: the scalars do not read it).
    """
    given = [c for c in cotangents if c is not None]
    k_members = given[0].shape[0]
    slots = body.slots
    n_atoms, width = slots.n_atoms, slots.width
    m_size = body.harmonics.shape[-1]
    g_r = body.radius.new_zeros(n_atoms, width, k_members)  # (N, W, K)
    g_y = body.radius.new_zeros(n_atoms, width, k_members, m_size)  # (N, W, K, M)
    g_h = None
    for t in reversed(range(len(body.layers))):
        layer = body.layers[t]
        if cotangents[t] is not None:
            g_h = cotangents[t] if g_h is None else g_h + cotangents[t]
        if g_h is None:
            continue
        grads = _atom_vjp(layer, g_h, inputs=t > 0)  # (K, N, M, C)[, (K, N, C)]
        to_neighbours = _edge_block_pull_back(body, layer, grads[0], g_r, g_y, neighbours=t > 0)
        g_h = grads[1] + to_neighbours if t > 0 else None  # (K, N, C)
    g_edges = _edge_cotangents(model, body, g_r, g_y)  # (E, K, 3)
    return _positions_and_strain(graph, g_edges, strain=strain)


def _atom_vjp(layer: LayerTrace, cotangents: torch.Tensor, *, inputs: bool) -> list[torch.Tensor]:
    """Vector-Jacobian products of a layer's per-atom update for ``K`` cotangents
    ``(K, N, C)``: those of the moments ``(K, N, M, C)`` and, with ``inputs``, of the input
    features ``(K, N, C)``, one backward pass per member. (Measured on one CPU thread, a
    batched (vmap) pass costs more per operation, and one pass through ``K`` copies of the
    atoms more per element, than the ``K`` passes.)"""
    leaves = [layer.moments, layer.inputs] if inputs else [layer.moments]
    grads = [leaf.new_empty(cotangents.shape[0], *leaf.shape) for leaf in leaves]
    for k, cotangent in enumerate(cotangents):
        parts = torch.autograd.grad(
            layer.outputs, leaves, grad_outputs=cotangent, retain_graph=k + 1 < len(cotangents)
        )
        for grad, part in zip(grads, parts, strict=True):
            grad[k] = part
    return grads


def _edge_block_pull_back(
    body: BodyTrace,
    layer: LayerTrace,
    g_moments: torch.Tensor,
    g_r: torch.Tensor,
    g_y: torch.Tensor,
    *,
    neighbours: bool,
) -> torch.Tensor | None:
    """One layer's moments ``A = Yᵀ (R ⊙ h_j)``, pulled back: adds the cotangents of
    ``g_moments (K, N, M, C)`` to the edge lengths ``g_r (N, W, K)`` and the harmonics
    ``g_y (N, W, K, M)``; with ``neighbours`` returns those of the neighbours' features
    ``h_j`` ``(K, N, C)`` (None otherwise).

    The member axis is folded into the channels of batched products; blocks of atoms keep
    the ``(n, W, K, C)`` arrays in cache (written whole, they are ``K`` times the size of
    the forward pass's largest array, and memory traffic would dominate)."""
    slots = body.slots
    k_members, n_atoms, m_size, channels = g_moments.shape
    width = slots.width
    by_harmonic = g_moments.permute(1, 2, 0, 3).reshape(n_atoms, m_size, -1)  # (N, M, K*C)
    by_channel = g_moments.permute(1, 3, 0, 2).reshape(n_atoms, channels, -1)  # (N, C, K*M)
    # d(R ⊙ h_j)/dr = R' ⊙ h_j: the weights' derivative along the edge length
    slope = layer.slope * layer.inputs.detach()[slots.neighbours]  # (N, W, C)
    gathered = g_moments.new_zeros(n_atoms, k_members * channels) if neighbours else None
    block = max(1, (1 << 18) // max(1, width * k_members * channels))
    for start in range(0, n_atoms, block):
        rows = slice(start, start + block)
        g_weights = torch.bmm(body.harmonics[rows], by_harmonic[rows])  # (n, W, K*C)
        n_rows = g_weights.shape[0]  # (explicit: W may be 0, structures without edges)
        g_weights = g_weights.view(n_rows, width, k_members, channels)  # (n, W, K, C)
        g_r[rows] += (g_weights * slope[rows, :, None, :]).sum(-1)  # (n, W, K)
        g_y[rows] += torch.bmm(layer.weights[rows], by_channel[rows]).view(
            n_rows, width, k_members, m_size
        )  # (n, W, K, M)
        if gathered is not None:
            messages = g_weights * layer.radial[rows, :, None, :]  # (n, W, K, C)
            gathered.index_add_(
                0, slots.neighbours[rows].reshape(-1), messages.reshape(-1, k_members * channels)
            )
    if gathered is None:
        return None
    return gathered.view(n_atoms, k_members, channels).transpose(0, 1)  # (K, N, C)


def _edge_cotangents(
    model: EnergyModel, body: BodyTrace, g_r: torch.Tensor, g_y: torch.Tensor
) -> torch.Tensor:
    """Cotangents of the edge vectors ``(E, K, 3)`` from those of their lengths
    ``(N, W, K)`` and of their (scaled) harmonics ``(N, W, K, M)``."""
    unit = body.unit[:, :, None, :]  # (N, W, 1, 3)
    g_u = math.sqrt(3.0) * g_y[..., 1:4]  # (N, W, K, 3): Y_1 = √3 u
    if g_y.shape[-1] == 9:  # Y_2 = (u uᵀ) · P: d/du = 2 (Σ_k g_k P_k) u, P_k symmetric
        projection = model.harmonics.projection  # (9, 5)
        a = (g_y[..., 4:9] @ projection.T).unflatten(-1, (3, 3))  # (N, W, K, 3, 3)
        g_u = g_u + 2.0 * (a * unit[..., None, :]).sum(-1)
    g_u = g_u * model.inverse_neighbors
    tangential = g_u - (g_u * unit).sum(-1, keepdim=True) * unit  # (N, W, K, 3)
    g_vectors = g_r[..., None] * unit + tangential / body.radius[:, :, None, None]
    k_members = g_r.shape[-1]
    flat = g_vectors.reshape(-1, k_members, 3)  # (N*W, K, 3)
    return flat.index_select(0, body.slots.index)  # (E, K, 3)


def _positions_and_strain(
    graph: Graph, g_edges: torch.Tensor, *, strain: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``r_ij = x_j - x_i + shift @ cell``: edge cotangents ``(E, K, 3)`` to positions
    ``(K, N, 3)`` and to the symmetric strain ``(K, S, 3, 3)`` (``r -> r (1 + ε)``)."""
    i, j = graph[EDGE_INDEX]
    n_atoms, k_members = graph[NUMBERS].shape[0], g_edges.shape[1]
    d_positions = g_edges.new_zeros(n_atoms, k_members, 3)
    d_positions.index_add_(0, j, g_edges).index_add_(0, i, -g_edges)
    d_strain = None
    if strain:
        with torch.no_grad():
            vectors = edge_vectors(graph)  # (E, 3)
        outer = vectors[:, None, :, None] * g_edges[:, :, None, :]  # (E, K, 3, 3)
        n_structures = graph[N_ATOMS].shape[0]
        per_structure = outer.new_zeros(n_structures, k_members, 3, 3)
        per_structure.index_add_(0, graph[BATCH][i], outer)
        d_strain = 0.5 * (per_structure + per_structure.transpose(-1, -2))
        d_strain = d_strain.transpose(0, 1)  # (K, S, 3, 3)
    return d_positions.transpose(0, 1), d_strain  # (K, N, 3)


def readout_cotangents(
    readout: torch.nn.Sequential, h: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``∂/∂h`` of ``K`` read-outs ``weights[k] · readout[:-1](h_i)`` (the read-out network
    with its last linear layer's weights replaced): ``(K, N, C)`` for ``h (N, C)`` and
    ``weights (K, width)``."""
    k_members, body = weights.shape[0], readout[:-1]
    if len(body) == 0:  # a linear read-out
        return weights[:, None, :].expand(k_members, *h.shape)
    with torch.enable_grad():
        x = h.detach().requires_grad_(True)
        z = body(x)  # (N, width)
        cotangent = weights[:, None, :].expand(k_members, *z.shape)
        (grad,) = torch.autograd.grad(z, x, grad_outputs=cotangent, is_grads_batched=True)
    return grad  # (K, N, C)


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
            h = layer.outputs.detach()  # (N, C)
            readout = interaction.readout
            z = readout[:-1](h)  # (N, width)
            local = z @ w.T + b  # (N, K)
            total = local if total is None else total + local
            cotangents.append(readout_cotangents(readout, h, scale * w))  # (K, N, C)
        energies = (total - model.energy_shift[body.species][:, None]) * scale  # (N, K)
    d_positions, d_strain = pull_back(model, body, graph, cotangents, strain=strain)
    return MemberGradients(energies=energies.T, positions=d_positions, strain=d_strain)
