"""Committee predictions with their spread: mean outputs plus ``*_std`` named outputs."""

from __future__ import annotations

import torch

from mlpot.data.graph import Graph
from mlpot.models.committee import Committee
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict


def member_predictions(
    committee: Committee, graph: Graph, *, forces: bool = True, stress: bool = False
) -> dict[str, torch.Tensor]:
    """Each member's outputs stacked on a leading axis ``(M, ...)`` (detached)."""
    stacked: dict[str, list[torch.Tensor]] = {}
    for member in committee.members:
        out = predict(member, graph, forces=forces, stress=stress)
        for key, value in out.items():
            stacked.setdefault(key, []).append(value.detach())
    return {key: torch.stack(values) for key, values in stacked.items()}


def predict_with_uncertainty(
    committee: Committee,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Mean predictions and the committee's standard deviations, times ``scale``.

    ``ENERGY_STD (S,)`` eV; ``FORCES_STD (N,)`` eV/Å, the per-atom RMS over the three
    components of the force standard deviation; ``STRESS_STD (S,)`` eV/Å³, the RMS over the
    nine components. ``scale`` is the calibration factor (1 = uncalibrated).
    """
    members = member_predictions(committee, graph, forces=forces, stress=stress)
    result = {key: value.mean(0) for key, value in members.items()}
    result[outputs.ENERGY_STD] = scale * members[outputs.ENERGY].std(0, unbiased=True)
    if forces:
        variance = members[outputs.FORCES].var(0, unbiased=True)  # (N, 3)
        result[outputs.FORCES_STD] = scale * variance.mean(-1).sqrt()
    if stress:
        variance = members[outputs.STRESS].var(0, unbiased=True)  # (S, 3, 3)
        result[outputs.STRESS_STD] = scale * variance.mean((-2, -1)).sqrt()
    return result
