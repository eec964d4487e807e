"""The energy-model contract: ``forward(graph) -> local energies (N,)`` in eV.

Every model also answers the small *member* protocol, so uncertainty code asks a model
what it can give instead of checking its type. A single model has no members
(:attr:`EnergyModel.n_members` is 0); an ensemble model (a committee, the heads of a
shallow ensemble, or a sum with one such term) says:

* :attr:`~EnergyModel.n_members` — its number of members ``K``;
* :meth:`~EnergyModel.member_energies` — every member's per-atom energies ``(K, N)`` eV,
  whose mean over members is ``forward``;
* :meth:`~EnergyModel.member_gradients` — optionally, the members' exact derivatives
  computed by the model itself (:class:`MemberGradients`), cheaper than autograd;
* :meth:`~EnergyModel.member_models` — for a committee, the member models themselves
  (separately trained, so their derivatives are best taken one by one).

:mod:`mlpot.physics.ensemble` turns these into member forces and stress.

A model whose energy is linear in its last layer's weights (every linear read-out of a
network) says so for the last-layer prediction rigidity (:mod:`mlpot.models.llpr`):
:attr:`~EnergyModel.n_last_layer_features` ``L`` (0: none), :meth:`~EnergyModel.last_layer`
(energies and features ``f``, with ``ε_i = f_i · w + c_i``) and, optionally,
:meth:`~EnergyModel.last_layer_gradients`, the exact derivatives of the models with shifted
last-layer weights, computed by the model itself.

Every model also says whether it describes atomic environments by per-atom invariant
features (for domain-of-applicability scores, the extrapolation probe and D-optimal
selection): :attr:`~EnergyModel.n_features` ``F`` (0: none) and
:meth:`~EnergyModel.features` ``(N, F)``. A sum gives those of its learned term, a
committee those of its first member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mlpot.data.graph import Graph
from mlpot.errors import MlpotInputError


@dataclass(frozen=True)
class LastLayer:
    """A model's per-atom energies and its last-layer features, from one evaluation.

    Attributes:
        energies: per-atom energies ``ε (N,)``, eV.
        features: ``f (N, L)``, eV per unit weight: ``ε_i = f_i · w + c_i`` with ``w`` the
            weights of the model's linear read-outs and ``c_i`` independent of them.
    """

    energies: torch.Tensor
    features: torch.Tensor


@dataclass(frozen=True)
class MemberGradients:
    """Every member's energies and their exact derivatives, from the model itself (detached).

    Attributes:
        energies: per-atom energies of every member ``(K, N)``, eV.
        positions: ``∂E_k/∂x (K, N, 3)``, eV/Å.
        strain: ``∂E_k/∂ε (K, S, 3, 3)``, eV, for the symmetric strain of
            :func:`~mlpot.physics.derivatives.strained_graph` (None unless asked for).
        common: per-atom energies ``graph -> (N,)`` eV of the parts the members share
            (e.g. reference offsets and physical terms summed with a shallow ensemble),
            not included above: the caller derives them once, the ordinary way, and adds
            them to every member. None when there are none.
    """

    energies: torch.Tensor
    positions: torch.Tensor
    strain: torch.Tensor | None
    common: Callable[[Graph], torch.Tensor] | None = None


class EnergyModel(torch.nn.Module):
    """Base of every energy model and energy term.

    A model declares ``name`` (its registry key), ``elements`` (atomic numbers it knows),
    ``cutoff`` (Å) and :meth:`config` (the constructor keyword arguments that rebuild it).
    A term must ignore edges longer than its own cutoff: summed terms share one graph
    built with the largest cutoff. An ensemble model overrides the member protocol (module
    docstring); the defaults here are those of a single model.
    """

    name: ClassVar[str] = ""

    def __init__(self, elements: list[int], cutoff: float, **config: Any) -> None:
        super().__init__()
        self.elements = sorted(int(z) for z in elements)
        if len(set(self.elements)) != len(self.elements) or not self.elements:
            raise ValueError(f"elements must be distinct atomic numbers, got {elements}")
        self.cutoff = float(cutoff)
        self._config = {"elements": self.elements, "cutoff": self.cutoff, **config}

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments that rebuild this model (without weights)."""
        return dict(self._config)

    def fit_statistics(self, graphs: list[Graph]) -> None:
        """Set data-dependent normalisation from training graphs (labels included). No-op."""

    def extend_domain(self, graphs: list[Graph]) -> None:
        """Widen data-dependent ranges (never narrow them) so that new training ``graphs``
        lie inside, before a trained model continues on them (warm start, fine-tuning);
        by default, every energy model inside this one that has such ranges does it."""
        for module in self.modules():
            if module is self or not isinstance(module, EnergyModel):
                continue
            if type(module).extend_domain is not EnergyModel.extend_domain:
                module.extend_domain(graphs)

    def forward(self, graph: Graph) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- per-atom features -------------------------------------------------------------------

    @property
    def n_features(self) -> int:
        """Length ``F`` of the per-atom invariant features; 0 when the model offers none."""
        return 0

    def features(self, graph: Graph) -> torch.Tensor:
        """Per-atom invariant features ``(N, F)`` describing each atom's environment
        (differentiable in the positions). A model without features raises
        :class:`MlpotInputError`."""
        raise MlpotInputError(
            f"model {self.name or type(self).__name__!r} exposes no per-atom features "
            "(bpnn and mpnn do)",
            field="model",
        )

    # -- the member protocol ---------------------------------------------------------------

    @property
    def n_members(self) -> int:
        """Number of ensemble members ``K``; 0 for a single model."""
        return 0

    def member_energies(self, graph: Graph, *, member_derivatives: bool = False) -> torch.Tensor:
        """Per-atom energies of every member ``(K, N)``, eV; their mean over members is
        :meth:`forward`.

        ``member_derivatives``: the caller will differentiate each member's energy. A model
        whose members' derivatives are not their own in its current mode (a shallow
        ensemble in training mode) raises ValueError. A model without members raises
        :class:`MlpotInputError`.
        """
        raise MlpotInputError(
            f"model {self.name or type(self).__name__!r} has no ensemble members: train a "
            "committee (ensemble.size > 1) or a shallow ensemble (model bpnn_shallow)",
            field="model",
        )

    def member_gradients(self, graph: Graph, *, strain: bool = False) -> MemberGradients | None:
        """The members' energies and exact derivatives computed by the model itself
        (``strain``: with respect to strain too), or None when it offers none (then they
        come from autograd on :meth:`member_energies`)."""
        return None

    def member_models(self) -> list[EnergyModel]:
        """The member models of a committee (separately trained whole models); empty for a
        model whose members are not models of their own, or that has none."""
        return []

    # -- last-layer features (prediction rigidity) ----------------------------------------

    @property
    def n_last_layer_features(self) -> int:
        """Number ``L`` of last-layer features (inputs of the linear read-outs whose weights
        the energy is linear in); 0 when the model offers none."""
        return 0

    def last_layer(self, graph: Graph) -> LastLayer:
        """Per-atom energies ``(N,)`` eV and last-layer features ``(N, L)`` from one
        evaluation, both differentiable in the positions. A model without them raises
        :class:`MlpotInputError`."""
        raise MlpotInputError(
            f"model {self.name or type(self).__name__!r} exposes no last-layer features",
            field="model",
        )

    def last_layer_gradients(
        self, graph: Graph, shifts: torch.Tensor, *, strain: bool = False
    ) -> MemberGradients | None:
        """For ``K`` copies of the model whose last-layer weights are shifted by ``shifts
        (K, L)``: their per-atom energies and exact derivatives, computed by the model
        itself (detached), or None when it offers none (then they come from autograd on
        :meth:`last_layer`)."""
        return None


def model_spec(model: EnergyModel) -> dict[str, Any]:
    """The spec ``{"name": ..., **config}`` that :func:`mlpot.models.registry.build_model`
    turns back into an (untrained) copy of ``model``."""
    return {"name": model.name, **model.config()}


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """Floating dtype of a model's parameters or buffers (float64 when it has neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float64


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of a model's parameters or buffers (the CPU when it has neither): where the
    graphs it evaluates must be."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
