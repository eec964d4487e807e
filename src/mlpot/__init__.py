"""mlpot: machine-learned interatomic potentials you can trust.

Units everywhere are ASE's: eV, Å, eV/Å, eV/Å³, fs, K, amu.
"""

from importlib.metadata import PackageNotFoundError, version

from mlpot.errors import MlpotInputError

try:
    __version__ = version("mlpot")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def load_calculator(path, **kwargs):
    """Load a checkpoint as an ASE calculator; see :func:`mlpot.calculators.load_calculator`."""
    from mlpot.calculators import load_calculator as _load

    return _load(path, **kwargs)


def load_model(path, **kwargs):
    """Load a checkpoint as an energy model; see :func:`mlpot.models.checkpoint.load_model`."""
    from mlpot.models.checkpoint import load_model as _load

    return _load(path, **kwargs)


__all__ = ["MlpotInputError", "__version__", "load_calculator", "load_model"]
