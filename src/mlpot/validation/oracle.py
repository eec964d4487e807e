"""The oracle of a validation: a name with parameters, a ``{"name": ...}`` dict, or any ASE
calculator.

Named oracles are built by :func:`mlpot.calculators.oracles.make_oracle`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ase.calculators.calculator import BaseCalculator

from mlpot.calculators.oracles import make_oracle
from mlpot.errors import MlpotInputError

OracleSpec = str | dict | BaseCalculator


@dataclass
class Oracle:
    """A reference calculator and a way to get a fresh one.

    Attributes:
        name: the oracle name, or the calculator's class name.
        params: the parameters it was built with (empty for a given calculator).
        factory: returns a calculator (a new one for named oracles, the same instance for a
            given calculator).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    factory: Callable[[], BaseCalculator] | None = None
    _calc: BaseCalculator | None = None

    @property
    def calc(self) -> BaseCalculator:
        """The shared calculator instance."""
        if self._calc is None:
            self._calc = self.factory()
        return self._calc

    def fresh(self) -> BaseCalculator:
        """A calculator for a structure of different composition (a new one when possible)."""
        return self.factory()

    @property
    def has_stress(self) -> bool:
        """Whether the calculator implements ``stress``."""
        return "stress" in getattr(self.calc, "implemented_properties", ())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "stress": self.has_stress}


def resolve_oracle(
    spec: OracleSpec, params: dict[str, Any] | None = None, *, trust_code: bool = False
) -> Oracle:
    """An :class:`Oracle` from a name (with ``params``), a dict, or an ASE calculator. A
    ``module:factory`` name imports and runs code: refused unless ``trust_code``."""
    params = dict(params or {})
    if isinstance(spec, BaseCalculator):
        if params:
            raise MlpotInputError(
                "oracle parameters given with a ready calculator", field="oracle_params"
            )
        return Oracle(type(spec).__name__, {}, lambda: spec, spec)
    if isinstance(spec, dict):
        if "name" not in spec:
            raise MlpotInputError("an oracle dict needs a 'name'", field="oracle")
        params = {**{k: v for k, v in spec.items() if k != "name"}, **params}
        spec = spec["name"]
    if not isinstance(spec, str):
        raise MlpotInputError(
            f"oracle must be a name, a dict or an ASE calculator, got {type(spec).__name__}",
            field="oracle",
        )
    # raises a clear error for unknown, untrusted names and bad params
    first = make_oracle(spec, trust_code=trust_code, **params)
    return Oracle(spec, params, lambda: make_oracle(spec, trust_code=trust_code, **params), first)
