"""Cartesian atomic-cluster-expansion message passing (``mpnn``): mlpot's flagship model.

Design (in the family of MACE and PaiNN, written for speed on CPUs):

* **Edges.** ``r_ij`` comes from :func:`~mlpot.data.graph.edge_vectors` inside the forward
  pass (stress includes periodic images). Radial features ``φ_h(r)`` are Bessel functions
  times a polynomial envelope through one linear + SiLU (or tanh) layer with no bias, so they vanish
  at ``r_c`` with two continuous derivatives; directions are Cartesian harmonics ``Y`` up
  to ``l_max = 2`` (``1``, ``u``, ``u uᵀ - I/3``; :mod:`mlpot.nn.cartesian`). Both are
  computed once, in a dense per-atom layout of the edges (:mod:`mlpot.nn.moments`), and
  shared by all layers. The radial features see each distance through a soft floor at
  the shortest distance of that pair of elements in the training data
  (:func:`mlpot.nn.radial.soft_floor`, width :data:`FLOOR_WIDTH`): identical on every
  trained distance, bounded below it, so atoms pushed closer than any training pair cannot
  raise the features (and the 3- and 4-body products built from them) without bound; a pair
  never seen in training is floored at the cutoff (the learned term ignores it). Short-range
  repulsion is a physical term's job (``zbl``).
* **Atomic moments (the density trick).** Layer ``t`` forms, for each atom::

      A_i[m, c] = (1 / n̄) Σ_j Y_m(u_ij) R_tc(r_ij) h_j[c],   R_tc = Σ_h W_t[h, c] φ_h

  with ``h_j`` the neighbour's scalar features (an element embedding in the first layer)
  and ``n̄`` the mean neighbour count of the training set: one batched matrix product
  ``(N, M, W) @ (N, W, C)`` for all ranks at once. The radial function of a channel is the
  same for every ``l``; the per-``l`` channel mixing that follows combines channels with
  different radial functions, so each rank still gets its own learned radial dependence,
  at a third of the per-edge work. Measured on aspirin against per-``l`` radial functions:
  1.6x faster training steps, 1.5x faster inference at 1000 atoms, test force errors
  within 12 % after the same 600 s; an ACE-like linear radial basis was no faster and
  extrapolated worse.
* **Products (body order).** Two learned channel mixings per ``l`` and per element of the
  centre atom (like MACE's element-dependent product weights) give ``U`` and ``V``;
  their invariant contractions ``U_0``, ``U_1·V_1``, ``U_2·V_2``, ``U_1ᵀ M(V_2) U_1``,
  ``tr(M(U_2)² M(V_2))`` are 2-, 3- and 4-body functions of the neighbourhood computed at
  the cost of a sum over neighbours, never over pairs or triplets of them. Mixing per
  element (``element_mixing``, the default) against one mixing for all atoms, aspirin_gfn2
  and ethanol_dft trained to convergence, two seeds (bench/peers/README.md): validation
  forces 5-22 % lower, mean test force errors 8-14 % lower on every test set of both
  molecules, for 1.07-1.16x the cost of energy + forces and twice the mixing parameters.
* **Update and readout.** ``h <- h + MLP([h, invariants])``; every layer adds a readout of
  ``h`` to the local energy, shifted per element and scaled by the RMS of the training
  forces. Two layers see ``2 r_c``; each layer is 4-body, so the model is many-body overall.

Only scalars are passed between layers (like MACE with scalar hidden features): equivariant
tensors live inside a layer, at the atoms, in a few ``(M, N, K')`` arrays, and the only
per-edge arrays are ``(N, W, C)``-sized. That keeps both what costs on a CPU small: the
number of tensor operations (small molecules) and the memory traffic of per-edge arrays
(large cells). Plain torch instead of e3nn: for ``l <= 2`` the
Cartesian contractions are a handful of elementwise products, with no Clebsch–Gordan
bookkeeping, and the model needs no dependency beyond torch. (``torch.compile`` was tried
for inference on CPU: no gain at 1000 atoms, so the eager model is the only path.)

Symmetry is by construction: ``r_ij`` are translation invariant, every feature passed
between layers and into the readout is a proper rotation/reflection invariant, and sums
over neighbours are permutation invariant. Forces and stress come from
:func:`mlpot.physics.derivatives.predict` only. Per-element reference energies are the
separate :class:`~mlpot.models.offsets.AtomicOffsets` term.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from mlpot.data.graph import EDGE_INDEX, FORCES, NUMBERS, Graph, collate, edge_vectors
from mlpot.models.arguments import Activation, Count, Elements, NonNegativeCount, Positive
from mlpot.models.base import EnergyModel, LastLayer, MemberGradients
from mlpot.models.mpnn_gradients import readout_gradients
from mlpot.nn.cartesian import CartesianHarmonics, CartesianInvariants
from mlpot.nn.mlp import ACTIVATIONS, mlp
from mlpot.nn.moments import NeighbourSlots, atomic_moments, neighbour_slots, pad_edges
from mlpot.nn.radial import bessel_basis, polynomial_envelope, soft_floor
from mlpot.nn.species import SpeciesIndex

#: rank ``l`` of each Cartesian harmonic component
L_OF_M = (0, 1, 1, 1, 2, 2, 2, 2, 2)
#: width ``w`` (Å) of the radial features' soft floor (module docstring)
FLOOR_WIDTH = 0.2


class Interaction(torch.nn.Module):
    """One layer: atomic moments, channel mixing, invariant products, update, readout.

    Args:
        channels: width ``C`` of the scalar features.
        product_channels: channels ``K'`` of each of the two mixed tensor sets.
        l_max: 1 or 2.
        radial_hidden: width ``H`` of the shared radial features.
        readout_hidden: hidden width of the readout MLP (0 for a linear readout).
        activation: name of a smooth activation.
    """

    def __init__(
        self,
        channels: int,
        product_channels: int,
        l_max: int,
        radial_hidden: int,
        readout_hidden: int,
        activation: str,
        vectors_in: int = 0,
        vectors_out: int = 0,
        element_mixing: int = 0,
    ) -> None:
        super().__init__()
        n_l = l_max + 1
        self.register_buffer("l_of_m", torch.tensor(L_OF_M[: n_l * n_l]), persistent=False)
        # radial function of each channel, R_c(r) = Σ_h W[h, c] φ_h(r); no bias, so it
        # vanishes with the radial features φ beyond the cutoff
        self.radial = torch.nn.Linear(radial_hidden, channels, bias=False)
        # one channel mixing for all atoms (L+1, C, 2K'), or one per element of the centre
        # atom (S, L+1, C, 2K') with element_mixing = S
        shape = (element_mixing,) if element_mixing else ()
        mixing = torch.randn(*shape, n_l, channels, 2 * product_channels) / channels**0.5
        self.mixing = torch.nn.Parameter(mixing)
        self.invariants = CartesianInvariants(l_max)
        n_inv = self.invariants.n_invariants * product_channels
        self.update = mlp(channels + n_inv, [channels], channels, activation)
        hidden = [readout_hidden] if readout_hidden > 0 else []
        self.readout = mlp(channels, hidden, 1, activation)
        self.vectors_in, self.vectors_out = vectors_in, vectors_out
        if vectors_in:
            # radial functions of the neighbours' vectors; [message, own] -> the l = 1 rows
            self.vector_radial = torch.nn.Linear(radial_hidden, vectors_in, bias=False)
            mixing = torch.randn(2 * vectors_in, 2 * product_channels) / (2 * vectors_in) ** 0.5
            self.vector_mixing = torch.nn.Parameter(mixing)  # (2 Cv, 2K')
        if vectors_out:
            out = torch.randn(2 * product_channels, vectors_out) / (2 * product_channels) ** 0.5
            self.vector_out = torch.nn.Parameter(out)  # (2K', Cv)

    def forward(
        self,
        h: torch.Tensor,
        radial: torch.Tensor,
        harmonics: torch.Tensor,
        slots: NeighbourSlots,
        vectors: torch.Tensor | None = None,
        species: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """New scalar features ``h (N, C)`` (this layer's energies are ``readout(h)``) and,
        for the next layer, vector features ``(3, N, Cv)`` (None if it takes none).

        Args:
            h: ``(N, C)`` scalar features.
            radial: ``(N, W, H)`` radial features of the edge slots (zero at and beyond the
                cutoff, and in empty slots).
            harmonics: ``(N, W, M)`` edge harmonics of the slots, times ``1 / n̄``.
            slots: the dense layout of the edges.
            vectors: ``(3, N, Cv)`` the previous layer's vector features, if this layer
                takes them.
            species: ``(N,)`` element index of each atom (needed with element mixing).
        """
        weights = self.radial(radial) * h[slots.neighbours]  # (N, W, C)
        moments = atomic_moments(harmonics, weights)  # (N, M, C)
        incoming = None
        if self.vectors_in:
            # Σ_j R_v(r_ij) x_j / n̄ (harmonics[..., 0] is 1/n̄ in every slot; R_v vanishes
            # in empty ones), beside the atom's own x_i: (3, N, 2 Cv)
            radial_v = self.vector_radial(radial) * harmonics[..., :1]  # (N, W, Cv)
            message = torch.einsum("nwc,dnwc->dnc", radial_v, vectors[:, slots.neighbours])
            incoming = torch.cat([message, vectors], dim=2)  # (3, N, 2 Cv)
        return self.update_features(h, moments, incoming, species)

    def mix(self, moments: torch.Tensor, species: torch.Tensor | None) -> torch.Tensor:
        """Channel mixing of the moments ``(N, M, C)``, per rank ``l``: ``(M, N, 2K')``;
        with element mixing, each centre element's atoms with their own matrices."""
        columns = moments.transpose(0, 1)  # (M, N, C)
        if self.mixing.dim() == 3:
            return torch.bmm(columns, self.mixing[self.l_of_m])  # (M, N, 2K')
        if self.mixing.shape[0] == 1:  # one element: no grouping
            return torch.bmm(columns, self.mixing[0][self.l_of_m])  # (M, N, 2K')
        if species is None:
            raise ValueError("element mixing needs the atoms' species")
        mixed = columns.new_empty(columns.shape[0], columns.shape[1], self.mixing.shape[-1])
        for s in range(self.mixing.shape[0]):
            rows = (species == s).nonzero().squeeze(1)  # (N_s,)
            mixed[:, rows] = torch.bmm(columns[:, rows], self.mixing[s][self.l_of_m])
        return mixed

    def update_features(
        self,
        h: torch.Tensor,
        moments: torch.Tensor,
        incoming: torch.Tensor | None = None,
        species: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The per-atom part of the layer: new features ``(N, C)`` from the old ``h (N, C)``
        and the atomic moments ``(N, M, C)``; with ``incoming`` vectors ``(3, N, 2 Cv)``
        mixed into the rank-1 rows, and the outgoing vectors ``(3, N, Cv)`` or None."""
        mixed = self.mix(moments, species)  # (M, N, 2K')
        if incoming is not None:  # equivariant: a linear map of channels, per component
            rank1 = mixed[1:4] + incoming @ self.vector_mixing  # (3, N, 2K')
            mixed = torch.cat([mixed[:1], rank1, mixed[4:]])  # (M, N, 2K')
        u, v = mixed.chunk(2, dim=2)  # 2 x (M, N, K')
        invariants = self.invariants(u, v)  # (N, n_inv * K')
        h = h + self.update(torch.cat([h, invariants], dim=1))  # (N, C)
        return h, (mixed[1:4] @ self.vector_out if self.vectors_out else None)


class CartesianMPNN(EnergyModel):
    """E(3)-equivariant message-passing energy model (see module docstring).

    Args:
        elements: atomic numbers.
        cutoff: radial cutoff ``r_c``, Å.
        channels: width ``C`` of the scalar node features and of the moments.
        layers: number of message-passing layers.
        l_max: highest rank of the Cartesian harmonics (1: vectors; 2: also rank-2 tensors,
            needed for 4-body invariants).
        product_channels: channels of each mixed tensor set (default ``channels``).
        radial_basis: number of Bessel functions.
        radial_hidden: number ``H`` of radial features ``φ_h(r)`` (Bessel basis x envelope
            -> linear -> SiLU, no bias), shared by all layers.
        envelope_power: power ``p`` of the polynomial envelope.
        readout_hidden: hidden width of the last layer's readout (earlier ones are linear).
        activation: ``silu``, ``tanh`` or ``softplus``.
        radial_activation: ``silu`` or ``tanh``, the activation of the shared radial
            features. ``tanh`` bounds them (``|φ_h| < 1``), so atoms pushed closer than any
            training pair cannot raise the moments, and with them the 3- and 4-body
            products, by the cube of the Bessel functions' growth at short range.
        vector_channels: ``Cv``, rank-1 (vector) features passed from each layer to the
            next besides the scalars (0: scalars only): a layer's mixed rank-1 moments,
            mapped to ``Cv`` channels; the next layer adds ``Σ_j R_v(r_ij) x_j / n̄`` and the
            atom's own ``x_i``, mixed per channel, to its rank-1 moments before the products
            (equivariant messages, like MACE's ``1o`` hidden features). Needs ``l_max >= 1``.
        element_mixing: one channel mixing per element of the centre atom (like MACE's
            element-dependent product weights) instead of one shared by all atoms.
    """

    name = "mpnn"

    def __init__(
        self,
        elements: Elements,
        cutoff: Positive = 5.0,
        channels: Count = 64,
        layers: Count = 2,
        l_max: Annotated[int, Field(ge=0, le=2)] = 2,
        product_channels: Count | None = None,
        radial_basis: Count = 8,
        radial_hidden: Count = 64,
        envelope_power: Count = 6,
        readout_hidden: NonNegativeCount = 16,
        activation: Activation = "silu",
        vector_channels: NonNegativeCount = 0,
        radial_activation: Literal["silu", "tanh"] = "silu",
        element_mixing: bool = True,
    ) -> None:
        if layers < 1 or channels < 1 or radial_basis < 1:
            raise ValueError("layers, channels and radial_basis must be positive")
        if vector_channels and l_max < 1:
            raise ValueError("vector_channels need rank-1 harmonics: l_max >= 1")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}")
        product_channels = int(product_channels or channels)
        super().__init__(
            elements,
            cutoff,
            channels=channels,
            layers=layers,
            l_max=l_max,
            product_channels=product_channels,
            radial_basis=radial_basis,
            radial_hidden=radial_hidden,
            envelope_power=envelope_power,
            readout_hidden=readout_hidden,
            activation=activation,
            vector_channels=vector_channels,
            radial_activation=radial_activation,
            element_mixing=element_mixing,
        )
        self.vector_channels = vector_channels
        self.n_radial, self.envelope_power = radial_basis, envelope_power
        self.species = SpeciesIndex(self.elements)
        self.harmonics = CartesianHarmonics(l_max)
        self.embedding = torch.nn.Parameter(torch.randn(len(self.elements), channels))
        # no bias and SiLU(0) = tanh(0) = 0: a zero basis (beyond the cutoff) gives zero φ
        squash = torch.nn.Tanh() if radial_activation == "tanh" else torch.nn.SiLU()
        self.radial = torch.nn.Sequential(
            torch.nn.Linear(radial_basis, radial_hidden, bias=False), squash
        )
        self.interactions = torch.nn.ModuleList(
            Interaction(
                channels,
                product_channels,
                l_max,
                radial_hidden,
                readout_hidden if t == layers - 1 else 0,
                activation,
                vectors_in=vector_channels if t > 0 else 0,
                vectors_out=vector_channels if t < layers - 1 else 0,
                element_mixing=len(self.elements) if element_mixing else 0,
            )
            for t in range(layers)
        )
        self.register_buffer("inverse_neighbors", torch.tensor(1.0))
        self.register_buffer("energy_scale", torch.tensor(1.0))
        self.register_buffer("energy_shift", torch.zeros(len(self.elements)))
        # per pair of elements, the distance below which the radial features level off
        # (Å; fitted by fit_statistics; 0: no floor, as in files written before floors)
        self.register_buffer("radial_floor", torch.zeros(len(self.elements), len(self.elements)))
        self._initialise()

    @torch.no_grad()
    def _initialise(self) -> None:
        """Variance-preserving dense layers (weights ~ N(0, 1/fan_in), zero biases), so that
        features, and hence forces, are of order one from the start; the radial network's
        weight on Bessel function ``n`` is divided by ``n``, so the initial radial functions
        are smooth (a prior for potential energy surfaces) rather than ~1 Å ripples."""
        for module in self.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, module.in_features**-0.5)
                if module.bias is not None:
                    module.bias.zero_()
        first = self.radial[0].weight  # (H, B)
        first.div_(torch.arange(1, first.shape[1] + 1, dtype=first.dtype))

    @torch.no_grad()
    def fit_statistics(self, graphs: list[Graph]) -> None:
        """Set the normalisation from the training graphs (labels included):

        * ``inverse_neighbors``: 1 / mean number of neighbours within the cutoff;
        * ``energy_scale``: RMS of the force labels (eV/Å read as eV per unit length);
        * ``energy_shift``: per element, the mean initial network output on the data, so the
          learned term starts centred and the reference energies (the offsets term) start
          as the least-squares baseline, instead of the first epochs learning a constant.
        """
        n_edges, n_atoms = 0, 0
        for graph in graphs:
            r = torch.linalg.vector_norm(edge_vectors(graph), dim=-1)  # (E,)
            n_edges += int((r < self.cutoff).sum())
            n_atoms += int(graph[NUMBERS].shape[0])
        if n_edges > 0:
            self.inverse_neighbors.fill_(n_atoms / n_edges)
        forces = [g[FORCES] for g in graphs if FORCES in g]
        if forces:
            rms = torch.cat(forces).pow(2).mean().sqrt()
            if rms > 0:
                self.energy_scale.fill_(float(rms))
        self.energy_shift.zero_()
        sums = self.energy_shift.new_zeros(len(self.elements))
        counts = self.energy_shift.new_zeros(len(self.elements))
        for start in range(0, len(graphs), 32):
            batch = collate(graphs[start : start + 32])
            species = self.species(batch[NUMBERS])  # (N,)
            sums.index_add_(0, species, self.network(batch))
            counts.index_add_(0, species, torch.ones_like(species, dtype=counts.dtype))
        self.energy_shift.copy_(sums / counts.clamp(min=1))
        self.radial_floor.fill_(self.cutoff)  # unseen pairs: floored at the cutoff
        self.extend_domain(graphs)

    @torch.no_grad()
    def extend_domain(self, graphs: list[Graph]) -> None:
        """Lower the radial floors to the shortest distance of each pair of elements in
        ``graphs`` (never raised), so new training data is seen unfloored."""
        n = len(self.elements)
        floor = self.radial_floor.flatten().clone()
        for graph in graphs:
            r = torch.linalg.vector_norm(edge_vectors(graph), dim=-1)  # (E,)
            centre, neighbour = graph[EDGE_INDEX]
            species = self.species(graph[NUMBERS])  # (N,)
            pairs = species[centre] * n + species[neighbour]  # (E,)
            near = r < self.cutoff
            floor.scatter_reduce_(0, pairs[near], r[near].to(floor.dtype), "amin")
        floor = floor.view(n, n)
        self.radial_floor.copy_(torch.minimum(floor, floor.T))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # files written before radial floors existed: no floor, the model they describe
        state_dict.setdefault(prefix + "radial_floor", torch.zeros_like(self.radial_floor))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def floored_distances(
        self, r: torch.Tensor, species: torch.Tensor, slots: NeighbourSlots
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``r_eff`` and ``d r_eff / d r`` of the edge slots' distances ``r (N*W,)`` Å
        (:func:`~mlpot.nn.radial.soft_floor` at the pair's floor)."""
        floor = self.radial_floor.to(r.dtype)[species[:, None], species[slots.neighbours]]
        return soft_floor(r, floor.reshape(-1), FLOOR_WIDTH)

    def edge_features(
        self, graph: Graph, species: torch.Tensor, slots: NeighbourSlots
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Radial features ``φ_h(r_ij)`` ``(N, W, H)`` (of the floored distances) and
        harmonics ``Y_m(u_ij) / n̄`` ``(N, W, M)`` of every edge slot (both zero beyond the
        cutoff / in empty slots)."""
        vectors = edge_vectors(graph)  # (E, 3)
        far = vectors.new_tensor([2.0 * self.cutoff, 0.0, 0.0])  # dummy edge of empty slots
        vectors = pad_edges(vectors, slots, far).view(-1, 3)  # (N*W, 3)
        r = torch.linalg.vector_norm(vectors, dim=-1)  # (N*W,)
        y = self.harmonics(vectors / r[:, None]) * self.inverse_neighbors  # (N*W, M)
        radial = self.radial_features(self.floored_distances(r, species, slots)[0])  # (N*W, H)
        shape = (slots.n_atoms, slots.width)
        return radial.view(*shape, radial.shape[1]), y.view(*shape, y.shape[1])

    def radial_features(self, r: torch.Tensor) -> torch.Tensor:
        """``φ_h(r)`` of distances ``r (E,)`` Å: ``(E, H)``, zero at and beyond the cutoff."""
        envelope = polynomial_envelope(r, self.cutoff, self.envelope_power)  # (E,)
        bessel = bessel_basis(r, self.cutoff, self.n_radial) * envelope[:, None]  # (E, B)
        return self.radial(bessel)  # (E, H)

    def layer_features(self, graph: Graph) -> list[torch.Tensor]:
        """Every layer's output features ``h_t (N, C)``, first to last."""
        species = self.species(graph[NUMBERS])  # (N,)
        centre, neighbour = graph[EDGE_INDEX]  # (E,), (E,)
        slots = neighbour_slots(centre, neighbour, species)
        radial, harmonics = self.edge_features(graph, species, slots)  # (N, W, H), (N, W, M)
        h, vectors = self.embedding[species], None  # (N, C)
        features = []
        for interaction in self.interactions:
            h, vectors = interaction(h, radial, harmonics, slots, vectors, species)
            features.append(h)
        return features

    def propagate(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's scalar features ``h (N, C)`` and the unscaled, unshifted
        network output per atom ``(N,)`` (dimensionless): the sum of every layer's
        read-out."""
        features = self.layer_features(graph)
        out = features[0].new_zeros(features[0].shape[0])  # (N,)
        for interaction, h in zip(self.interactions, features, strict=True):
            out = out + interaction.readout(h).squeeze(-1)  # (N,)
        return features[-1], out  # (N, C), (N,)

    def network(self, graph: Graph) -> torch.Tensor:
        """Unscaled, unshifted network output per atom, ``(N,)`` (dimensionless)."""
        return self.propagate(graph)[1]

    @property
    def n_features(self) -> int:
        return self.embedding.shape[1]

    def features(self, graph: Graph) -> torch.Tensor:
        """The last message-passing layer's invariant scalars ``h (N, C)``: what the
        final readout sees of each atom's environment, so distances between them follow
        what the model has learned to tell apart."""
        return self.propagate(graph)[0]

    def forward(self, graph: Graph) -> torch.Tensor:
        species = self.species(graph[NUMBERS])  # (N,)
        return (self.network(graph) - self.energy_shift[species]) * self.energy_scale  # (N,)

    # -- last-layer features: every layer's linear read-out ------------------------------

    @property
    def n_last_layer_features(self) -> int:
        return sum(interaction.readout[-1].in_features for interaction in self.interactions)

    def last_layer(self, graph: Graph) -> LastLayer:
        """Energies ``(N,)`` eV and the inputs of every layer's last linear read-out, side
        by side and times the energy scale, ``(N, L)``: the energy is linear in all of
        those read-out weights (``L = (T - 1) C + readout_hidden`` for ``T`` layers)."""
        species = self.species(graph[NUMBERS])  # (N,)
        out, features = None, []
        for interaction, h in zip(self.interactions, self.layer_features(graph), strict=True):
            z = interaction.readout[:-1](h)  # (N, width_t)
            features.append(z)
            local = interaction.readout[-1](z).squeeze(-1)  # (N,)
            out = local if out is None else out + local
        energies = (out - self.energy_shift[species]) * self.energy_scale  # (N,)
        return LastLayer(energies, torch.cat(features, dim=1) * self.energy_scale)  # (N, L)

    def last_layer_gradients(
        self, graph: Graph, shifts: torch.Tensor, *, strain: bool = False
    ) -> MemberGradients:
        """Energies and exact derivatives of the ``K`` models with read-out weights shifted
        by ``shifts (K, L)``, from one explicit reverse pass over the members
        (:mod:`mlpot.models.mpnn_gradients`); None with vector features (autograd then)."""
        if self.vector_channels:
            return None
        weights, biases, start = [], [], 0
        for interaction in self.interactions:
            last = interaction.readout[-1]
            stop = start + last.in_features
            weights.append(last.weight + shifts[:, start:stop])  # (K, width_t)
            biases.append(last.bias)  # (1,)
            start = stop
        return readout_gradients(self, graph, weights, biases, strain=strain)
