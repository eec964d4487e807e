"""The registry of energy models: name -> class, and (re)building from a spec dict.

A model that is made of models (a sum of terms, a committee of members, a wrapper such as
``llpr``) takes them built: its constructor parameter is annotated ``list[EnergyModel]``
(or ``EnergyModel`` for one), and the registry checks and builds the nested specs first. So
composite models never import the registry.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel, model_spec
from mlpot.models.behler_parrinello import BehlerParrinello
from mlpot.models.charge_equilibration import ChargeEquilibration
from mlpot.models.coulomb import Coulomb
from mlpot.models.dispersion import Dispersion
from mlpot.models.ensembles import Committee, ShallowEnsembleBPNN, ShallowEnsembleMPNN
from mlpot.models.lennard_jones import LennardJones
from mlpot.models.llpr import LLPR
from mlpot.models.mpnn import CartesianMPNN
from mlpot.models.offsets import AtomicOffsets
from mlpot.models.sum import SumModel
from mlpot.models.zbl import ZBL

MODELS: dict[str, type[EnergyModel]] = {
    cls.name: cls
    for cls in (
        BehlerParrinello,
        CartesianMPNN,
        LennardJones,
        AtomicOffsets,
        SumModel,
        Committee,
        ShallowEnsembleBPNN,
        ShallowEnsembleMPNN,
        Coulomb,
        ChargeEquilibration,
        ZBL,
        Dispersion,
        LLPR,
    )
}

__all__ = ["MODELS", "build_model", "build_model_from_file", "check_model_spec", "model_spec"]

#: Constructor arguments added after model files were first written, per model name, with
#: the value that a file lacking one was written with. Every file stores its model's full
#: config, so an absent argument means the file predates it.
WRITTEN_BEFORE: dict[str, dict[str, Any]] = {"mpnn": {"element_mixing": False}}


def _body(cls: type[EnergyModel]) -> type[EnergyModel] | None:
    """The class whose constructor takes the ``**body`` arguments of ``cls`` (its base:
    a shallow ensemble is its body model's arguments plus ``heads``), or None."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return cls.__mro__[1]
    return None


@functools.cache
def parameters(cls: type[EnergyModel]) -> inspect.Signature:
    """The constructor's keyword parameters, those passed on as ``**body`` included."""
    own = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    body = _body(cls)
    if body is not None:
        names = {p.name for p in own}
        own += [p for p in parameters(body).parameters.values() if p.name not in names]
    return inspect.Signature(
        [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.name != "self" else p for p in own]
    )


def _hints(cls: type[EnergyModel]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    body = _body(cls)
    if body is not None:
        hints = {**_hints(body), **hints}
    return {name: hint for name, hint in hints.items() if name not in ("self", "return", "body")}


@functools.cache
def _nested(cls: type[EnergyModel]) -> tuple[str, ...]:
    """The constructor parameters that take built models (annotated ``list[EnergyModel]``,
    or ``EnergyModel`` for one)."""
    return tuple(
        name
        for name, hint in _hints(cls).items()
        if hint == list[EnergyModel] or hint is EnergyModel
    )


@functools.cache
def _argument_types(cls: type[EnergyModel]) -> dict[str, TypeAdapter]:
    """A validator per constructor parameter, from its type hint (see
    :mod:`mlpot.models.arguments`); nested models are checked as specs instead."""
    config = ConfigDict(arbitrary_types_allowed=True)
    return {
        name: TypeAdapter(hint, config=config)
        for name, hint in _hints(cls).items()
        if name not in _nested(cls)
    }


def _describe(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_model_spec(spec: dict[str, Any], *, where: str = "model") -> dict[str, Any]:
    """Raise a clear error if ``spec`` names an unknown model, unknown/missing arguments, or
    an argument of the wrong type or range (checked against the constructor's type hints);
    returns the spec with the arguments as validated (e.g. symbols as atomic numbers)."""
    if not isinstance(spec, dict):
        raise MlpotInputError(
            f"a model spec must be a mapping with a 'name', got {type(spec).__name__}",
            field=where,
        )
    if "name" not in spec:
        raise MlpotInputError(f"missing 'name' (one of {sorted(MODELS)})", field=where)
    name = spec["name"]
    if not isinstance(name, str) or name not in MODELS:
        raise MlpotInputError(
            f"unknown model {name!r}; choose from {sorted(MODELS)}", field=f"{where}.name"
        )
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    signature = parameters(MODELS[name])
    try:
        signature.bind(None, **kwargs)
    except TypeError as err:
        allowed = [p for p in signature.parameters if p != "self"]
        raise MlpotInputError(f"{err}; model {name!r} takes {allowed}", field=where) from None
    types = _argument_types(MODELS[name])
    for key, value in kwargs.items():
        if key not in types:
            continue
        try:
            kwargs[key] = types[key].validate_python(value)
        except ValidationError as err:
            problem = err.errors()[0]
            at = "".join(f"[{p}]" for p in problem["loc"])
            raise MlpotInputError(
                f"model {name!r}: {key}{at} = {_describe(problem.get('input', value))}: "
                f"{problem['msg']}",
                field=f"{where}.{key}",
            ) from None
    for group in _nested(MODELS[name]):
        if group in kwargs:
            kwargs[group] = _check_nested(name, group, kwargs[group], where)
    return {"name": name, **kwargs}


def _check_nested(name: str, group: str, specs: Any, where: str) -> list | dict | EnergyModel:
    """Each nested spec checked (models already built pass as they are)."""
    if _hints(MODELS[name])[group] is EnergyModel:  # one nested model
        if isinstance(specs, EnergyModel):
            return specs
        return check_model_spec(specs, where=f"{where}.{group}")
    if not isinstance(specs, list | tuple):
        raise MlpotInputError(
            f"model {name!r}: {group} must be a list of model specs, got {_describe(specs)}",
            field=f"{where}.{group}",
        )
    return [
        spec
        if isinstance(spec, EnergyModel)
        else check_model_spec(spec, where=f"{where}.{group}[{k}]")
        for k, spec in enumerate(specs)
    ]


def build_model(spec: dict[str, Any]) -> EnergyModel:
    """Build a model from ``{"name": ..., **constructor_kwargs}``, nested models first
    (checked first by :func:`check_model_spec`; a constructor's own consistency checks,
    e.g. ``onset < cutoff``, are :class:`MlpotInputError` too)."""
    return _build(check_model_spec(spec))


def build_model_from_file(spec: dict[str, Any]) -> EnergyModel:
    """:func:`build_model` for a spec read from a file (checkpoint, training state, response
    or diabatic model): arguments the file predates take the value it was written with
    (:data:`WRITTEN_BEFORE`), in nested specs too, so an older file loads as the model
    it describes, while a config without them gets today's defaults."""
    return build_model(_as_written(spec))


def _as_written(spec: Any) -> Any:
    if isinstance(spec, list):
        return [_as_written(item) for item in spec]
    if not isinstance(spec, dict):
        return spec
    spec = {key: _as_written(value) for key, value in spec.items()}
    cls = MODELS.get(spec["name"]) if isinstance(spec.get("name"), str) else None
    for base in cls.__mro__ if cls is not None else ():
        for key, value in WRITTEN_BEFORE.get(getattr(base, "name", ""), {}).items():
            spec.setdefault(key, value)
    return spec


def _build(spec: dict[str, Any]) -> EnergyModel:
    """Build a checked spec."""
    cls = MODELS[spec["name"]]
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    for group in _nested(cls):
        nested = kwargs.get(group)
        if isinstance(nested, dict):
            kwargs[group] = _build(nested)
        elif isinstance(nested, list):
            kwargs[group] = [m if isinstance(m, EnergyModel) else _build(m) for m in nested]
    try:
        return cls(**kwargs)
    except MlpotInputError:
        raise
    except ValueError as err:
        raise MlpotInputError(f"model {spec['name']!r}: {err}", field="model") from None


def with_elements(spec: dict[str, Any], elements: list[int]) -> dict[str, Any]:
    """``spec`` with ``elements`` filled in, if its model takes elements and has none; also
    in the nested specs of a ``sum`` (``terms``) or ``committee`` (``members``)."""
    name = spec.get("name")
    if name in MODELS and "elements" in parameters(MODELS[name]).parameters:
        spec = {"elements": elements, **spec}
    for group in ("terms", "members"):
        if isinstance(spec.get(group), list):
            nested = [with_elements(t, elements) if isinstance(t, dict) else t for t in spec[group]]
            spec = {**spec, group: nested}
    return spec
