"""Which oracle names may be built: a built-in always, ``module:factory`` only when trusted.

A ``module:factory`` name imports ``module`` and calls ``factory``: it runs whatever code
that module holds. A name that comes from a file (a checkpoint's delta-learning baseline, a
config) is therefore refused unless the caller passes ``trust_code=True`` (the command
line's ``--trust-code``). This module only looks at names: it imports and builds nothing,
so config validation and checkpoint loading can use it (it sits below every package).
"""

from __future__ import annotations

from mlpot.errors import MlpotInputError

#: Oracles that ship with mlpot (:mod:`mlpot.calculators.oracles`): they need no trust.
BUILTIN_ORACLES = ("emt", "lj", "xtb", "pyscf")

TRUST_HINT = (
    "pass trust_code=True (command line: --trust-code) only for a file or config from a "
    "source you trust"
)


def check_oracle_name(name: str, *, trust_code: bool = False) -> None:
    """Raise :class:`MlpotInputError` (field ``oracle``) unless ``name`` is a built-in
    oracle, or a well-formed ``module:factory`` and ``trust_code`` is True. Imports and
    builds nothing."""
    if not isinstance(name, str):
        raise MlpotInputError(
            f"oracle name must be a string, got {type(name).__name__}", field="oracle"
        )
    if name in BUILTIN_ORACLES:
        return
    builtins = list(BUILTIN_ORACLES)
    if ":" not in name:
        raise MlpotInputError(
            f"unknown oracle {name!r}; choose from {builtins} or 'module:factory'",
            field="oracle",
        )
    module, _, factory = name.partition(":")
    if not (all(part.isidentifier() for part in module.split(".")) and factory.isidentifier()):
        raise MlpotInputError(
            f"oracle {name!r} is neither a built-in oracle {builtins} nor "
            "'module:factory' (a dotted module path, a colon, a function name)",
            field="oracle",
        )
    if not trust_code:
        raise MlpotInputError(
            f"oracle {name!r} names code to import and run (module {module!r}); "
            f"built-in oracles are {builtins}; {TRUST_HINT}",
            field="oracle",
        )
