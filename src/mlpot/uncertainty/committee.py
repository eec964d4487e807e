"""Committees: member outputs, and committees built from separately trained checkpoints.

``mlpot train`` with ``ensemble.size > 1`` writes a committee directly; :func:`load_committee`
assembles one from models trained elsewhere, after checking that they belong together.
Predictions with the spread of any ensemble (committee or shallow) are
:func:`~mlpot.uncertainty.ensemble.predict_with_uncertainty`, re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mlpot.data.graph import Graph
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_checkpoint, model_from_payload
from mlpot.models.committee import Committee
from mlpot.physics import outputs
from mlpot.uncertainty.ensemble import ensemble_predictions, ensemble_size, predict_with_uncertainty

__all__ = ["load_committee", "member_predictions", "predict_with_uncertainty"]

_STACKED = {
    outputs.MEMBER_ENERGY: outputs.ENERGY,
    outputs.MEMBER_FORCES: outputs.FORCES,
    outputs.MEMBER_STRESS: outputs.STRESS,
}


def member_predictions(
    model: torch.nn.Module, graph: Graph, *, forces: bool = True, stress: bool = False
) -> dict[str, torch.Tensor]:
    """Each member's ``ENERGY (K, S)``, ``FORCES (K, N, 3)`` and ``STRESS (K, S, 3, 3)``,
    stacked on a leading axis under the plain names (detached); any ensemble."""
    out = ensemble_predictions(model, graph, forces=forces, stress=stress)
    return {plain: out[member] for member, plain in _STACKED.items() if member in out}


def load_committee(paths: list[str | Path]) -> Committee:
    """A committee of the models in ``paths`` (at least two single models that know the
    same elements, in the same units); mismatches are errors naming the file."""
    if len(paths) < 2:
        raise MlpotInputError(f"a committee needs at least 2 models, got {len(paths)}")
    members, first = [], None
    for path in paths:
        payload = load_checkpoint(path)
        model = model_from_payload(payload, source=str(path))
        if ensemble_size(model):
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
