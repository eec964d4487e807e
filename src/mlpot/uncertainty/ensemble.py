"""The member stack of any uncertainty-capable model, and predictions with their spread.

Uncertainty-capable models are:

* a :class:`~mlpot.models.committee.Committee` (independently trained members);
* a model with output heads (:class:`HeadedModel`, e.g. ``bpnn_shallow``);
* a :class:`~mlpot.models.sum.SumModel` with one such term (offsets + heads): the other
  terms are the same for every member.

:func:`ensemble_predictions` returns the means and every member's outputs stacked on a leading axis
``(K, ...)`` — committees member by member, heads in one forward and one batched backward
pass — and :func:`predict_with_uncertainty` the means with the named ``*_std`` outputs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from mlpot.data.graph import Graph
from mlpot.errors import MlpotInputError
from mlpot.models.committee import Committee
from mlpot.models.sum import SumModel
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict
from mlpot.physics.ensemble import predict_members, predict_members_from_gradients
from mlpot.uncertainty.calibration import Calibration


@runtime_checkable
class HeadedModel(Protocol):
    """A model whose last layer has ``n_members`` heads (a shallow ensemble)."""

    n_members: int

    def member_energies(self, graph: Graph) -> torch.Tensor:
        """Per-atom energies of every head ``(N, K)``, eV."""


def ensemble_size(model: torch.nn.Module) -> int:
    """Number of members ``K`` of an uncertainty-capable model; 0 for a single model."""
    if isinstance(model, Committee):
        return len(model.members)
    if isinstance(model, HeadedModel):
        return int(model.n_members)
    if isinstance(model, SumModel):
        sizes = {ensemble_size(term) for term in model.terms} - {0}
        if len(sizes) > 1:
            raise MlpotInputError(
                f"a sum of ensembles of different sizes {sorted(sizes)} has no member stack",
                field="model",
            )
        return sizes.pop() if sizes else 0
    return 0


def member_local_energies(model: torch.nn.Module, graph: Graph) -> torch.Tensor:
    """Per-atom energies of every member ``(N, K)``, eV (terms without members broadcast)."""
    if isinstance(model, Committee):
        return torch.stack([member(graph) for member in model.members], dim=1)
    if isinstance(model, HeadedModel):
        return model.member_energies(graph)
    if isinstance(model, SumModel) and ensemble_size(model) > 0:
        total = None
        for term in model.terms:
            part = (
                member_local_energies(term, graph) if ensemble_size(term) else term(graph)[:, None]
            )
            total = part if total is None else total + part
        return total  # (N, K)
    raise MlpotInputError(
        f"model {getattr(model, 'name', type(model).__name__)!r} has no ensemble members: "
        "train a committee (ensemble.size > 1) or a shallow ensemble (model bpnn_shallow)",
        field="model",
    )


def _member_gradient_split(model: torch.nn.Module):
    """``(member_gradients, shared)`` when the members' forces can come from a term's own
    explicit gradients (a shallow ensemble, alone or with member-less terms), else None."""

    def explicit(term: torch.nn.Module) -> bool:
        return isinstance(term, HeadedModel) and hasattr(term, "member_gradients")

    if explicit(model):
        return model.member_gradients, None
    if not isinstance(model, SumModel):
        return None
    headed = [t for t in model.terms if ensemble_size(t)]
    if len(headed) != 1 or not explicit(headed[0]):
        return None
    others = [t for t in model.terms if t is not headed[0]]

    def shared(graph: Graph) -> torch.Tensor:
        total = others[0](graph)
        for term in others[1:]:
            total = total + term(graph)
        return total

    return headed[0].member_gradients, (shared if others else None)


def _heads_in_training(model: torch.nn.Module) -> bool:
    # the training flags first: isinstance against a runtime protocol is slow per module
    return any(m.training and isinstance(m, HeadedModel) for m in model.modules())


def ensemble_predictions(
    model: torch.nn.Module,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    member_forces: bool = True,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Mean outputs and every member's outputs ``MEMBER_* (K, ...)`` of an ensemble.

    ``member_forces=False`` skips per-member forces and stress (only ``MEMBER_ENERGY``),
    which for heads costs one ordinary backward pass. Results are detached unless
    ``create_graph``. Per-member forces of heads need evaluation mode (``model.eval()``).
    """
    if member_forces and (forces or stress) and _heads_in_training(model):
        raise ValueError(
            "per-member forces of a shallow ensemble need model.eval(): in training mode "
            "its heads' spread is cut from the gradient of the shared body"
        )
    if isinstance(model, Committee):
        stacked: dict[str, list[torch.Tensor]] = {}
        for member in model.members:
            out = predict(member, graph, forces=forces, stress=stress, create_graph=create_graph)
            for key, value in out.items():
                stacked.setdefault(key, []).append(value)
        members = {key: torch.stack(values) for key, values in stacked.items()}
        results = {key: value.mean(0) for key, value in members.items()}
        results[outputs.MEMBER_ENERGY] = members[outputs.ENERGY]
        if forces:
            results[outputs.MEMBER_FORCES] = members[outputs.FORCES]
        if stress:
            results[outputs.MEMBER_STRESS] = members[outputs.STRESS]
    elif (
        member_forces
        and forces
        and not create_graph
        and (split := _member_gradient_split(model)) is not None
    ):
        member_gradients, shared = split
        results = predict_members_from_gradients(
            member_gradients, graph, stress=stress, shared=shared
        )
    else:
        ensemble_size(model)  # clear error for a sum of mismatched ensembles
        results = predict_members(
            lambda g: member_local_energies(model, g),
            graph,
            forces=forces,
            stress=stress,
            member_forces=member_forces,
            create_graph=create_graph,
        )
    if not create_graph:
        results = {key: value.detach() for key, value in results.items()}
    return results


def predict_with_uncertainty(
    model: torch.nn.Module,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    scale: float | Calibration = 1.0,
    member_forces: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean predictions and the members' standard deviations, calibrated.

    ``ENERGY_STD (S,)`` eV; ``FORCES_STD (N,)`` eV/Å, per atom the RMS over the three
    components of the force standard deviation; ``STRESS_STD (S,)`` eV/Å³, the RMS over the
    nine components. ``scale`` is one calibration factor for all, or a
    :class:`~mlpot.uncertainty.calibration.Calibration` (1 = uncalibrated). Standard
    deviations are over members with Bessel's correction. ``member_forces=False`` skips
    the force and stress spread (cheaper for heads).
    """
    if not isinstance(scale, Calibration):
        scale = Calibration(energy=scale, forces=scale, stress=scale)
    result = ensemble_predictions(
        model, graph, forces=forces, stress=stress, member_forces=member_forces
    )
    result[outputs.ENERGY_STD] = scale.energy * result[outputs.MEMBER_ENERGY].std(0)
    if outputs.MEMBER_FORCES in result:
        variance = result[outputs.MEMBER_FORCES].var(0)  # (N, 3)
        result[outputs.FORCES_STD] = scale.forces * variance.mean(-1).sqrt()
    if outputs.MEMBER_STRESS in result:
        variance = result[outputs.MEMBER_STRESS].var(0)  # (S, 3, 3)
        result[outputs.STRESS_STD] = scale.stress * variance.mean((-2, -1)).sqrt()
    return result
