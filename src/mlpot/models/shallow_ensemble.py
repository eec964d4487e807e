"""A shallow ensemble: one Behler–Parrinello body, ``K`` output heads.

Each element's network is the usual MLP whose last layer has ``K`` outputs instead of one:
``ε_i^(k) = s · [NN_{Z_i}(G_i)]_k``. The body (descriptors and hidden layers) is shared,
so the ``K`` member energies cost little more than one model, and the model's energy is
their mean. The heads start from independent random weights; training fits the mean to the
labels and the heads' spread to the errors of the mean (the ``ensemble_nll`` loss term,
after Kellner & Ceriotti, *Mach. Learn.: Sci. Technol.* 5, 035006 (2024)), the latter
through the heads only (see :meth:`ShallowEnsembleBPNN.member_energies`).
"""

from __future__ import annotations

import torch

from mlpot.data.graph import NUMBERS, Graph, edge_vectors
from mlpot.models.arguments import Activation, Count, Elements, Lambda, NonNegative, Positive
from mlpot.models.behler_parrinello import BehlerParrinello
from mlpot.nn.mlp import mlp, mlp_with_jacobian


class ShallowEnsembleBPNN(BehlerParrinello):
    """Behler–Parrinello network with ``heads`` output heads per element network.

    Args:
        elements, cutoff, radial_count, radial_min, angular_cutoff, angular_etas, zetas,
            lambdas, hidden, activation: as for
            :class:`~mlpot.models.behler_parrinello.BehlerParrinello`.
        heads: number of output heads ``K`` (ensemble members), at least 2.
    """

    name = "bpnn_shallow"

    def __init__(
        self,
        elements: Elements,
        cutoff: Positive = 5.0,
        radial_count: Count = 12,
        radial_min: NonNegative = 0.5,
        angular_cutoff: Positive | None = None,
        angular_etas: list[NonNegative] = (0.005, 0.03, 0.1),
        zetas: list[Count] = (1, 2, 4),
        lambdas: list[Lambda] = (1, -1),
        hidden: list[Count] = (64, 64),
        activation: Activation = "silu",
        heads: Count = 8,  # at least 2: checked below, with the reason
    ) -> None:
        if int(heads) != heads or heads < 2:
            raise ValueError(f"a shallow ensemble needs at least 2 heads, got {heads}")
        super().__init__(
            elements,
            cutoff,
            radial_count=radial_count,
            radial_min=radial_min,
            angular_cutoff=angular_cutoff,
            angular_etas=angular_etas,
            zetas=zetas,
            lambdas=lambdas,
            hidden=hidden,
            activation=activation,
        )
        self._config["heads"] = int(heads)
        self.n_members = int(heads)
        n_features = self.descriptor.n_features
        self.networks = torch.nn.ModuleList(
            mlp(n_features, list(hidden), self.n_members, activation) for _ in self.elements
        )

    def member_energies(self, graph: Graph) -> torch.Tensor:
        """Per-atom energies of every head ``(N, K)``, eV.

        In training mode the heads' deviations from their mean see the body's features
        through a stop-gradient (same values): a loss on the spread trains the heads alone
        and cannot pull the body, shared with the mean, away from the labels. Derivatives
        of single heads with respect to positions therefore need evaluation mode.
        """
        return self.element_outputs(graph, self._heads) * self.energy_scale

    def _heads(self, network: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        hidden = network[:-1](x)  # (n, H)
        heads = network[-1](hidden)  # (n, K)
        if self.training:
            frozen = network[-1](hidden.detach())  # (n, K)
            heads = heads.mean(1, keepdim=True) + frozen - frozen.mean(1, keepdim=True)
        return heads

    def member_gradients(
        self, graph: Graph, *, strain: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every head's per-atom energies ``(N, K)`` eV and the derivatives of its energy
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
        species = self.species(graph[NUMBERS])  # (N,)
        scale = self.feature_std[species]  # (N, F)
        with torch.no_grad():
            vectors = edge_vectors(graph)
            densities, edge_factors = self.descriptor.densities_and_derivatives(
                graph, vectors, self.n_members
            )
            raw = self.descriptor.features_from_densities(densities)
            x = (raw - self.feature_mean[species]) / scale  # (N, F)
            heads = x.new_empty(x.shape[0], self.n_members)
            d_x = x.new_empty(x.shape[0], self.n_members, x.shape[1])
            for k, network in enumerate(self.networks):
                index = torch.nonzero(species == k).squeeze(1)
                y, jacobian = mlp_with_jacobian(network, x.index_select(0, index))
                heads.index_copy_(0, index, y)
                d_x.index_copy_(0, index, jacobian)
            energies = heads * self.energy_scale  # (N, K)
            d_raw = d_x * (self.energy_scale / scale[:, None, :])  # (N, K, F)
            rows = self.descriptor.density_cotangents(densities, d_raw)
            d_positions, d_strain = self.descriptor.position_strain_vjp(
                graph, vectors, rows, edge_factors, strain=strain
            )
        return energies, d_positions, d_strain

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.member_energies(graph).mean(1)  # (N,)
