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

from mlpot.data.graph import Graph, collate, graph_to
from mlpot.errors import MlpotInputError
from mlpot.models.base import model_device
from mlpot.models.response import LABELS, ResponseModel, body_spec, response_graph

#: ``atoms.info`` keys of the file and frame a structure was read from (error messages).
SOURCE, FRAME = "mlpot_source", "mlpot_frame"


def _place(atoms: Atoms, default: str, index: int) -> dict:
    """Where a structure came from: its file and frame when read by this module, else the
    set's name and its position in it."""
    return {"source": atoms.info.get(SOURCE, default), "frame": atoms.info.get(FRAME, index)}


def _rmse(model: ResponseModel, graphs: list[Graph], batch_size: int) -> float:
    key, _ = LABELS[model.kind]
    squared, count, device = 0.0, 0, model_device(model)
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            batch = graph_to(collate(graphs[start : start + batch_size]), device)
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
    device: str = "cpu",
) -> dict:
    """Fit ``model`` (in place) and return ``{"epochs", "train_rmse", "validation_rmse"}``
    (e·Å for a dipole, e·Å²/V for a polarisability). The body's normalisation is fitted on
    the training structures first (``model`` on the CPU), then ``model`` is moved to
    ``device`` and trained there."""
    if not train or not validation:
        raise MlpotInputError("need training and validation structures", field="data")
    dtype = next(model.parameters()).dtype
    train_graphs = [
        response_graph(a, model, dtype=dtype, **_place(a, "train", k)) for k, a in enumerate(train)
    ]
    val_graphs = [
        response_graph(a, model, dtype=dtype, **_place(a, "validation", k))
        for k, a in enumerate(validation)
    ]
    model.body.fit_statistics(train_graphs)
    model.to(device)
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
            batch = graph_to(batch, device)
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


def _read_structures(paths: Sequence[str]) -> list[Atoms]:
    import ase.io

    out = []
    for path in paths:
        try:
            frames = ase.io.read(path, ":")
        except FileNotFoundError:
            raise MlpotInputError("file not found", source=str(path)) from None
        except Exception as err:
            raise MlpotInputError(
                f"unreadable ({err.__class__.__name__}: {err})", source=str(path)
            ) from None
        for frame, atoms in enumerate(frames):
            atoms.info[SOURCE], atoms.info[FRAME] = str(path), frame
        out += frames
    return out


def response_metrics(model: ResponseModel, structures: Sequence[Atoms], source: str) -> dict:
    """``{kind: {"mae", "rmse", "n"}}`` of ``model`` on labelled structures (per component,
    e·Å or e·Å²/V)."""
    key, _ = LABELS[model.kind]
    dtype = next(model.parameters()).dtype
    graphs = [
        response_graph(a, model, dtype=dtype, **_place(a, source, k))
        for k, a in enumerate(structures)
    ]
    errors = []
    with torch.no_grad():
        for start in range(0, len(graphs), 32):
            batch = collate(graphs[start : start + 32])
            errors.append((model(batch) - batch[key]).reshape(-1))
    diff = torch.cat(errors)
    return {
        model.kind: {
            "mae": float(diff.abs().mean()),
            "rmse": float(diff.pow(2).mean().sqrt()),
            "n": len(structures),
        }
    }


def train_response(config, *, train=(), validation=(), test=(), log=print):
    """``mlpot train`` for a response model (``model.name`` dipole or polarizability):
    structures from the config's files and/or memory, split as the config says, the model
    fitted (:func:`fit_response` with the config's epochs, batch size, learning rate,
    patience, seed and dtype), written to ``OUTPUT/model.pt`` with ``metrics.json``.
    Returns ``(model, fit summary, validation metrics, test metrics or None)``. A response
    model trains in seconds to minutes: a killed run starts afresh."""
    import json
    from pathlib import Path

    import numpy as np

    from mlpot.models.checkpoint import save_response_model, torch_dtype
    from mlpot.models.registry import build_model, with_elements
    from mlpot.models.response import DipoleModel, PolarizabilityModel

    data, options = config.data, config.training
    pool = _read_structures(data.train) + list(train)
    validation = _read_structures(data.validation) + list(validation)
    test = _read_structures(data.test) + list(test)
    if not pool:
        raise MlpotInputError("no training structures", field="data.train")
    order = np.random.default_rng(data.split_seed).permutation(len(pool))
    n_val = 0 if validation else max(1, int(round(data.validation_fraction * len(pool))))
    n_test = 0 if test else int(round(data.test_fraction * len(pool)))
    validation = validation or [pool[k] for k in order[:n_val]]
    test = test or [pool[k] for k in order[n_val : n_val + n_test]]
    train = [pool[k] for k in order[n_val + n_test :]]
    elements = sorted({int(z) for a in train + validation + test for z in a.numbers})
    spec = config.model
    kinds = {cls.kind: cls for cls in (DipoleModel, PolarizabilityModel)}
    torch.manual_seed(options.seed)
    body = build_model(body_spec(with_elements(dict(spec["body"]), elements)))
    sizes = {k: spec[k] for k in ("hidden", "radial_basis") if spec.get(k) is not None}
    model = kinds[spec["name"]](body, **sizes).to(torch_dtype(options.dtype))
    log(f"{spec['name']} model: {len(train)} training, {len(validation)} validation structures")
    summary = fit_response(
        model,
        train,
        validation,
        epochs=options.epochs,
        learning_rate=options.learning_rate,
        batch_size=options.batch_size,
        patience=options.early_stopping_patience,
        seed=options.seed,
        log=log if options.progress else None,
    )
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    save_response_model(output / "model.pt", model, training={**summary, "n_train": len(train)})
    metrics = {
        "epochs": summary["epochs"],
        "validation": response_metrics(model, validation, "validation"),
        "test": response_metrics(model, test, "test") if test else None,
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return model, summary, metrics["validation"], metrics["test"]


def calibrate_ensemble(ensemble, structures: Sequence[Atoms]) -> float:
    """Set and return the ensemble's ``scale``: ``sqrt(mean(err² / σ²))`` over the
    components of ``structures`` (labelled), ``err`` the error of the members' mean and
    ``σ²`` their variance — the factor that makes the scaled spread the predictive standard
    deviation (Gaussian errors)."""
    key, _ = LABELS[ensemble.kind]
    dtype = next(ensemble.parameters()).dtype
    graphs = [
        response_graph(a, ensemble, dtype=dtype, **_place(a, "calibration", k))
        for k, a in enumerate(structures)
    ]
    ratios, device = [], model_device(ensemble)
    with torch.no_grad():
        for start in range(0, len(graphs), 32):
            batch = graph_to(collate(graphs[start : start + 32]), device)
            members = ensemble.member_outputs(batch)  # (K, S, ...)
            error = members.mean(0) - batch[key]
            variance = members.var(0)
            keep = variance > 0
            ratios.append((error[keep] ** 2 / variance[keep]).reshape(-1))
    scale = float(torch.cat(ratios).mean().sqrt())
    ensemble.scale.fill_(scale)
    return scale


def fit_response_ensemble(build, members: int, train, validation, *, seed: int = 0, **fit):
    """Train ``members`` response models (``build(k)`` makes member ``k``, trained with
    seed ``seed + k``) and calibrate their spread on ``validation``. Returns the
    :class:`~mlpot.models.response.ResponseEnsemble` and a summary."""
    from mlpot.models.response import ResponseEnsemble

    models, summaries = [], []
    for k in range(members):
        torch.manual_seed(seed + k)
        model = build(k)
        summaries.append(fit_response(model, train, validation, seed=seed + k, **fit))
        models.append(model)
    ensemble = ResponseEnsemble(models)
    scale = calibrate_ensemble(ensemble, validation)
    return ensemble, {
        "epochs": max(s["epochs"] for s in summaries),
        "train_rmse": _rmse(ensemble, _graphs(ensemble, train), 32),
        "validation_rmse": _rmse(ensemble, _graphs(ensemble, validation), 32),
        "scale": scale,
        "members": summaries,
    }


def _graphs(model, structures: Sequence[Atoms]) -> list[Graph]:
    dtype = next(model.parameters()).dtype
    return [
        response_graph(a, model, dtype=dtype, **_place(a, "structures", k))
        for k, a in enumerate(structures)
    ]
