"""Last-layer prediction rigidity (LLPR): the uncertainty of one trained model from its
last layer, and an ensemble drawn from it.

After Bigi, Chong, Ceriotti & Grasselli, *Mach. Learn.: Sci. Technol.* 5, 045018 (2024).
A model whose energy is linear in its last-layer weights ``w`` (every linear read-out of a
network), ``E = f · w + c`` with ``f`` the structure's summed last-layer features (see
:meth:`~mlpot.models.base.EnergyModel.last_layer`), trained on energies, has the
Gauss–Newton (Laplace) posterior ``w ~ N(ŵ, α² Σ)`` with::

    Σ = (FᵀF + ς² I)⁻¹,        σ_E² = α² fᵀ Σ f,

``F (S_train, L)`` the training structures' features and ``ς²`` a regulariser (the
prior's precision). The structure a model is least *rigid* for — features unlike any
combination of the training ones — gets the largest ``σ_E``.

:class:`LLPR` wraps the trained model with ``Σ`` and ``ς²`` as buffers (fitted by
:func:`mlpot.uncertainty.llpr.fit_llpr`), so checkpoints rebuild it. Its energy is the
model's. Its ``K`` members — the member protocol of
:class:`~mlpot.models.base.EnergyModel` — are the model with its last-layer weights shifted
by ``δ_k`` drawn from ``N(0, Σ)`` and centred (their mean is exactly zero, so the members'
mean is the model): ``ε_i^(k) = ε_i + f_i · δ_k``. Their forces and stress are exact
derivatives (from the model's own :meth:`~mlpot.models.base.EnergyModel.last_layer_gradients`
when it offers them, otherwise autograd), so ``energy_std``, ``forces_std`` and
``stress_std`` come from the same machinery as for any ensemble, and ``α`` is the std scale
factor of the Student-t calibration (``mlpot calibrate``). :meth:`LLPR.energy_variance`
gives the exact ``fᵀ Σ f`` (the members estimate it with ``K - 1`` degrees of freedom).
"""

from __future__ import annotations

from typing import Any

import torch

from mlpot.data.graph import BATCH, N_ATOMS, Graph
from mlpot.models.arguments import Count
from mlpot.models.base import EnergyModel, MemberGradients, model_dtype, model_spec


class LLPR(EnergyModel):
    """A trained model with its last-layer posterior: ``members`` weight samples.

    Args:
        model: the trained single model (built; the registry builds it from a nested spec).
        members: number ``K`` of last-layer weight samples (ensemble members), at least 2.

    The posterior starts empty (all members equal to the model); :meth:`set_posterior`
    fills it.
    """

    name = "llpr"

    def __init__(self, model: EnergyModel, members: Count = 8) -> None:
        n_features = model.n_last_layer_features
        if n_features == 0:
            raise ValueError(
                f"model {model.name!r} exposes no last-layer features (mpnn does; "
                "a sum gives those of its learned terms)"
            )
        if model.n_members:
            raise ValueError("LLPR wraps a single model, not an ensemble")
        if int(members) != members or members < 2:
            raise ValueError(f"an LLPR ensemble needs at least 2 members, got {members}")
        super().__init__(model.elements, model.cutoff)
        self._config = {"members": int(members)}
        self.model = model
        dtype = model_dtype(model)
        self.register_buffer("covariance", torch.zeros(n_features, n_features, dtype=dtype))
        self.register_buffer("shifts", torch.zeros(int(members), n_features, dtype=dtype))
        self.register_buffer("regularizer", torch.zeros((), dtype=dtype))

    def config(self) -> dict[str, Any]:
        return {"model": model_spec(self.model), **self._config}

    @torch.no_grad()
    def set_posterior(self, covariance: torch.Tensor, regularizer: float, *, seed: int = 0) -> None:
        """Store ``Σ = (FᵀF + ς² I)⁻¹`` ``(L, L)`` (per eV² of the features) and ``ς²``,
        and draw the members' weight shifts from ``N(0, Σ)`` (seeded, centred)."""
        covariance = 0.5 * (covariance + covariance.T)  # (L, L)
        values, vectors = torch.linalg.eigh(covariance.double())
        root = vectors * values.clamp(min=0.0).sqrt()  # (L, L): Σ = root rootᵀ
        generator = torch.Generator().manual_seed(seed)
        normal = torch.randn(
            self.n_members, root.shape[0], generator=generator, dtype=torch.float64
        )  # (K, L)
        shifts = normal @ root.T  # (K, L)
        self.shifts.copy_(shifts - shifts.mean(0))
        self.covariance.copy_(covariance)
        self.regularizer.fill_(float(regularizer))

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.model(graph)  # (N,)

    def energy_variance(self, graph: Graph) -> torch.Tensor:
        """``fᵀ Σ f`` per structure ``(S,)``, eV² (uncalibrated, ``α = 1``): the exact
        variance the members estimate."""
        per_atom = self.model.last_layer(graph).features  # (N, L)
        features = per_atom.new_zeros(graph[N_ATOMS].shape[0], per_atom.shape[1])
        features = features.index_add(0, graph[BATCH], per_atom)  # (S, L)
        return ((features @ self.covariance) * features).sum(-1)  # (S,)

    # -- the member protocol ---------------------------------------------------------------

    @property
    def n_members(self) -> int:
        return self._config["members"]

    def member_energies(self, graph: Graph, *, member_derivatives: bool = False) -> torch.Tensor:
        """``ε_i + f_i · δ_k`` ``(K, N)``, eV: one evaluation of the model."""
        last = self.model.last_layer(graph)
        return last.energies[None, :] + self.shifts @ last.features.T  # (K, N)

    def member_gradients(self, graph: Graph, *, strain: bool = False) -> MemberGradients | None:
        """The model's own derivatives of its members, if it offers them (mpnn: one
        explicit reverse pass for all members)."""
        return self.model.last_layer_gradients(graph, self.shifts, strain=strain)

    @property
    def n_features(self) -> int:
        return self.model.n_features

    def features(self, graph: Graph) -> torch.Tensor:
        """The wrapped model's per-atom features ``(N, F)`` (domain scores)."""
        return self.model.features(graph)
