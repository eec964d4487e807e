"""Fitting a response model (:mod:`mlpot.models.response`: dipole or polarisability) to
oracle labels.

Labels are read from each structure's calculator results (``dipole`` e·Å or
``polarizability`` e·Å²/V, e.g. a ``SinglePointCalculator`` from an extxyz file or an
oracle's answer) or from ``atoms.info``; a structure's total charge from
``atoms.info["charge"]`` (neutral when absent). The loss is the mean squared error of the
components; AdamW with a plateau schedule; the weights of the best validation error are
kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from ase import Atoms

from mlpot.data.graph import Graph, collate
from mlpot.errors import MlpotInputError
from mlpot.models.response import LABELS, ResponseModel, response_graph


def _rmse(model: ResponseModel, graphs: list[Graph], batch_size: int) -> float:
    key, _ = LABELS[model.kind]
    squared, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            batch = collate(graphs[start : start + batch_size])
            squared += float(((model(batch) - batch[key]) ** 2).sum())
            count += batch[key].numel()
    return (squared / max(count, 1)) ** 0.5


def fit_response(
    model: ResponseModel,
    train: Sequence[Atoms],
    validation: Sequence[Atoms],
    *,
    epochs: int = 500,
    learning_rate: float = 3e-3,
    batch_size: int = 16,
    patience: int = 60,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Fit ``model`` (in place) and return ``{"epochs", "train_rmse", "validation_rmse"}``
    (e·Å for a dipole, e·Å²/V for a polarisability). The body's normalisation is fitted on
    the training structures first."""
    if not train or not validation:
        raise MlpotInputError("need training and validation structures", field="data")
    dtype = next(model.parameters()).dtype
    train_graphs = [
        response_graph(a, model, dtype=dtype, source="train", frame=k) for k, a in enumerate(train)
    ]
    val_graphs = [
        response_graph(a, model, dtype=dtype, source="validation", frame=k)
        for k, a in enumerate(validation)
    ]
    model.body.fit_statistics(train_graphs)
    key, _ = LABELS[model.kind]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=15)
    best, best_state, bad, epoch = float("inf"), None, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_graphs), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            batch = collate([train_graphs[k] for k in order[start : start + batch_size]])
            loss = ((model(batch) - batch[key]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        error = _rmse(model, val_graphs, batch_size)
        scheduler.step(error)
        if error < best:
            best, best_state, bad = error, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
        if log is not None and (epoch % 50 == 0 or epoch == 1):
            log(f"epoch {epoch}: validation {model.kind} RMSE {error:.4g} (best {best:.4g})")
        if bad >= patience or optimizer.param_groups[0]["lr"] < 1e-6:
            break
    model.load_state_dict(best_state)
    model.eval()
    return {
        "epochs": epoch,
        "train_rmse": _rmse(model, train_graphs, batch_size),
        "validation_rmse": best,
    }
