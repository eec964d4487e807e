"""The registry of energy models: name -> class, and (re)building from a spec dict."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.behler_parrinello import BehlerParrinello
from mlpot.models.charge_equilibration import ChargeEquilibration
from mlpot.models.committee import Committee
from mlpot.models.coulomb import Coulomb
from mlpot.models.dispersion import Dispersion
from mlpot.models.lennard_jones import LennardJones
from mlpot.models.mpnn import CartesianMPNN
from mlpot.models.offsets import AtomicOffsets
from mlpot.models.shallow_ensemble import ShallowEnsembleBPNN
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
        Coulomb,
        ChargeEquilibration,
        ZBL,
        Dispersion,
    )
}


@functools.cache
def _argument_types(cls: type[EnergyModel]) -> dict[str, TypeAdapter]:
    """A validator per constructor parameter, from its type hint (see
    :mod:`mlpot.models.arguments`)."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    config = ConfigDict(arbitrary_types_allowed=True)
    return {
        name: TypeAdapter(hint, config=config)
        for name, hint in hints.items()
        if name not in ("self", "return")
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
    signature = inspect.signature(MODELS[name].__init__)
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
    for group in ("terms", "members"):  # nested specs of sum and committee
        if name not in ("sum", "committee"):
            continue
        if group in kwargs:
            kwargs[group] = [
                check_model_spec(term, where=f"{where}.{group}[{k}]")
                if isinstance(term, dict)
                else term
                for k, term in enumerate(kwargs[group])
            ]
    return {"name": name, **kwargs}


def build_model(spec: dict[str, Any]) -> EnergyModel:
    """Build a model from ``{"name": ..., **constructor_kwargs}`` (checked first by
    :func:`check_model_spec`; a constructor's own consistency checks, e.g. ``onset <
    cutoff``, are :class:`MlpotInputError` too)."""
    spec = check_model_spec(spec)
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    try:
        return MODELS[spec["name"]](**kwargs)
    except MlpotInputError:
        raise
    except ValueError as err:
        raise MlpotInputError(f"model {spec['name']!r}: {err}", field="model") from None


def model_spec(model: EnergyModel) -> dict[str, Any]:
    """The spec that :func:`build_model` turns back into an (untrained) copy of ``model``."""
    return {"name": model.name, **model.config()}
