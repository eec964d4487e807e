"""The structures and geometric transformations the checks use.

The default structures, built from a model's elements and cutoff, are:

``bulk``
    a rattled, sheared (triclinic) fcc supercell of 32 atoms with (up to) two elements;
``small_cell``
    a rattled, sheared two-atom cell whose three cell vectors are all shorter than the
    cutoff (every atom sees several images of itself and of the other atom);
``slab``
    a rattled fcc(111) slab, periodic along ``a`` and ``b`` only (pbc ``True, True, False``);
``molecule``
    a rattled free cluster of 14 atoms (no cell, no periodicity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc111
from ase.neighborlist import neighbor_list

#: Names of the default structures.
STRUCTURES = ("bulk", "small_cell", "slab", "molecule")

_SHEAR = np.eye(3) + np.array([[0.02, 0.05, -0.03], [0.0, -0.01, 0.04], [0.0, 0.0, 0.03]])


def default_structures(
    elements: Sequence[int],
    cutoff: float,
    *,
    lattice_constant: float = 3.7,
    rattle: float = 0.1,
    seed: int = 7,
    cutoff_margin: float = 0.0,
) -> dict[str, Atoms]:
    """The four default structures (module docstring), decorated with the first two of
    ``elements`` and rattled by ``rattle`` Å; every pair distance stays ``cutoff_margin``
    Å clear of ``cutoff`` (Å). ``lattice_constant`` (Å) must make the small cell smaller
    than the cutoff."""
    a = lattice_constant
    crystal = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
    crystal.set_cell(crystal.cell.array @ _SHEAR, scale_atoms=True)

    edge = a * np.sqrt(2.0 / 3.0)  # CsCl-type cell with the fcc nearest-neighbour distance
    small = Atoms(
        "Cu2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=edge * _SHEAR, pbc=True
    )
    if np.linalg.norm(small.cell.array, axis=1).max() >= cutoff:
        raise ValueError(
            f"small_cell must be smaller than the cutoff ({cutoff} Å): lower lattice_constant"
        )

    slab = fcc111("Cu", size=(2, 2, 3), a=a, vacuum=0.6 * a, periodic=False)
    slab.pbc = (True, True, False)

    corners = [[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    faces = [
        [0.5, 0.5, 0],
        [0.5, 0.5, 1],
        [0.5, 0, 0.5],
        [0.5, 1, 0.5],
        [0, 0.5, 0.5],
        [1, 0.5, 0.5],
    ]
    molecule = Atoms("Cu14", positions=a * np.array(corners + faces), pbc=False)

    rng = np.random.default_rng(seed)
    species = list(elements[:2])
    structures = {"bulk": crystal, "small_cell": small, "slab": slab, "molecule": molecule}
    for atoms in structures.values():
        numbers = np.array([species[k % len(species)] for k in range(len(atoms))])
        atoms.numbers = rng.permutation(numbers)
        _rattle_clear_of_cutoff(atoms, rng, rattle, cutoff, cutoff_margin)
    return structures


def _rattle_clear_of_cutoff(atoms: Atoms, rng, rattle: float, cutoff: float, margin: float):
    """Displace ``atoms`` randomly until no pair distance is within ``margin`` of ``cutoff``."""
    ideal = atoms.positions.copy()
    for _ in range(100):
        atoms.positions = ideal + rng.normal(scale=rattle, size=ideal.shape)
        distances = neighbor_list("d", atoms, cutoff + margin)
        if np.all(np.abs(distances - cutoff) >= margin):
            return
    raise ValueError(f"could not keep all distances {margin} Å clear of the cutoff")


def random_orthogonal(seed: int, *, proper: bool) -> np.ndarray:
    """A random 3x3 orthogonal matrix with determinant +1 (``proper``) or -1, never close
    to the identity or to a permutation of the axes."""
    rng = np.random.default_rng(seed)
    while True:
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        if (np.linalg.det(q) > 0) != proper:
            q[:, 0] = -q[:, 0]
        if np.abs(np.abs(q) - np.eye(3)).max() > 0.1:
            return q


def transformed(atoms: Atoms, rotation: np.ndarray) -> Atoms:
    """``atoms`` with positions and cell vectors rotated by ``rotation`` (x -> R x)."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    out.positions = atoms.positions @ rotation.T
    return out


def dimer(za: int, zb: int, distance: float, direction: Sequence[float]) -> Atoms:
    """A free pair of atoms ``za``, ``zb`` that are ``distance`` Å apart along
    ``direction``."""
    direction = np.asarray(direction, dtype=float)
    direction = direction / np.linalg.norm(direction)
    origin = np.array([0.3, -0.2, 0.1])
    return Atoms([za, zb], positions=[origin, origin + distance * direction], pbc=False)
