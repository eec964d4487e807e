"""Error metrics of a model on labelled graphs: MAE and RMSE of energy per atom, forces, stress.

Entries without a label (NaN in the graph) are left out. A prediction that is not finite
where there is a label is not left out: it makes the quantity's MAE and RMSE NaN and is
counted under ``non_finite``, so a broken model never looks like one with fewer labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from mlpot.data.graph import ENERGY, FORCES, N_ATOMS, STRESS, STRESS_MASK, Graph
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict


class ErrorAccumulator:
    """Running sums of absolute and squared errors per quantity."""

    def __init__(self) -> None:
        self._sums: dict[str, list[float]] = {}

    def add(self, name: str, diff: torch.Tensor, label: torch.Tensor | None = None) -> None:
        """Add the errors ``diff`` where ``label`` (same shape) is finite (where ``diff`` is
        finite without one); non-finite errors there are counted as ``non_finite``."""
        diff = diff.detach()
        diff = diff[torch.isfinite(label.detach() if label is not None else diff)]
        if diff.numel() == 0:
            return
        finite = torch.isfinite(diff)
        s = self._sums.setdefault(name, [0.0, 0.0, 0, 0])
        s[0] += float(diff[finite].abs().sum())
        s[1] += float(diff[finite].pow(2).sum())
        s[2] += diff.numel()
        s[3] += int((~finite).sum())

    def add_batch(self, pred: dict[str, torch.Tensor], batch: Graph) -> None:
        n_atoms = batch[N_ATOMS].to(pred[outputs.ENERGY].dtype)
        self.add("energy_per_atom", (pred[outputs.ENERGY] - batch[ENERGY]) / n_atoms, batch[ENERGY])
        if outputs.FORCES in pred and FORCES in batch:
            self.add("forces", pred[outputs.FORCES] - batch[FORCES], batch[FORCES])
        if outputs.STRESS in pred and STRESS_MASK in batch and bool(batch[STRESS_MASK].any()):
            mask = batch[STRESS_MASK]
            label = batch[STRESS][mask]
            self.add("stress", pred[outputs.STRESS][mask] - label, label)

    def result(self) -> dict[str, dict[str, float]]:
        """``{quantity: {"mae": ..., "rmse": ..., "count": ...}}`` (eV/atom, eV/Å, eV/Å³);
        a quantity with non-finite predictions has NaN errors and ``"non_finite": k``."""
        out = {}
        for name, (a, s, n, bad) in self._sums.items():
            if bad:
                out[name] = {"mae": math.nan, "rmse": math.nan, "count": n, "non_finite": bad}
            else:
                out[name] = {"mae": a / n, "rmse": (s / n) ** 0.5, "count": n}
        return out


def non_finite(metrics: dict[str, dict[str, float]]) -> list[str]:
    """The quantities of :func:`evaluate`'s result with non-finite predictions or errors."""
    return [
        name
        for name, values in metrics.items()
        if isinstance(values, dict)
        and (
            values.get("non_finite")
            or not all(math.isfinite(values.get(k, 0.0)) for k in ("mae", "rmse"))
        )
    ]


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
