"""Predictions with their uncertainty: the members' spread, calibrated, as named outputs.

Any model with ensemble members (a committee, a shallow ensemble, a sum with one such
term; see the member protocol of :class:`~mlpot.models.base.EnergyModel`) gives its mean
and members' outputs through :func:`~mlpot.physics.ensemble.predict_members`.

* :func:`predict_with_uncertainty`: the means and the calibrated ``*_std`` outputs;
* :func:`member_predictions`: every member's outputs under the plain names;
* :func:`predict_full`: everything a calculator reports, from one evaluation (the
  uncertainty of an ensemble, the domain scores when given statistics);
* :func:`load_committee`: a committee of separately trained checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mlpot.data.graph import Graph
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import load_checkpoint, model_from_payload
from mlpot.models.ensembles import Committee
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict
from mlpot.physics.ensemble import predict_members
from mlpot.uncertainty.calibration import Calibration
from mlpot.uncertainty.domain import DomainStatistics
from mlpot.uncertainty.features import model_features

_STACKED = {
    outputs.MEMBER_ENERGY: outputs.ENERGY,
    outputs.MEMBER_FORCES: outputs.FORCES,
    outputs.MEMBER_STRESS: outputs.STRESS,
}


def predict_with_uncertainty(
    model: EnergyModel,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    scale: float | Calibration = 1.0,
    member_forces: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean predictions and the members' standard deviations, calibrated; detached.

    ``ENERGY_STD (S,)`` eV; ``FORCES_STD (N,)`` eV/Å, per atom the RMS over the three
    components of the force standard deviation; ``STRESS_STD (S,)`` eV/Å³, the RMS over the
    nine components. ``scale`` is one calibration factor for all, or a
    :class:`~mlpot.uncertainty.calibration.Calibration` (1 = uncalibrated). Standard
    deviations are over members with Bessel's correction. ``member_forces=False`` skips
    the force and stress spread (cheaper for heads). The member outputs ``MEMBER_*`` of
    :func:`~mlpot.physics.ensemble.predict_members` are included.
    """
    if not isinstance(scale, Calibration):
        scale = Calibration(energy=scale, forces=scale, stress=scale)
    result = predict_members(
        model, graph, forces=forces, stress=stress, member_forces=member_forces
    )
    spread = result[outputs.MEMBER_ENERGY_DEVIATION].std(0)  # float64: see energy_deviation
    result[outputs.ENERGY_STD] = (scale.energy * spread).to(result[outputs.ENERGY].dtype)
    if outputs.MEMBER_FORCES in result:
        variance = result[outputs.MEMBER_FORCES].var(0)  # (N, 3)
        result[outputs.FORCES_STD] = scale.forces * variance.mean(-1).sqrt()
    if outputs.MEMBER_STRESS in result:
        variance = result[outputs.MEMBER_STRESS].var(0)  # (S, 3, 3)
        result[outputs.STRESS_STD] = scale.stress * variance.mean((-2, -1)).sqrt()
    return result


def member_predictions(
    model: EnergyModel, graph: Graph, *, forces: bool = True, stress: bool = False
) -> dict[str, torch.Tensor]:
    """Each member's ``ENERGY (K, S)``, ``FORCES (K, N, 3)`` and ``STRESS (K, S, 3, 3)``,
    stacked on a leading axis under the plain names (detached); any ensemble."""
    out = predict_members(model, graph, forces=forces, stress=stress)
    return {plain: out[member] for member, plain in _STACKED.items() if member in out}


def predict_full(
    model: EnergyModel,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    calibration: Calibration | None = None,
    domain: DomainStatistics | None = None,
    member_forces: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean energy, forces, stress; for an ensemble the calibrated ``*_std`` outputs (from
    the same members that give the mean); with ``domain`` statistics ``MAHALANOBIS (N,)``,
    ``D_MIN (N,)`` and ``IN_DOMAIN (S,)``. All detached.

    The domain scores need the model's features: one more evaluation of the descriptors,
    without gradients.
    """
    if model.n_members:
        out = predict_with_uncertainty(
            model,
            graph,
            forces=forces,
            stress=stress,
            scale=calibration or Calibration(),
            member_forces=member_forces,
        )
    else:
        out = predict(model, graph, forces=forces, stress=stress)
        out = {key: value.detach() for key, value in out.items()}
    if domain is not None:
        out.update(domain.score(model_features(model, graph), graph))
    return out


def load_committee(paths: list[str | Path]) -> Committee:
    """A committee of the models in ``paths`` (at least two single models that know the
    same elements, in the same units); mismatches are errors naming the file."""
    if len(paths) < 2:
        raise MlpotInputError(f"a committee needs at least 2 models, got {len(paths)}")
    members, first = [], None
    for path in paths:
        payload = load_checkpoint(path)
        model = model_from_payload(payload, source=str(path))
        if model.n_members:
            raise MlpotInputError(
                "is itself an ensemble; a committee member must be a single model",
                source=str(path),
                field="model",
            )
        if first is None:
            first = (str(path), payload)
        for key in ("elements", "units", "dtype"):
            if payload.get(key) != first[1].get(key):
                raise MlpotInputError(
                    f"{key} {payload.get(key)} differ from {first[1].get(key)} of {first[0]}: "
                    "committee members must be trained for the same system",
                    source=str(path),
                    field=key,
                )
        members.append(model)
    return Committee(members)
