"""Self-describing, versioned checkpoints: plain tensors and dicts, never a pickled module.

A model checkpoint holds::

    format, format_version, mlpot_version, model (spec: name + constructor kwargs),
    state_dict, elements, cutoff, dtype, units, reference_energies, calibration, domain,
    baseline, fisher, training

``calibration`` (scale factors of predicted standard deviations) and ``domain`` (training
feature statistics) are plain dicts written by :mod:`mlpot.uncertainty`, or None.
``baseline`` (``{"name", "params"}`` of an oracle) marks a delta-learned model: the stored
weights are the correction, and the full prediction is baseline + correction (see
:mod:`mlpot.training.delta`). ``fisher`` holds the diagonal Fisher information of the
weights on their training data, for elastic weight consolidation
(:mod:`mlpot.training.finetune`). Both are optional additions to format 1 (None if absent).

It loads with ``torch.load(weights_only=True)``. Older format versions are upgraded by the
functions in ``UPGRADES``; newer or foreign files fail with a clear message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mlpot import __version__
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.registry import build_model, model_spec

FORMAT = "mlpot-checkpoint"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}

#: Optional fields that :func:`update_checkpoint` may rewrite.
UPDATABLE = ("calibration", "domain", "baseline", "fisher")

#: ``UPGRADES[v]`` turns a version-``v`` payload into a version-``v + 1`` payload.
UPGRADES: dict[int, Any] = {}


def _reference_energies(model: EnergyModel) -> dict[int, float]:
    spec = model_spec(model)
    terms = spec.get("terms", [spec])
    for term in terms:
        if term["name"] == "offsets":
            return dict(zip(term["elements"], term["energies"], strict=True))
    return {}


def atomic_save(payload: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def save_model(
    path: str | Path,
    model: EnergyModel,
    *,
    training: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    domain: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
    fisher: dict[str, Any] | None = None,
) -> None:
    """Write a model checkpoint (see module docstring)."""
    dtype = next((p.dtype for p in model.parameters()), torch.float64)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlpot_version": __version__,
        "model": model_spec(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "elements": list(model.elements),
        "cutoff": model.cutoff,
        "dtype": str(dtype).removeprefix("torch."),
        "units": dict(UNITS),
        "reference_energies": _reference_energies(model),
        "calibration": calibration,
        "domain": domain,
        "baseline": baseline,
        "fisher": fisher,
        "training": training or {},
    }
    atomic_save(payload, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and upgrade a checkpoint payload, or fail with a message naming the file."""
    path = str(path)
    if not Path(path).exists():
        raise MlpotInputError("checkpoint file not found", source=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MlpotInputError(
            "not an mlpot checkpoint: not a file written by torch.save "
            f"({err.__class__.__name__}: {err})",
            source=path,
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MlpotInputError(
            "not an mlpot model checkpoint (a training state file? use the model.pt of the run)",
            source=path,
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MlpotInputError(
            f"checkpoint format version {version} is newer than this mlpot understands "
            f"({FORMAT_VERSION}); upgrade mlpot",
            source=path,
            field="format_version",
        )
    while version < FORMAT_VERSION:
        if version not in UPGRADES:
            raise MlpotInputError(
                f"no upgrade path from checkpoint format {version}",
                source=path,
                field="format_version",
            )
        payload = UPGRADES[version](payload)
        version = payload["format_version"]
    for optional in ("domain", "baseline", "fisher"):  # added to version 1: optional
        payload.setdefault(optional, None)
    return payload


def update_checkpoint(
    path: str | Path, output: str | Path | None = None, **fields: dict[str, Any] | None
) -> None:
    """Rewrite the ``calibration``, ``domain``, ``baseline`` or ``fisher`` field of a
    checkpoint, in place or to ``output``; the weights and everything else are unchanged."""
    unknown = set(fields) - set(UPDATABLE)
    if unknown:
        raise ValueError(f"only {UPDATABLE} can be updated, not {sorted(unknown)}")
    payload = load_checkpoint(path)
    payload.update(fields)
    atomic_save(payload, output if output is not None else path)


def model_from_payload(payload: dict[str, Any], *, source: str = "checkpoint") -> EnergyModel:
    model = build_model(payload["model"])
    model = model.to(getattr(torch, payload.get("dtype", "float64")))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise MlpotInputError(
            f"weights do not fit the model config: {err}", source=source, field="state_dict"
        ) from None
    return model


def load_model(
    path: str | Path, *, dtype: torch.dtype | str | None = None, device: str = "cpu"
) -> EnergyModel:
    """Rebuild the model of a checkpoint, in evaluation mode."""
    model = model_from_payload(load_checkpoint(path), source=str(path))
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()
