"""Oracle answers checked before anything uses them.

An oracle is any ASE calculator, and a faulty one (an SCF that silently diverged, a
driver that returns forces of the wrong shape) must never reach the training data or
an MD integrator. :func:`check_answer` is the one test of an answer; :class:`CheckedOracle`
wraps a calculator so that every answer it gives has passed it, and a bad answer is an
exception the caller's retry logic already handles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes


class OracleAnswerError(RuntimeError):
    """The oracle answered, but the answer is not a usable label."""


#: Allowed shapes of each checked property of an answer (``n`` stands for the atom count).
_SHAPES = {
    "energy": [()],
    "forces": [("n", 3)],
    "stress": [(6,), (3, 3)],
    "dipole": [(3,)],
    "polarizability": [(3, 3)],
}


def check_answer(results: dict[str, Any], n_atoms: int, *, required: Sequence[str] = ()) -> None:
    """Raise :class:`OracleAnswerError` unless ``results`` holds a finite scalar
    ``energy`` (eV), finite ``forces`` of shape ``(n_atoms, 3)`` (eV/Å), every property
    named in ``required`` (e.g. ``dipole``) and, when present, a finite ``stress`` of shape
    ``(6,)`` (Voigt) or ``(3, 3)`` (eV/Å³), a finite ``dipole`` ``(3,)`` (e·Å) and a finite
    ``polarizability`` ``(3, 3)`` (e·Å²/V)."""
    missing = [k for k in ("energy", "forces", *required) if k not in results]
    if missing:
        raise OracleAnswerError(f"oracle gave no {' or '.join(missing)}")
    shapes = {
        key: [tuple(n_atoms if d == "n" else d for d in shape) for shape in allowed]
        for key, allowed in _SHAPES.items()
    }
    for key, allowed in shapes.items():
        if key not in results:
            continue
        try:
            value = np.asarray(results[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise OracleAnswerError(f"oracle returned a non-numeric {key}") from None
        if value.shape not in allowed:
            want = " or ".join(str(s) for s in allowed)
            raise OracleAnswerError(f"oracle returned {key} of shape {value.shape}, not {want}")
        if not np.all(np.isfinite(value)):
            raise OracleAnswerError(f"oracle returned non-finite {key}")


def check_structure(atoms: Atoms) -> None:
    """Raise :class:`OracleAnswerError` if positions (or the cell) are not finite."""
    if not np.all(np.isfinite(atoms.positions)):
        raise OracleAnswerError("non-finite positions")
    if not np.all(np.isfinite(atoms.cell.array)):
        raise OracleAnswerError("non-finite cell")


class CheckedOracle(Calculator):
    """``calculator`` whose energy, forces (and stress, dipole, polarizability) are checked
    by :func:`check_answer` on every evaluation; a bad answer raises
    :class:`OracleAnswerError`, so MD, relaxation and finite differences run on the oracle
    never integrate or store it."""

    def __init__(self, calculator: Calculator) -> None:
        super().__init__()
        self.calculator = calculator
        self.implemented_properties = list(calculator.implemented_properties)

    def calculate(
        self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        check_structure(self.atoms)
        wanted = {"energy", "forces", *properties}
        results = {name: self.calculator.get_property(name, self.atoms) for name in wanted}
        check_answer(results, len(self.atoms))
        if "free_energy" not in results and "free_energy" in self.calculator.results:
            results["free_energy"] = self.calculator.results["free_energy"]
        self.results = results
