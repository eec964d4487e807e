"""Geometry of the QM/ML embedding (:mod:`mlpot.apps.qmml`): the C² switch, the QM core
and switched groups, the QM centre, minimum images, and capped clusters. No calculators.

All lengths are Å. Groups and bonds are found once, on the first configuration, and kept:
a molecule that dissociates during a run stays one group, a bond that breaks keeps its
link atom (which still follows the two atoms smoothly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.geometry import find_mic

from mlpot.errors import MlpotInputError

GROUP_MODES = ("molecules", "atoms")


class Switch(NamedTuple):
    """Switch values ``s`` and its first and second derivatives (1/Å, 1/Å²)."""

    value: np.ndarray
    first: np.ndarray
    second: np.ndarray


def switch(r: np.ndarray | float, r_core: float, r_buffer: float) -> Switch:
    """Quintic smoothstep of a distance ``r`` (Å): 1 for ``r <= r_core``, 0 for
    ``r >= r_buffer``, ``1 − (10x³ − 15x⁴ + 6x⁵)`` with ``x = (r − r_core)/(r_buffer −
    r_core)`` in between; value, first and second derivatives are continuous everywhere."""
    width = r_buffer - r_core
    x = np.clip((np.asarray(r, dtype=np.float64) - r_core) / width, 0.0, 1.0)
    value = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
    first = -30.0 * x**2 * (1.0 - x) ** 2 / width
    second = -60.0 * x * (1.0 - x) * (1.0 - 2.0 * x) / width**2
    return Switch(value, first, second)


@dataclass
class Cluster:
    """An isolated (capped) cluster cut from the system.

    Attributes:
        atoms: the cluster, real atoms first (``len(indices)``), then hydrogen link atoms.
        indices: system indices of the real atoms, ``(n_real,)``.
        links: ``(n_links, 2)`` system indices ``(inside, outside)`` of each capped bond.
        fractions: ``(n_links,)`` link position ``g`` along each bond.
    """

    atoms: Atoms
    indices: np.ndarray
    links: np.ndarray
    fractions: np.ndarray

    def system_forces(self, forces: np.ndarray, n_atoms: int) -> np.ndarray:
        """Cluster forces ``(len(atoms), 3)`` (eV/Å) as forces on the system's atoms
        ``(n_atoms, 3)``: a link atom's force split ``(1 − g, g)`` over its bond."""
        out = np.zeros((n_atoms, 3))
        n_real = len(self.indices)
        out[self.indices] += forces[:n_real]
        link_forces = forces[n_real:]
        np.add.at(out, self.links[:, 0], (1.0 - self.fractions)[:, None] * link_forces)
        np.add.at(out, self.links[:, 1], self.fractions[:, None] * link_forces)
        return out


@dataclass
class Partition:
    """Where the atoms of one configuration stand.

    Attributes:
        centre: the QM centre ``(3,)``, Å.
        groups: the switched groups (arrays of system indices).
        distances: ``(n_groups,)`` centroid distance of each group from the centre, Å.
        switch: ``s``, ``s'``, ``s''`` of each group, ``(n_groups,)`` each.
        weights: ``(n_atoms,)`` per-atom ``s_i`` (1 in the core, 0 outside every group).
    """

    centre: np.ndarray
    groups: list[np.ndarray]
    distances: np.ndarray
    switch: Switch
    weights: np.ndarray

    def interface_atoms(self) -> np.ndarray:
        """Indices of atoms with ``0 < s_i < 1`` (``r_core < d < r_buffer``)."""
        return np.flatnonzero((self.weights > 0.0) & (self.weights < 1.0))

    def active_groups(self) -> list[int]:
        """Indices of the groups with ``s > 0`` (inside ``r_buffer``)."""
        return [int(k) for k in np.flatnonzero(self.switch.value > 0.0)]


class Regions:
    """The QM core, the switched groups, the bonds to cap, and the QM centre of one
    system (fixed on its first configuration; see :meth:`build`)."""

    def __init__(
        self,
        core: np.ndarray,
        groups: list[np.ndarray],
        bonds: np.ndarray,
        centre_atoms: np.ndarray | None,
        centre_point: np.ndarray | None,
        r_core: float,
        r_buffer: float,
    ) -> None:
        self.core, self.groups, self.bonds = core, groups, bonds
        self.centre_atoms, self.centre_point = centre_atoms, centre_point
        self.r_core, self.r_buffer = r_core, r_buffer

    @classmethod
    def build(
        cls,
        atoms: Atoms,
        *,
        qm_atoms: np.ndarray,
        r_core: float,
        r_buffer: float,
        centre: np.ndarray | None = None,
        centre_point: np.ndarray | None = None,
        groups: str | Sequence[Sequence[int]] = "molecules",
        capping: bool = True,
    ) -> Regions:
        """Regions of ``atoms``: groups are molecules (covalent components of the
        non-core atoms, ASE natural cutoffs), single atoms, or the given index lists."""
        n = len(atoms)
        _check_indices(qm_atoms, n, "qm_atoms")
        core = qm_atoms % n
        centre_atoms = None
        if centre_point is None:
            centre_atoms = core if centre is None else centre
            _check_indices(centre_atoms, n, "centre")
            centre_atoms = centre_atoms % n
        bonds = covalent_bonds(atoms)
        rest = np.setdiff1d(np.arange(n), core)
        if isinstance(groups, str):
            found = [np.array([i]) for i in rest] if groups == "atoms" else None
            found = found if found is not None else _components(rest, bonds, n)
        else:
            found = [np.asarray(g, dtype=int).reshape(-1) for g in groups]
            _check_groups(found, core, n)
            found = [g % n for g in found]
        _check_cell(atoms, r_buffer)
        if centre_atoms is not None:
            for group in found:
                if np.isin(group, centre_atoms).any():
                    raise MlpotInputError(
                        "a centre atom lies in a switched group: put it in qm_atoms",
                        field="centre",
                    )
        bonds = bonds if capping else np.zeros((0, 2), dtype=int)
        return cls(core, found, bonds, centre_atoms, centre_point, r_core, r_buffer)

    def centre(self, atoms: Atoms) -> np.ndarray:
        """The QM centre (Å): the fixed point, or the centroid of the centre atoms."""
        if self.centre_point is not None:
            return np.array(self.centre_point, dtype=np.float64)
        return unwrapped(atoms, self.centre_atoms).mean(axis=0)

    def placed(self, atoms: Atoms, group: np.ndarray, centre: np.ndarray):
        """Positions ``(len(group), 3)`` of ``group`` as one piece at the periodic image
        nearest the centre, and the vector ``(3,)`` from the centre to its centroid (Å)."""
        positions = unwrapped(atoms, group)
        centroid = positions.mean(axis=0)
        vector = mic(centroid - centre, atoms)
        return positions + (centre + vector - centroid), vector

    def partition(self, atoms: Atoms) -> Partition:
        """The centre, the groups' distances and switch values for ``atoms``."""
        centre = self.centre(atoms)
        vectors = [self.placed(atoms, g, centre)[1] for g in self.groups]
        distances = np.array([np.linalg.norm(v) for v in vectors])
        values = switch(distances, self.r_core, self.r_buffer)
        weights = np.zeros(len(atoms))
        for group, s in zip(self.groups, values.value, strict=True):
            weights[group] = s
        weights[self.core] = 1.0
        return Partition(centre, self.groups, distances, values, weights)

    def distance_gradient(self, atoms: Atoms, part: Partition, k: int) -> np.ndarray:
        """``∂d_k/∂R`` ``(n_atoms, 3)``: the derivative of group ``k``'s centroid distance
        from the centre with respect to every position (its atoms and the centre atoms)."""
        gradient = np.zeros((len(atoms), 3))
        group = self.groups[k]
        vector = self.placed(atoms, group, part.centre)[1]
        unit = vector / max(part.distances[k], 1e-300)
        gradient[group] += unit / len(group)
        if self.centre_atoms is not None:
            gradient[self.centre_atoms] -= unit / len(self.centre_atoms)
        return gradient

    def cluster(self, atoms: Atoms, groups: Sequence[np.ndarray]) -> Cluster:
        """The isolated cluster of the core and ``groups``, each placed at the image
        nearest the centre, with hydrogen link atoms on the bonds it cuts."""
        centre = self.centre(atoms)
        parts = ([self.core] if len(self.core) else []) + list(groups)
        if not parts:
            raise MlpotInputError("empty QM cluster", field="qm_atoms")
        indices = np.concatenate(parts)
        positions = np.concatenate([self.placed(atoms, g, centre)[0] for g in parts])
        inside = np.zeros(len(atoms), dtype=bool)
        inside[indices] = True
        cut = self.bonds[inside[self.bonds[:, 0]] != inside[self.bonds[:, 1]]]
        links = np.where(inside[cut[:, :1]], cut, cut[:, ::-1]).reshape(-1, 2)
        radii = covalent_radii[atoms.numbers]
        fractions = (radii[links[:, 0]] + covalent_radii[1]) / (
            radii[links[:, 0]] + radii[links[:, 1]]
        )
        row = np.empty(len(atoms), dtype=int)
        row[indices] = np.arange(len(indices))
        bond_vectors = mic(atoms.positions[links[:, 1]] - atoms.positions[links[:, 0]], atoms)
        caps = positions[row[links[:, 0]]] + fractions[:, None] * bond_vectors
        numbers = np.concatenate([atoms.numbers[indices], np.ones(len(links), dtype=int)])
        cluster = Atoms(numbers=numbers, positions=np.concatenate([positions, caps]))
        zeros = np.zeros(len(links))
        cluster.set_initial_charges(np.concatenate([atoms.get_initial_charges()[indices], zeros]))
        magmoms = atoms.get_initial_magnetic_moments()[indices]
        if magmoms.ndim == 1:
            cluster.set_initial_magnetic_moments(np.concatenate([magmoms, zeros]))
        return Cluster(cluster, indices, links, fractions)


def mic(vectors: np.ndarray, atoms: Atoms) -> np.ndarray:
    """Minimum-image form of ``vectors`` (Å, ``(3,)`` or ``(n, 3)``) in ``atoms``' cell."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if not atoms.pbc.any() or vectors.size == 0:
        return vectors
    return find_mic(vectors.reshape(-1, 3), atoms.cell, atoms.pbc)[0].reshape(vectors.shape)


def unwrapped(atoms: Atoms, indices: np.ndarray) -> np.ndarray:
    """Positions ``(len(indices), 3)`` as one piece: minimum images relative to the first."""
    positions = atoms.positions[indices]
    return positions[0] + mic(positions - positions[0], atoms)


def covalent_bonds(atoms: Atoms) -> np.ndarray:
    """Covalent bonds ``(n_bonds, 2)`` with ``i < j``: atoms closer than 1.2 times the sum
    of their covalent radii (ASE's natural cutoffs)."""
    from ase.neighborlist import NeighborList, natural_cutoffs

    cutoffs = natural_cutoffs(atoms, mult=1.2)
    nl = NeighborList(cutoffs, self_interaction=False, bothways=True, skin=0.0)
    nl.update(atoms)
    pairs = {(i, int(j)) for i in range(len(atoms)) for j in nl.get_neighbors(i)[0] if i < j}
    return np.array(sorted(pairs), dtype=int).reshape(-1, 2)


def _components(rest: np.ndarray, bonds: np.ndarray, n: int) -> list[np.ndarray]:
    """Connected components of the atoms ``rest`` under ``bonds``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = bonds[np.isin(bonds, rest).all(axis=1)]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return [rest[labels[rest] == label] for label in dict.fromkeys(labels[rest].tolist())]


def _check_indices(indices: np.ndarray, n: int, field: str) -> None:
    if len(indices) and (indices.min() < -n or indices.max() >= n):
        raise MlpotInputError(
            f"atom index out of range for {n} atoms: {indices.tolist()}", field=field
        )
    if len(np.unique(indices % n)) != len(indices):
        raise MlpotInputError(f"repeated atom index in {indices.tolist()}", field=field)


def _check_groups(groups: list[np.ndarray], core: np.ndarray, n: int) -> None:
    if any(len(g) == 0 for g in groups):
        raise MlpotInputError("empty group", field="groups")
    members = np.concatenate(groups) if groups else np.zeros(0, dtype=int)
    _check_indices(members, n, "groups")
    if np.isin(members % n, core).any():
        raise MlpotInputError("a group contains a qm_atoms index", field="groups")


def _check_cell(atoms: Atoms, r_buffer: float) -> None:
    """Minimum images need ``r_buffer`` below half the smallest periodic width."""
    if not atoms.pbc.any():
        return
    cell = atoms.cell.complete()
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[a - 2], cell[a - 1])) for a in range(3)]
    smallest = min(w for w, p in zip(widths, atoms.pbc, strict=True) if p)
    if r_buffer >= 0.5 * smallest:
        raise MlpotInputError(
            f"r_buffer {r_buffer} Å is not below half the cell's smallest periodic width "
            f"({smallest:.3f} Å): use a larger cell",
            field="r_buffer",
        )
