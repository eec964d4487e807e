"""The physics conformance suite, shipped: hold your own energy term to the standard every
mlpot model meets.

Every check evaluates the model through the real ASE calculator
(:class:`~mlpot.calculators.MlpotCalculator`) in float64: symmetries (rotation,
reflection, translation, permutation) to round-off, forces and stress against ASE's
central finite differences (:mod:`ase.calculators.fd`), momentum conservation, batched
prediction equal to single structures, extensivity of supercells, isolated-atom energies
and smoothness at every cutoff. A failed check raises :class:`ConformanceError` (an
``AssertionError``) that says which law broke, on which structure, by how much. pytest is
not needed; the mixin works with it.

Two ways in::

    from mlpot.testing import check_energy_model
    check_energy_model(my_model)          # raises ConformanceError on any failure

    from mlpot.testing import PhysicsConformance
    class TestMyModel(PhysicsConformance):  # one pytest test per check
        def make_model(self):
            return my_model_factory().double()
"""

from mlpot.testing.case import (
    ConformanceCase,
    ConformanceError,
    ConformanceSettings,
    Evaluation,
    assert_close,
    evaluate,
)
from mlpot.testing.structures import (
    STRUCTURES,
    default_structures,
    dimer,
    random_orthogonal,
    transformed,
)
from mlpot.testing.suite import (
    CHECKS,
    LOCALITY_CHECKS,
    ConformanceReport,
    PhysicsConformance,
    check_energy_model,
)

__all__ = [
    "CHECKS",
    "LOCALITY_CHECKS",
    "STRUCTURES",
    "ConformanceCase",
    "ConformanceError",
    "ConformanceReport",
    "ConformanceSettings",
    "Evaluation",
    "PhysicsConformance",
    "assert_close",
    "check_energy_model",
    "default_structures",
    "dimer",
    "evaluate",
    "random_orthogonal",
    "transformed",
]
