"""Collective variables with exact derivatives: a distance, an angle, a dihedral and a
difference of two distances (a proton-transfer coordinate).

A collective variable (CV) maps positions ``(n_atoms, 3)`` (Å) to one number and gives its
gradient ``(n_atoms, 3)``; distances are in Å, angles and dihedrals in radians. Periodic
cells are honoured by the minimum-image convention on each bond vector. A dihedral is
periodic (period 2π): :meth:`CollectiveVariable.difference` wraps differences into
(−π, π], which restraints and histograms use.

On the command line a CV is written ``kind:i,j[,k[,l]]`` with 0-based atom indices, e.g.
``distance:0,1``, ``angle:1,0,2``, ``dihedral:0,1,2,3`` or
``distance-difference:0,5,5,8`` (d(0,5) − d(5,8)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

from mlpot.errors import MlpotInputError

ATOMS_PER_KIND = {"distance": 2, "angle": 3, "dihedral": 4, "distance-difference": 4}
UNITS = {"distance": "Å", "angle": "rad", "dihedral": "rad", "distance-difference": "Å"}


@dataclass(frozen=True)
class CollectiveVariable:
    """One CV: ``kind`` (a key of :data:`ATOMS_PER_KIND`) of the atoms ``indices``."""

    kind: str
    indices: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in ATOMS_PER_KIND:
            raise MlpotInputError(
                f"unknown collective variable {self.kind!r}: one of {', '.join(ATOMS_PER_KIND)}",
                field="cv",
            )
        if len(self.indices) != ATOMS_PER_KIND[self.kind]:
            raise MlpotInputError(
                f"a {self.kind} needs {ATOMS_PER_KIND[self.kind]} atom indices, "
                f"got {len(self.indices)}: {list(self.indices)}",
                field="cv",
            )
        distinct = set(self.indices) if self.kind != "distance-difference" else None
        if distinct is not None and len(distinct) != len(self.indices):
            raise MlpotInputError(
                f"the atoms of a {self.kind} must be distinct: {list(self.indices)}", field="cv"
            )

    @property
    def periodic(self) -> bool:
        """True for a dihedral (period 2π)."""
        return self.kind == "dihedral"

    @property
    def unit(self) -> str:
        return UNITS[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(str(i) for i in self.indices)}"

    def check_atoms(self, atoms: Atoms) -> None:
        """Refuse indices outside ``atoms``, naming the CV."""
        bad = [i for i in self.indices if not 0 <= i < len(atoms)]
        if bad:
            raise MlpotInputError(
                f"collective variable {self}: atom indices {bad} outside the structure of "
                f"{len(atoms)} atoms (indices are 0-based)",
                field="cv",
            )

    def value(self, atoms: Atoms) -> float:
        return self.evaluate(atoms)[0]

    def evaluate(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        """The CV and its gradient ``(n_atoms, 3)`` with respect to the positions."""
        gradient = np.zeros((len(atoms), 3))
        vectors = _bond_vectors(atoms, self.indices)
        if self.kind == "distance":
            value, parts = _distance(vectors[0])
        elif self.kind == "distance-difference":
            first, part_1 = _distance(vectors[0])
            second, part_2 = _distance(_bond_vectors(atoms, self.indices[2:])[0])
            value, parts = first - second, (*part_1, *(-p for p in part_2))
        elif self.kind == "angle":
            value, parts = _angle(-vectors[0], vectors[1])
        else:
            value, parts = _dihedral(*vectors)
        for index, part in zip(self.indices, parts, strict=True):
            gradient[index] += part
        return float(value), gradient

    def difference(self, value, reference):
        """``value − reference``, wrapped into (−π, π] for a dihedral."""
        delta = np.asarray(value, dtype=float) - reference
        if self.periodic:
            delta = np.pi - np.mod(np.pi - delta, 2.0 * np.pi)
        return delta


def _bond_vectors(atoms: Atoms, indices) -> np.ndarray:
    """Vectors from each listed atom to the next (minimum image in periodic cells), Å."""
    positions = atoms.positions[list(indices)]
    vectors = positions[1:] - positions[:-1]
    if atoms.pbc.any():
        vectors, _ = find_mic(vectors, atoms.cell, atoms.pbc)
    return vectors


def _distance(b: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    r = float(np.linalg.norm(b))
    if r == 0.0:
        raise MlpotInputError("a distance collective variable of two atoms on top of each other")
    unit = b / r
    return r, (-unit, unit)


def _angle(u: np.ndarray, v: np.ndarray):
    """Angle at the middle atom between u (middle -> first) and v (middle -> last)."""
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    cos = float(np.clip(u @ v / (nu * nv), -1.0, 1.0))
    theta = float(np.arccos(cos))
    sin = np.sin(theta)
    if sin < 1e-8:
        raise MlpotInputError("an angle collective variable at 0 or 180 degrees has no gradient")
    d_first = -(v / (nu * nv) - cos * u / nu**2) / sin  # d theta / d u
    d_last = -(u / (nu * nv) - cos * v / nv**2) / sin
    return theta, (d_first, -d_first - d_last, d_last)


def _dihedral(b1: np.ndarray, b2: np.ndarray, b3: np.ndarray):
    """Dihedral (radians, in (−π, π]) of four atoms with bond vectors b1, b2, b3, and the
    gradient of its standard analytic form (Blondel and Karplus)."""
    m, n = np.cross(b1, b2), np.cross(b2, b3)
    m2, n2 = m @ m, n @ n
    lb2 = float(np.linalg.norm(b2))
    if m2 < 1e-16 or n2 < 1e-16:
        raise MlpotInputError("a dihedral collective variable with three collinear atoms")
    phi = float(np.arctan2(lb2 * (b1 @ n), m @ n))
    g1 = -lb2 * m / m2
    g4 = lb2 * n / n2
    f1 = (b1 @ b2) / lb2**2
    f3 = (b3 @ b2) / lb2**2
    g2 = -g1 - f1 * g1 + f3 * g4
    g3 = -g1 - g2 - g4  # translation invariance
    return phi, (g1, g2, g3, g4)


def parse_cv(text: str) -> CollectiveVariable:
    """``"distance:0,1"`` -> a :class:`CollectiveVariable` (0-based indices)."""
    kind, _, rest = text.partition(":")
    try:
        indices = tuple(int(part) for part in rest.split(","))
    except ValueError:
        raise MlpotInputError(
            f"collective variable {text!r}: write kind:i,j[,k[,l]] with integer atom indices, "
            "e.g. distance:0,1 or dihedral:0,1,2,3",
            field="cv",
        ) from None
    return CollectiveVariable(kind.strip().lower(), indices)
