"""Ensemble models: a committee of whole models, and shallow ensembles of output heads.

All implement the member protocol of :class:`~mlpot.models.base.EnergyModel`
(``n_members``, ``member_energies``; the committee its ``member_models``, the shallow
ensembles their explicit ``member_gradients``), and their energy is the members' mean.
Because forces and stress are linear in the energy,
:func:`~mlpot.physics.derivatives.predict` on either gives the mean forces and stress in
one backward pass; the members' own forces and stress come from
:mod:`mlpot.physics.ensemble`, their spread from :mod:`mlpot.uncertainty.ensemble`.

The shallow ensemble has one Behler–Parrinello body whose element networks end in ``K``
outputs instead of one: ``ε_i^(k) = s · [NN_{Z_i}(G_i)]_k``. The body (descriptors and
hidden layers) is shared, so the ``K`` member energies cost little more than one model.
The heads start from independent random weights; training fits the mean to the labels and
the heads' spread to the errors of the mean (the ``ensemble_nll`` loss term, after Kellner
& Ceriotti, *Mach. Learn.: Sci. Technol.* 5, 035006 (2024)), the latter through the heads
only (see :meth:`ShallowEnsembleBPNN.member_energies`).

The shallow mpnn (:class:`ShallowEnsembleMPNN`) is the message-passing body of ``mpnn``
whose last layer's read-out network ends in ``K`` outputs (earlier layers' linear
read-outs are shared), trained the same way. Its heads' forces come from one explicit
reverse pass over all heads (:mod:`mlpot.models.mpnn_gradients`).
"""

from __future__ import annotations

from typing import Any

import torch

from mlpot.data.graph import NUMBERS, Graph, edge_vectors
from mlpot.models.arguments import (
    Count,
    Elements,
)
from mlpot.models.base import EnergyModel, LastLayer, MemberGradients, model_spec
from mlpot.models.behler_parrinello import BehlerParrinello
from mlpot.models.mpnn import CartesianMPNN
from mlpot.models.mpnn_gradients import readout_gradients
from mlpot.nn.acsf import ACSF
from mlpot.nn.mlp import mlp, mlp_with_jacobian


class Committee(EnergyModel):
    """``ε_i = (1/M) Σ_m ε_i^(m)`` over ``M`` members that know the same elements.

    Args:
        members: the (built) energy models; the registry builds them from nested specs.
    """

    name = "committee"

    def __init__(self, members: list[EnergyModel]) -> None:
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        elements = members[0].elements
        for k, member in enumerate(members[1:], start=1):
            if member.elements != elements:
                raise ValueError(
                    f"committee member {k} knows elements {member.elements}, member 0 knows "
                    f"{elements}: members must be trained for the same elements"
                )
        super().__init__(elements, max(m.cutoff for m in members))
        self.members = torch.nn.ModuleList(members)

    def config(self) -> dict[str, Any]:
        return {"members": [model_spec(m) for m in self.members]}

    def forward(self, graph: Graph) -> torch.Tensor:
        total = self.members[0](graph)
        for member in self.members[1:]:
            total = total + member(graph)
        return total / len(self.members)  # (N,)

    @property
    def n_members(self) -> int:
        return len(self.members)

    def member_energies(self, graph: Graph, *, member_derivatives: bool = False) -> torch.Tensor:
        return torch.stack([member(graph) for member in self.members])  # (M, N)

    def member_models(self) -> list[EnergyModel]:
        return list(self.members)

    @property
    def n_features(self) -> int:
        return self.members[0].n_features

    def features(self, graph: Graph) -> torch.Tensor:
        """The first member's per-atom features ``(N, F)`` (members share a descriptor
        design; the first stands for all in domain scores)."""
        return self.members[0].features(graph)


class ShallowEnsembleBPNN(BehlerParrinello):
    """Behler–Parrinello network with ``heads`` output heads per element network.

    Args:
        elements: as for :class:`~mlpot.models.behler_parrinello.BehlerParrinello`.
        heads: number of output heads ``K`` (ensemble members), at least 2.
        **body: the other arguments of
            :class:`~mlpot.models.behler_parrinello.BehlerParrinello` (cutoff, descriptor,
            hidden, ...), checked against its constructor by the registry.
    """

    name = "bpnn_shallow"

    def __init__(self, elements: Elements, heads: Count = 8, **body: Any) -> None:
        heads = _check_heads(heads)  # at least 2, with the reason
        super().__init__(elements, **body)
        self._config["heads"] = heads
        hidden, activation = self._config["hidden"], self._config["activation"]
        n_features = self.descriptor.n_features
        self.networks = torch.nn.ModuleList(
            mlp(n_features, list(hidden), heads, activation) for _ in self.elements
        )

    @property
    def n_members(self) -> int:
        return self._config["heads"]

    def member_energies(self, graph: Graph, *, member_derivatives: bool = False) -> torch.Tensor:
        """Per-atom energies of every head ``(K, N)``, eV.

        In training mode the heads' deviations from their mean see the body's features
        through a stop-gradient (same values): a loss on the spread trains the heads alone
        and cannot pull the body, shared with the mean, away from the labels. Derivatives
        of single heads with respect to positions therefore need evaluation mode
        (``member_derivatives`` raises ValueError in training mode).
        """
        if member_derivatives and self.training:
            raise ValueError(
                "per-member forces of a shallow ensemble need model.eval(): in training mode "
                "its heads' spread is cut from the gradient of the shared body"
            )
        return (self.element_outputs(graph, self._heads) * self.energy_scale).T  # (K, N)

    def _heads(self, network: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        hidden = network[:-1](x)  # (n, H)
        heads = network[-1](hidden)  # (n, K)
        if self.training:
            heads = _spread_through_heads_only(heads, network[-1](hidden.detach()))
        return heads

    def member_gradients(self, graph: Graph, *, strain: bool = False) -> MemberGradients | None:
        """Every head's per-atom energies ``(K, N)`` eV and the derivatives of its energy
        with respect to positions ``(K, N, 3)`` eV/Å and, with ``strain``, to the symmetric
        strain of :func:`~mlpot.physics.derivatives.strained_graph` ``(K, S, 3, 3)`` eV.

        Exact, and the cheap way to the ``K`` members' forces: the descriptors are computed
        once; each element network gives its heads and their Jacobian with respect to the
        features row by row (:func:`~mlpot.nn.mlp.mlp_with_jacobian`); the descriptor's
        explicit vector-Jacobian products (:meth:`ACSF.densities_and_derivatives`,
        :meth:`ACSF.density_cotangents`, :meth:`ACSF.position_strain_vjp`) take all ``K``
        of them to positions and strain at once. Evaluation mode only (see
        :meth:`member_energies`); detached results.
        """
        if self.training:
            raise ValueError("member gradients of a shallow ensemble need model.eval()")
        if not isinstance(self.descriptor, ACSF):
            return None  # SOAP: featomic's gradients, through batched autograd
        k_members = self.n_members
        species = self.species(graph[NUMBERS])  # (N,)
        scale = self.feature_std[species]  # (N, F)
        with torch.no_grad():
            vectors = edge_vectors(graph)
            densities, edge_factors = self.descriptor.densities_and_derivatives(
                graph, vectors, k_members
            )
            raw = self.descriptor.features_from_densities(densities)
            x = (raw - self.feature_mean[species]) / scale  # (N, F)
            heads = x.new_empty(x.shape[0], k_members)
            d_x = x.new_empty(x.shape[0], k_members, x.shape[1])
            for k, network in enumerate(self.networks):
                index = torch.nonzero(species == k).squeeze(1)
                y, jacobian = mlp_with_jacobian(network, x.index_select(0, index))
                heads.index_copy_(0, index, y)
                d_x.index_copy_(0, index, jacobian)
            energies = heads.T * self.energy_scale  # (K, N)
            d_raw = d_x * (self.energy_scale / scale[:, None, :])  # (N, K, F)
            rows = self.descriptor.density_cotangents(densities, d_raw)
            d_positions, d_strain = self.descriptor.position_strain_vjp(
                graph, vectors, rows, edge_factors, strain=strain
            )
        return MemberGradients(energies=energies, positions=d_positions, strain=d_strain)

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.member_energies(graph).mean(0)  # (N,)

    # a shallow ensemble's spread is its uncertainty: no last-layer features of its own
    @property
    def n_last_layer_features(self) -> int:
        return 0

    def last_layer(self, graph: Graph) -> LastLayer:
        return EnergyModel.last_layer(self, graph)


def _check_heads(heads: int) -> int:
    if int(heads) != heads or heads < 2:
        raise ValueError(f"a shallow ensemble needs at least 2 heads, got {heads}")
    return int(heads)


def _spread_through_heads_only(heads: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """Heads ``(n, K)`` whose mean is differentiable as it is and whose deviations from it
    come from ``frozen``, the same heads computed from detached body features."""
    return heads.mean(1, keepdim=True) + frozen - frozen.mean(1, keepdim=True)


class ShallowEnsembleMPNN(CartesianMPNN):
    """The ``mpnn`` with ``heads`` output heads on its last layer.

    ``ε_i^(k) = s · (Σ_{t<T} r_t(h_t,i) + [r_T(h_T,i)]_k - μ_{Z_i})``: the linear read-outs
    ``r_t`` of the layers before the last are shared, the last read-out network ends in
    ``K`` outputs. Its energy is the heads' mean; training, member forces and the spread
    as for :class:`ShallowEnsembleBPNN`.

    Args:
        elements: as for :class:`~mlpot.models.mpnn.CartesianMPNN`.
        heads: number of output heads ``K`` (ensemble members), at least 2.
        **body: the other arguments of :class:`~mlpot.models.mpnn.CartesianMPNN` (cutoff,
            channels, layers, ...), checked against its constructor by the registry.
    """

    name = "mpnn_shallow"

    def __init__(self, elements: Elements, heads: Count = 8, **body: Any) -> None:
        heads = _check_heads(heads)  # at least 2, with the reason
        super().__init__(elements, **body)
        self._config["heads"] = heads
        width, activation = self._config["readout_hidden"], self._config["activation"]
        hidden = [width] if width > 0 else []
        self.interactions[-1].readout = mlp(self._config["channels"], hidden, heads, activation)
        self._initialise()  # the new heads too: independent weights ~ N(0, 1/fan_in)

    @property
    def n_members(self) -> int:
        return self._config["heads"]

    def _outputs(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's features ``h (N, C)`` and every head's unscaled, unshifted
        output ``(N, K)`` (in training mode with the heads' spread cut from the body's
        gradient, see :meth:`member_energies`)."""
        features = self.layer_features(graph)
        shared = features[0].new_zeros(features[0].shape[0])  # (N,)
        for interaction, h in zip(self.interactions[:-1], features[:-1], strict=True):
            shared = shared + interaction.readout(h).squeeze(-1)  # (N,)
        readout, h = self.interactions[-1].readout, features[-1]
        hidden = readout[:-1](h)  # (N, width)
        heads = readout[-1](hidden)  # (N, K)
        if self.training:
            heads = _spread_through_heads_only(heads, readout[-1](hidden.detach()))
        return h, shared[:, None] + heads  # (N, C), (N, K)

    def propagate(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's features ``h (N, C)`` and the heads' mean output ``(N,)``."""
        h, heads = self._outputs(graph)
        return h, heads.mean(1)  # (N, C), (N,)

    def member_energies(self, graph: Graph, *, member_derivatives: bool = False) -> torch.Tensor:
        """Per-atom energies of every head ``(K, N)``, eV; training mode as
        :meth:`ShallowEnsembleBPNN.member_energies` (the heads' deviations from their mean
        see the body through a stop-gradient; ``member_derivatives`` needs evaluation
        mode)."""
        if member_derivatives and self.training:
            raise ValueError(
                "per-member forces of a shallow ensemble need model.eval(): in training mode "
                "its heads' spread is cut from the gradient of the shared body"
            )
        species = self.species(graph[NUMBERS])  # (N,)
        heads = self._outputs(graph)[1] - self.energy_shift[species][:, None]  # (N, K)
        return (heads * self.energy_scale).T  # (K, N)

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.member_energies(graph).mean(0)  # (N,)

    def member_gradients(self, graph: Graph, *, strain: bool = False) -> MemberGradients | None:
        """Every head's per-atom energies ``(K, N)`` eV and the exact derivatives of its
        energy with respect to positions ``(K, N, 3)`` eV/Å and, with ``strain``, the
        symmetric strain ``(K, S, 3, 3)`` eV: the body traced once, then one explicit
        reverse pass with all heads at once (:mod:`mlpot.models.mpnn_gradients`; scalar
        features only: with vector features None, and the heads' derivatives come from
        autograd). Evaluation mode only; detached results."""
        if self.vector_channels:
            return None
        if self.training:
            raise ValueError("member gradients of a shallow ensemble need model.eval()")
        k_members = self.n_members
        weights, biases = [], []
        for interaction in self.interactions[:-1]:  # shared: the same for every head
            last = interaction.readout[-1]
            weights.append(last.weight.expand(k_members, -1))  # (K, C)
            biases.append(last.bias)  # (1,)
        heads = self.interactions[-1].readout[-1]
        weights.append(heads.weight)  # (K, width)
        biases.append(heads.bias)  # (K,)
        return readout_gradients(self, graph, weights, biases, strain=strain)

    # a shallow ensemble's spread is its uncertainty: no last-layer features of its own
    @property
    def n_last_layer_features(self) -> int:
        return 0

    def last_layer(self, graph: Graph) -> LastLayer:
        return EnergyModel.last_layer(self, graph)

    def last_layer_gradients(
        self, graph: Graph, shifts: torch.Tensor, *, strain: bool = False
    ) -> MemberGradients | None:
        return None
