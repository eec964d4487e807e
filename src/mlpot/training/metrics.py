"""Error metrics of a model on labelled graphs: MAE and RMSE of energy per atom, forces, stress."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from mlpot.data.graph import ENERGY, FORCES, N_ATOMS, STRESS, STRESS_MASK, Graph
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict


class ErrorAccumulator:
    """Running sums of absolute and squared errors per quantity."""

    def __init__(self) -> None:
        self._sums: dict[str, list[float]] = {}

    def add(self, name: str, diff: torch.Tensor) -> None:
        diff = diff.detach()
        diff = diff[torch.isfinite(diff)]
        if diff.numel() == 0:
            return
        s = self._sums.setdefault(name, [0.0, 0.0, 0])
        s[0] += float(diff.abs().sum())
        s[1] += float(diff.pow(2).sum())
        s[2] += diff.numel()

    def add_batch(self, pred: dict[str, torch.Tensor], batch: Graph) -> None:
        n_atoms = batch[N_ATOMS].to(pred[outputs.ENERGY].dtype)
        self.add("energy_per_atom", (pred[outputs.ENERGY] - batch[ENERGY]) / n_atoms)
        if outputs.FORCES in pred and FORCES in batch:
            self.add("forces", pred[outputs.FORCES] - batch[FORCES])
        if outputs.STRESS in pred and STRESS_MASK in batch and bool(batch[STRESS_MASK].any()):
            mask = batch[STRESS_MASK]
            self.add("stress", pred[outputs.STRESS][mask] - batch[STRESS][mask])

    def result(self) -> dict[str, dict[str, float]]:
        """``{quantity: {"mae": ..., "rmse": ..., "count": ...}}`` (eV/atom, eV/Å, eV/Å³)."""
        return {
            name: {"mae": a / n, "rmse": (s / n) ** 0.5, "count": n}
            for name, (a, s, n) in self._sums.items()
        }


def evaluate(
    model: torch.nn.Module, batches: Iterable[Graph], *, stress: bool | None = None
) -> dict[str, dict[str, float]]:
    """Errors of ``model`` over labelled batches (forces always; stress where labelled)."""
    acc = ErrorAccumulator()
    for batch in batches:
        want_stress = bool(batch[STRESS_MASK].any()) if stress is None else stress
        pred = predict(model, batch, forces=True, stress=want_stress)
        acc.add_batch(pred, batch)
    return acc.result()
