"""The whole suite: the checks by name, one function that runs them on a model, and a
test mixin for pytest."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields

import torch
from ase import Atoms

from mlpot.models.base import EnergyModel
from mlpot.testing.batching import check_batched_equals_single, check_supercell_extensivity
from mlpot.testing.case import ConformanceCase, ConformanceError, ConformanceSettings
from mlpot.testing.derivatives import (
    check_forces_finite_difference,
    check_momentum_conservation,
    check_stress_finite_difference,
)
from mlpot.testing.locality import (
    check_cutoff_smoothness,
    check_cutoff_smoothness_in_environment,
    check_isolated_atom,
    check_separated_atoms_are_additive,
)
from mlpot.testing.symmetry import (
    check_permutation,
    check_reflection,
    check_rotation,
    check_translation,
)

#: Every check, by name, in the order they run.
CHECKS: dict[str, Callable[[ConformanceCase], None]] = {
    "rotation": check_rotation,
    "reflection": check_reflection,
    "translation": check_translation,
    "permutation": check_permutation,
    "forces_finite_difference": check_forces_finite_difference,
    "stress_finite_difference": check_stress_finite_difference,
    "momentum_conservation": check_momentum_conservation,
    "batched_equals_single": check_batched_equals_single,
    "supercell_extensivity": check_supercell_extensivity,
    "isolated_atom": check_isolated_atom,
    "separated_atoms_are_additive": check_separated_atoms_are_additive,
    "cutoff_smoothness": check_cutoff_smoothness,
    "cutoff_smoothness_in_environment": check_cutoff_smoothness_in_environment,
}

#: Checks that assume a cutoff: skip them for a term without one (e.g. Ewald electrostatics).
LOCALITY_CHECKS = (
    "isolated_atom",
    "separated_atoms_are_additive",
    "cutoff_smoothness",
    "cutoff_smoothness_in_environment",
)


@dataclass
class ConformanceReport:
    """Which checks passed, failed (with the reason) and were skipped."""

    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failed

    def __str__(self) -> str:
        lines = [f"PASS {name}" for name in self.passed]
        for name, reason in self.failed.items():
            lines.append(f"FAIL {name}: " + reason.replace("\n", "\n     "))
        lines += [f"SKIP {name}" for name in self.skipped]
        lines.append(
            f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"
        )
        return "\n".join(lines)


def check_energy_model(
    model: EnergyModel,
    structures: Mapping[str, Atoms] | None = None,
    *,
    settings: ConformanceSettings | None = None,
    checks: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Run every physics conformance check (:data:`CHECKS`) on ``model`` through
    :class:`~mlpot.calculators.MlpotCalculator`, in float64.

    Args:
        model: an energy model (a copy is checked; the model itself is left as it is).
        structures: named structures (default: those of
            :func:`~mlpot.testing.structures.default_structures` for the model's elements
            and cutoff, shaped by ``settings``).
        settings: structure settings, the model's promises (``inner_cutoffs``,
            ``continuous_forces``) and tolerances.
        checks: names of the checks to run (default: all of :data:`CHECKS`).
        skip: names of checks not to run, e.g. :data:`LOCALITY_CHECKS` for a term without
            a cutoff.
        raise_on_failure: raise :class:`ConformanceError` with the report when a check
            fails; False returns the report instead.

    Returns:
        The report; ``report.ok`` is True when every check that ran passed.

    Example::

        from mlpot.testing import ConformanceSettings, check_energy_model

        check_energy_model(MyTerm(elements=[29, 47], cutoff=4.5).double(),
                           settings=ConformanceSettings(lattice_constant=3.7))
    """
    chosen, skip = set(CHECKS if checks is None else checks), set(skip)
    if unknown := (chosen | skip) - set(CHECKS):
        raise ValueError(f"unknown check(s) {sorted(unknown)}; choose from {list(CHECKS)}")
    case = ConformanceCase(copy.deepcopy(model), structures, settings)
    report = ConformanceReport()
    for name, check in CHECKS.items():
        if name not in chosen - skip:
            report.skipped.append(name)
            continue
        try:
            check(case)
        except ConformanceError as err:
            report.failed[name] = str(err)
        except Exception as err:  # a model that crashes on a structure fails the check
            report.failed[name] = f"{type(err).__name__}: {err}"
        else:
            report.passed.append(name)
    if raise_on_failure and not report.ok:
        raise ConformanceError(f"{type(model).__name__} is not physically consistent:\n{report}")
    return report


class PhysicsConformance:
    """Test mixin: a pytest class that inherits it and implements :meth:`make_model` gets
    one test per check of :data:`CHECKS` (``test_<name>``), all on one model built once
    per class, with one torch thread (small systems).

    Any field of :class:`ConformanceSettings` set as a class attribute shapes the
    structures, the model's promises and the tolerances. Tests of the subclass reach the
    model, structures and calculator through :attr:`case`. Example::

        class TestMyTerm(PhysicsConformance):
            lattice_constant = 3.7

            def make_model(self):
                return MyTerm(elements=[29, 47], cutoff=4.5).double()

    A check that does not apply (a term without a cutoff) is overridden with a skip.
    """

    #: The model under test and its structures, set up once per test class.
    case: ConformanceCase | None = None

    def make_model(self) -> EnergyModel:
        """Return the model under test (it is evaluated in float64)."""
        raise NotImplementedError

    def make_structures(self, model: EnergyModel) -> dict[str, Atoms]:
        """The structures to test (default: the default structures for ``model``)."""
        return self.conformance_settings().structures(model.elements, model.cutoff)

    def conformance_settings(self) -> ConformanceSettings:
        """Every field of :class:`ConformanceSettings` the class sets as an attribute; the
        defaults for the others."""
        names = [f.name for f in fields(ConformanceSettings)]
        return ConformanceSettings(**{n: getattr(self, n) for n in names if hasattr(self, n)})

    @classmethod
    def setup_class(cls) -> None:
        cls._torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            instance = cls()
            model = instance.make_model()
            settings = instance.conformance_settings()
            cls.case = ConformanceCase(model, instance.make_structures(model), settings)
        except BaseException:
            torch.set_num_threads(cls._torch_threads)
            raise

    @classmethod
    def teardown_class(cls) -> None:
        torch.set_num_threads(cls._torch_threads)
        cls.case = None

    def run_check(self, name: str) -> None:
        """Run the check ``name`` of :data:`CHECKS` on :attr:`case`."""
        CHECKS[name](self.case)

    def test_rotation(self):
        self.run_check("rotation")

    def test_reflection(self):
        self.run_check("reflection")

    def test_translation(self):
        self.run_check("translation")

    def test_permutation(self):
        self.run_check("permutation")

    def test_forces_finite_difference(self):
        self.run_check("forces_finite_difference")

    def test_stress_finite_difference(self):
        self.run_check("stress_finite_difference")

    def test_momentum_conservation(self):
        self.run_check("momentum_conservation")

    def test_batched_equals_single(self):
        self.run_check("batched_equals_single")

    def test_supercell_extensivity(self):
        self.run_check("supercell_extensivity")

    def test_isolated_atom(self):
        self.run_check("isolated_atom")

    def test_separated_atoms_are_additive(self):
        self.run_check("separated_atoms_are_additive")

    def test_cutoff_smoothness(self):
        self.run_check("cutoff_smoothness")

    def test_cutoff_smoothness_in_environment(self):
        self.run_check("cutoff_smoothness_in_environment")
