"""The registry of energy models: name -> class, and (re)building from a spec dict."""

from __future__ import annotations

import inspect
from typing import Any

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


def check_model_spec(spec: dict[str, Any], *, where: str = "model") -> None:
    """Raise a clear error if ``spec`` names an unknown model or unknown/missing arguments."""
    if "name" not in spec:
        raise MlpotInputError(f"missing 'name' (one of {sorted(MODELS)})", field=where)
    name = spec["name"]
    if name not in MODELS:
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
    for group in ("terms", "members"):  # nested specs of sum and committee
        for k, term in enumerate(kwargs.get(group, []) if name in ("sum", "committee") else []):
            if isinstance(term, dict):
                check_model_spec(term, where=f"{where}.{group}[{k}]")


def build_model(spec: dict[str, Any]) -> EnergyModel:
    """Build a model from ``{"name": ..., **constructor_kwargs}``."""
    check_model_spec(spec)
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    return MODELS[spec["name"]](**kwargs)


def model_spec(model: EnergyModel) -> dict[str, Any]:
    """The spec that :func:`build_model` turns back into an (untrained) copy of ``model``."""
    return {"name": model.name, **model.config()}
