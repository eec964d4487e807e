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

Loading never imports or runs code named in the file: the model is rebuilt from the
registry, the dtype is one of ``DTYPES``, and a ``baseline`` that names code
(``module:factory``) is refused by :func:`load_checkpoint` unless the caller passes
``trust_code=True`` (see :mod:`mlpot.trust`).
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel, model_spec
from mlpot.models.registry import build_model_from_file
from mlpot.trust import check_oracle_name

FORMAT = "mlpot-checkpoint"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}

#: Optional fields that :func:`update_checkpoint` may rewrite.
UPDATABLE = ("calibration", "domain", "baseline", "fisher")

#: The dtypes a checkpoint may name (never any other attribute of ``torch``).
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: ``UPGRADES[v]`` turns a version-``v`` payload into a version-``v + 1`` payload.
UPGRADES: dict[int, Any] = {}


def package_version() -> str:
    """The installed mlpot's version (from its package metadata; ``0+unknown`` for a
    source tree that was never installed), as stamped into checkpoints and reports."""
    try:
        return importlib.metadata.version("mlpot")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _reference_energies(model: EnergyModel) -> dict[int, float]:
    spec = model_spec(model)
    while "model" in spec:  # a wrapper (llpr): the wrapped model's
        spec = spec["model"]
    terms = spec.get("terms", [spec])
    for term in terms:
        if term["name"] == "offsets":
            return dict(zip(term["elements"], term["energies"], strict=True))
    return {}


def torch_dtype(
    name: str | torch.dtype, *, source: str | None = None, field: str = "dtype"
) -> torch.dtype:
    """The torch dtype called ``name`` (``float32`` or ``float64``, with or without the
    ``torch.`` prefix; a ``torch.dtype`` is returned as it is); any other name is an
    :class:`MlpotInputError`, never looked up in ``torch``."""
    if isinstance(name, torch.dtype):
        return name
    key = name.removeprefix("torch.") if isinstance(name, str) else None
    if key not in DTYPES:
        raise MlpotInputError(
            f"dtype must be one of {sorted(DTYPES)}, got {name!r}", source=source, field=field
        )
    return DTYPES[key]


def atomic_save(payload: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file of its own, then rename: a kill never leaves
    half a file, and writers racing for the same path each write whole files (the last
    rename wins). The temporary file is removed if saving fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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
        "mlpot_version": package_version(),
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


def _check_baseline(payload: dict[str, Any], path: str, trust_code: bool) -> None:
    """The baseline is None or ``{"name": str, "params": dict}``, and names no code to run
    unless ``trust_code``."""
    baseline = payload.get("baseline")
    if baseline is None:
        return
    if (
        not isinstance(baseline, dict)
        or not isinstance(baseline.get("name"), str)
        or not isinstance(baseline.get("params", {}), dict)
        or not all(isinstance(k, str) for k in baseline.get("params", {}))
        or set(baseline) - {"name", "params"}
    ):
        raise MlpotInputError(
            f"must be None or {{'name': str, 'params': dict}}, got {_describe(baseline)}",
            source=path,
            field="baseline",
        )
    try:
        check_oracle_name(baseline["name"], trust_code=trust_code)
    except MlpotInputError as err:
        raise MlpotInputError(
            f"delta-learning baseline: {err.reason}", source=path, field="baseline"
        ) from None


def _describe(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _upgraded(payload: dict[str, Any], path: str) -> dict[str, Any]:
    """The payload at the current format version (an integer, not newer than this mlpot)."""
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MlpotInputError(
            f"format_version must be an integer, got {_describe(version)}",
            source=path,
            field="format_version",
        )
    if version > FORMAT_VERSION:
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
    return payload


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read, check and upgrade a payload; the baseline's shape is checked, not its trust."""
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
    payload = _upgraded(payload, path)
    for required, kind in (("model", dict), ("state_dict", dict)):
        if required not in payload:
            raise MlpotInputError(
                f"not an mlpot checkpoint (missing {required!r})", source=path, field=required
            )
        if not isinstance(payload[required], kind):
            raise MlpotInputError(
                f"must be a {kind.__name__}, got {type(payload[required]).__name__}",
                source=path,
                field=required,
            )
    for optional in ("domain", "baseline", "fisher"):  # added to version 1: optional
        payload.setdefault(optional, None)
    for optional in ("calibration", "domain", "fisher", "training"):
        if not isinstance(payload.get(optional), dict | None):
            raise MlpotInputError(
                f"must be None or a dict, got {type(payload[optional]).__name__}",
                source=path,
                field=optional,
            )
    torch_dtype(payload.get("dtype", "float64"), source=path)
    _check_baseline(payload, path, trust_code=True)  # its shape; trust is the caller's
    return payload


def load_checkpoint(path: str | Path, *, trust_code: bool = False) -> dict[str, Any]:
    """Read and upgrade a checkpoint payload, or fail with a message naming the file.

    A delta-learning ``baseline`` that is not a built-in oracle names code to import and
    run (``module:factory``): it is refused unless ``trust_code`` is True. Nothing named in
    the file is imported or run here.
    """
    payload = _read_checkpoint(path)
    _check_baseline(payload, str(path), trust_code=trust_code)
    return payload


def update_checkpoint(
    path: str | Path, output: str | Path | None = None, **fields: dict[str, Any] | None
) -> None:
    """Rewrite the ``calibration``, ``domain``, ``baseline`` or ``fisher`` field of a
    checkpoint, in place or to ``output``; the weights and everything else are unchanged.
    Nothing is built or run, so a baseline that names code needs no trust here."""
    unknown = set(fields) - set(UPDATABLE)
    if unknown:
        raise ValueError(f"only {UPDATABLE} can be updated, not {sorted(unknown)}")
    payload = _read_checkpoint(path)
    payload.update(fields)
    atomic_save(payload, output if output is not None else path)


def model_from_payload(payload: dict[str, Any], *, source: str = "checkpoint") -> EnergyModel:
    try:
        model = build_model_from_file(payload["model"])
    except MlpotInputError as err:
        raise MlpotInputError(err.reason, source=source, field=err.field or "model") from None
    model = model.to(torch_dtype(payload.get("dtype", "float64"), source=source))
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
    """Rebuild the model of a checkpoint, in evaluation mode. Only the model: a
    delta-learned checkpoint's baseline is neither built nor returned (so it needs no
    trust; :func:`mlpot.calculators.load_calculator` gives baseline + correction)."""
    model = model_from_payload(_read_checkpoint(path), source=str(path))
    if dtype is not None:
        model = model.to(torch_dtype(dtype, field="dtype"))
    return model.to(device).eval()


#: Format of a response-property model file (a dipole model).
RESPONSE_FORMAT = "mlpot-response"


def save_response_model(path: str | Path, model, *, training: dict[str, Any] | None = None) -> None:
    """Write a response-property model (:mod:`mlpot.models.response`: dipole or
    polarisability, or an ensemble of them): its kind, its config (the body as a registry
    spec), every member's weights, the ensemble's calibrated scale, dtype."""
    dtype = next((p.dtype for p in model.parameters()), torch.float64)
    members = list(getattr(model, "members", [model]))  # an ensemble, or one model
    payload = {
        "format": RESPONSE_FORMAT,
        "format_version": 1,
        "mlpot_version": package_version(),
        "kind": model.kind,
        "config": members[0].config(),
        "state_dict": [
            {k: v.detach().cpu() for k, v in member.state_dict().items()} for member in members
        ],
        "scale": float(getattr(model, "scale", 1.0)),
        "dtype": str(dtype).removeprefix("torch."),
        "units": {"dipole": "e Å", "polarizability": "e Å^2/V", "length": "Å"},
        "training": training or {},
    }
    atomic_save(payload, path)


def read_model_file(path: str | Path, file_format: str, what: str) -> dict:
    """The payload of a model file of ``file_format`` (plain dicts and tensors, read with
    ``torch.load(weights_only=True)``: nothing in it is imported or run); a missing file,
    an unreadable one or another format is an input error naming the file."""
    source = str(path)
    if not Path(path).exists():
        raise MlpotInputError("model file not found", source=source)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MlpotInputError(
            f"not an mlpot model file ({err.__class__.__name__}: {err})", source=source
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise MlpotInputError(f"not an mlpot {what}", source=source, field="format")
    return payload


def load_response_model(path: str | Path, *, dtype: torch.dtype | str | None = None):
    """Rebuild a response-property model written by :func:`save_response_model`, in
    evaluation mode. Like an energy checkpoint, nothing named in the file is imported or
    run: the body comes from the registry."""
    from mlpot.models.response import DipoleModel, PolarizabilityModel

    kinds = {cls.kind: cls for cls in (DipoleModel, PolarizabilityModel)}
    source = str(path)
    payload = read_model_file(path, RESPONSE_FORMAT, "response-property model")
    if payload.get("kind") not in kinds:
        raise MlpotInputError(
            f"unknown response kind {_describe(payload.get('kind'))}", source=source, field="kind"
        )
    config = payload.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("body"), dict):
        raise MlpotInputError("must be a dict with a 'body' spec", source=source, field="config")
    states = payload.get("state_dict")
    if not isinstance(states, list) or not states:
        raise MlpotInputError("must be a list of weights", source=source, field="state_dict")
    members = []
    for state in states:
        try:
            body = build_model_from_file(config["body"])
            member = kinds[payload["kind"]](
                body, **{k: int(config[k]) for k in ("hidden", "radial_basis") if k in config}
            )
        except (MlpotInputError, ValueError, TypeError) as err:
            raise MlpotInputError(str(err), source=source, field="config") from None
        member = member.to(torch_dtype(payload.get("dtype", "float64"), source=source))
        try:
            member.load_state_dict(state)
        except (KeyError, RuntimeError, TypeError, AttributeError) as err:
            raise MlpotInputError(
                f"weights do not fit the model config: {err}", source=source, field="state_dict"
            ) from None
        members.append(member)
    if len(members) == 1:
        model = members[0]
    else:
        from mlpot.models.response import ResponseEnsemble

        model = ResponseEnsemble(members, scale=float(payload.get("scale", 1.0)))
    if dtype is not None:
        model = model.to(torch_dtype(dtype, field="dtype"))
    return model.eval()
