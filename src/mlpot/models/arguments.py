"""Types of model constructor arguments, checked from the constructors' type hints.

:func:`mlpot.models.registry.check_model_spec` validates every argument of a spec against
the type hint of its constructor parameter (with pydantic), so a wrong type or an
out-of-range value is one clear error naming the argument before anything is built. The
hints here carry the ranges: a cutoff is a finite length > 0, layer sizes are positive
integers, elements are atomic numbers (or chemical symbols, turned into numbers).
"""

from __future__ import annotations

from typing import Annotated, Literal

from ase.data import atomic_numbers
from pydantic import BeforeValidator, ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12


def _atomic_number(value: object) -> object:
    """A chemical symbol becomes its atomic number; anything else is checked as an int."""
    if isinstance(value, str) and not value.strip().isdigit():
        if value not in atomic_numbers or value == "X":
            raise ValueError(f"{value!r} is neither an atomic number nor a chemical symbol")
        return atomic_numbers[value]
    return value


#: An element: atomic number 1-118 or chemical symbol (``"Cu"``).
AtomicNumber = Annotated[int, BeforeValidator(_atomic_number), Field(ge=1, le=118)]
#: The elements of a model: at least one.
Elements = Annotated[list[AtomicNumber], Field(min_length=1)]
#: A finite number.
Real = Annotated[float, Field(allow_inf_nan=False)]
#: A finite length (or width, or energy scale) > 0: cutoffs, smearing, sigma.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: A finite number >= 0.
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: A count or layer width >= 1.
Count = Annotated[int, Field(ge=1)]
#: At least one width >= 0 (ACSF angular Gaussians), Å⁻².
Widths = Annotated[list[NonNegative], Field(min_length=1)]
#: A count >= 0.
NonNegativeCount = Annotated[int, Field(ge=0)]
#: Nonlinearity of the networks (see :data:`mlpot.nn.mlp.ACTIVATIONS`).
Activation = Literal["silu", "tanh", "softplus"]
#: Sign of the angular term of an ACSF.
Lambda = Literal[1, -1]
#: A relative accuracy in (0, 1).
Fraction = Annotated[float, Field(gt=0, lt=1)]
#: Periodic summation method of the long-range terms.
SumMethod = Literal["ewald", "pme"]
#: P3M B-spline order (6 and 7 are read as 5).
InterpolationNodes = Annotated[int, Field(ge=3, le=7)]
#: Descriptor of a Behler–Parrinello network.
Descriptor = Literal["acsf", "soap"]


@with_config(ConfigDict(extra="forbid"))
class SoapOptions(TypedDict, total=False):
    """SOAP hyper-parameters (:class:`mlpot.nn.soap.SOAP`; each optional)."""

    max_radial: NonNegativeCount
    max_angular: NonNegativeCount
    density_width: Positive
    smoothing_width: Positive
    center_atom_weight: NonNegative
