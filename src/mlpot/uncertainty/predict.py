"""Everything a calculator reports for a structure, from one evaluation of the model."""

from __future__ import annotations

import torch

from mlpot.data.graph import Graph
from mlpot.physics.derivatives import predict
from mlpot.uncertainty.calibration import Calibration
from mlpot.uncertainty.domain import DomainStatistics, model_features
from mlpot.uncertainty.ensemble import ensemble_size, predict_with_uncertainty


def predict_full(
    model: torch.nn.Module,
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
    if ensemble_size(model):
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
