"""What every check works on: the model behind the real calculator, its structures, the
settings and tolerances, and one assertion helper with clear messages."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_changes
from ase.stress import voigt_6_to_full_3x3_stress

from mlpot.calculators import MlpotCalculator
from mlpot.models.base import EnergyModel
from mlpot.testing.structures import default_structures


class ConformanceError(AssertionError):
    """A model broke a physical law the conformance suite checks (the message says which,
    on which structure, by how much)."""


@dataclass(frozen=True)
class ConformanceSettings:
    """How the default structures are built, what the model promises, and the tolerances.

    Attributes:
        lattice_constant: fcc lattice constant of the default structures, Å; choose a
            physically reasonable nearest-neighbour distance (``0.707 a``) for the elements.
        rattle: standard deviation of the random displacements, Å.
        seed: seed of the displacements and of the element decoration.
        cutoff_margin: keep every pair distance at least this far from the cutoff, Å (for
            a model whose force is discontinuous there, so finite differences do not
            straddle it).
        inner_cutoffs: further radii where the model switches interactions off, Å (e.g. an
            angular cutoff): the environment smoothness check crosses them too.
        continuous_forces: False for a model whose force jumps at the cutoff by design
            (a shifted potential); the smoothness checks then require the jump.
        exact_rtol: relative tolerance of exact identities (symmetries, batching,
            extensivity), relative to the largest value compared.
        fd_rtol: relative tolerance of analytic against central finite-difference
            derivatives.
        fd_displacement: finite-difference displacement, Å.
        fd_strain: finite-difference strain (dimensionless).
    """

    lattice_constant: float = 3.7
    rattle: float = 0.1
    seed: int = 7
    cutoff_margin: float = 0.0
    inner_cutoffs: tuple[float, ...] = ()
    continuous_forces: bool = True
    exact_rtol: float = 1e-10
    fd_rtol: float = 1e-6
    fd_displacement: float = 1e-5
    fd_strain: float = 1e-5

    def structures(self, elements: Sequence[int], cutoff: float) -> dict[str, Atoms]:
        """The default structures for ``elements`` and ``cutoff`` (Å) with these settings
        (:func:`~mlpot.testing.structures.default_structures`)."""
        return default_structures(
            elements,
            cutoff,
            lattice_constant=self.lattice_constant,
            rattle=self.rattle,
            seed=self.seed,
            cutoff_margin=self.cutoff_margin,
        )


@dataclass(frozen=True)
class Evaluation:
    """What the ASE calculator reports for one structure, in float64.

    Attributes:
        energy: total energy, eV.
        forces: ``(N, 3)``, eV/Å.
        local_energies: per-atom energies ``(N,)``, eV.
        stress: ``(3, 3)``, eV/Å³ (ASE's sign), None unless the structure is periodic in
            all three directions (the calculator offers stress only then).
    """

    energy: float
    forces: np.ndarray
    local_energies: np.ndarray
    stress: np.ndarray | None


def conformance_calculator(model: EnergyModel) -> MlpotCalculator:
    """The calculator the checks evaluate through: float64, no member forces."""
    return MlpotCalculator(model, dtype=torch.float64, force_uncertainty=False)


def evaluate(model: EnergyModel | MlpotCalculator, atoms: Atoms) -> Evaluation:
    """Energy, forces, per-atom energies and stress of ``atoms`` from ``model`` run through
    :class:`~mlpot.calculators.MlpotCalculator` (a model is wrapped in float64 first, which
    converts it in place)."""
    calculator = model if isinstance(model, MlpotCalculator) else conformance_calculator(model)
    calculator.calculate(atoms.copy(), ["energy", "forces"], all_changes)
    results = calculator.results
    stress = results.get("stress")
    return Evaluation(
        energy=float(results["energy"]),
        forces=np.array(results["forces"], dtype=np.float64),
        local_energies=np.array(results["energies"], dtype=np.float64),
        stress=None if stress is None else voigt_6_to_full_3x3_stress(stress),
    )


def assert_close(actual, expected, *, rtol: float, what: str, scale: float | None = None) -> None:
    """Raise :class:`ConformanceError` unless ``max|actual - expected| <= rtol * max(scale,
    1e-3)``, ``scale`` defaulting to ``max|expected|``."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    if actual.shape != expected.shape:
        raise ConformanceError(f"{what}: shape {actual.shape} != {expected.shape}")
    if scale is None:
        scale = float(np.abs(expected).max()) if expected.size else 0.0
    tolerance = rtol * max(scale, 1e-3)
    error = float(np.abs(actual - expected).max()) if expected.size else 0.0
    if not error <= tolerance:  # also catches NaN
        raise ConformanceError(f"{what}: max abs error {error:.3e} > {tolerance:.3e}")


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConformanceError` with ``message`` unless ``condition``."""
    if not condition:
        raise ConformanceError(message)


def energy_scale(atoms: Atoms, result: Evaluation) -> float:
    """The scale energies of ``atoms`` are compared on: ``max(|E|, N meV)``, eV."""
    return max(abs(result.energy), len(atoms) * 1e-3)


def is_periodic_3d(atoms: Atoms) -> bool:
    """True where the calculator gives stress: periodic along three cell vectors."""
    return bool(atoms.pbc.all()) and atoms.cell.rank == 3


class ConformanceCase:
    """A model under test: the real calculator around it, its structures and settings;
    reference results and isolated-atom energies are computed once, on first use.

    Args:
        model: the energy model; the calculator converts it to float64 in place.
        structures: named structures to check (default:
            :func:`~mlpot.testing.structures.default_structures` for the model's elements
            and cutoff).
        settings: structure settings, promises and tolerances.
    """

    def __init__(
        self,
        model: EnergyModel,
        structures: Mapping[str, Atoms] | None = None,
        settings: ConformanceSettings | None = None,
    ) -> None:
        self.settings = settings or ConformanceSettings()
        self.calculator = conformance_calculator(model)
        self.model = self.calculator.model  # float64, evaluation mode
        if structures is None:
            structures = self.settings.structures(model.elements, model.cutoff)
        if not structures:
            raise ValueError("conformance needs at least one structure")
        self.structures = dict(structures)

    def evaluate(self, atoms: Atoms) -> Evaluation:
        """``atoms`` through the case's calculator."""
        return evaluate(self.calculator, atoms)

    @cached_property
    def reference(self) -> dict[str, Evaluation]:
        """Each structure's evaluation, as given."""
        return {name: self.evaluate(atoms) for name, atoms in self.structures.items()}

    @cached_property
    def isolated(self) -> dict[int, float]:
        """Energy of each element as a lone atom in vacuum, eV."""
        return {
            z: self.evaluate(Atoms([z], positions=[[0.0, 0.0, 0.0]])).energy
            for z in self.model.elements
        }

    def periodic(self, *, fully: bool = False) -> list[str]:
        """Names of the structures periodic in some direction (``fully``: in all three,
        where the calculator gives stress)."""
        if fully:
            return [name for name, atoms in self.structures.items() if is_periodic_3d(atoms)]
        return [name for name, atoms in self.structures.items() if atoms.pbc.any()]

    def for_each(self, names: Iterable[str], check: Callable[[str], None]) -> None:
        """Run ``check(name)`` for every structure named; one :class:`ConformanceError`
        lists every structure that failed."""
        failures = []
        for name in names:
            try:
                check(name)
            except ConformanceError as err:
                failures.append(f"{name}: {err}")
        if failures:
            raise ConformanceError("\n".join(failures))
