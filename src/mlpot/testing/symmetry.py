"""Symmetry checks: the energy is invariant, forces and stress equivariant, under rotation,
reflection, translation (with wrapping into the cell) and permutation of atoms."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from mlpot.testing.case import ConformanceCase, Evaluation, assert_close, energy_scale
from mlpot.testing.structures import random_orthogonal, transformed


def _assert_same(
    case: ConformanceCase,
    atoms: Atoms,
    result: Evaluation,
    reference: Evaluation,
    *,
    rotation: np.ndarray | None = None,
    permutation: np.ndarray | None = None,
) -> None:
    """``result`` equals ``reference`` transformed by ``rotation`` and ``permutation``:
    the same energy, rotated and permuted forces, permuted local energies, rotated stress."""
    rtol = case.settings.exact_rtol
    rotation = np.eye(3) if rotation is None else rotation
    order = np.arange(len(atoms)) if permutation is None else permutation
    e_scale = energy_scale(atoms, reference)
    assert_close(result.energy, reference.energy, rtol=rtol, scale=e_scale, what="energy")
    assert_close(result.forces, reference.forces[order] @ rotation.T, rtol=rtol, what="forces")
    assert_close(
        result.local_energies,
        reference.local_energies[order],
        rtol=rtol,
        scale=e_scale,
        what="local energies",
    )
    if reference.stress is not None:
        expected = rotation @ reference.stress @ rotation.T
        assert_close(result.stress, expected, rtol=rtol, what="stress")


def check_rotation(case: ConformanceCase) -> None:
    """E(Rx) = E(x), F(Rx) = R F(x), σ(Rx) = R σ Rᵀ for two random proper rotations of
    every structure (positions and cell rotated together)."""

    def one(name: str) -> None:
        atoms = case.structures[name]
        for seed in (1, 2):
            rotation = random_orthogonal(seed, proper=True)
            result = case.evaluate(transformed(atoms, rotation))
            _assert_same(case, atoms, result, case.reference[name], rotation=rotation)

    case.for_each(case.structures, one)


def check_reflection(case: ConformanceCase) -> None:
    """The same for an improper rotation (a rotation times inversion)."""

    def one(name: str) -> None:
        atoms = case.structures[name]
        rotation = random_orthogonal(3, proper=False)
        result = case.evaluate(transformed(atoms, rotation))
        _assert_same(case, atoms, result, case.reference[name], rotation=rotation)

    case.for_each(case.structures, one)


def check_translation(case: ConformanceCase) -> None:
    """A rigid translation changes nothing; for a periodic structure, neither does wrapping
    the translated atoms back into the cell."""

    def one(name: str) -> None:
        atoms = case.structures[name]
        moved = atoms.copy()
        moved.positions += np.array([1.37, -2.91, 0.53])
        variants = [moved]
        if atoms.pbc.any():
            wrapped = moved.copy()
            wrapped.wrap()
            variants.append(wrapped)
        for variant in variants:
            _assert_same(case, atoms, case.evaluate(variant), case.reference[name])

    case.for_each(case.structures, one)


def check_permutation(case: ConformanceCase) -> None:
    """Relabelling the atoms leaves the energy and stress unchanged and permutes the forces
    and the local energies."""

    def one(name: str) -> None:
        atoms = case.structures[name]
        order = np.random.default_rng(11).permutation(len(atoms))
        result = case.evaluate(atoms[order])
        _assert_same(case, atoms, result, case.reference[name], permutation=order)

    case.for_each(case.structures, one)
