"""Relaxed torsion scans: the energy profile ``E(φ)`` of one dihedral, everything else
relaxed, with its slope ``dE/dφ`` from the constraint force.

At each target angle the dihedral ``i-j-k-l`` is set by rotating the part of the molecule on
the ``k`` side of the ``j-k`` bond, held fixed (:class:`ase.constraints.FixInternals`), and
the rest relaxed (BFGS to ``fmax``). At a constrained minimum ``∇E = λ ∇φ``, and by the
envelope theorem the relaxed profile's slope is ``dE/dφ = λ = (∇E · ∇φ) / |∇φ|²``; so every
scan point gives an energy and a derivative (eV, eV/rad) for the Bayesian fit of
:mod:`mlpot.apps.torsion`.

The dihedral follows the IUPAC sign convention (as :meth:`ase.Atoms.get_dihedral`);
angles here are in radians except the target angles of :func:`relaxed_scan` (degrees, as
ASE's constraints take them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.constraints import FixInternals
from ase.neighborlist import natural_cutoffs, neighbor_list
from ase.optimize import BFGS
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mlpot.errors import MlpotInputError

Dihedral = tuple[int, int, int, int]


@dataclass(frozen=True)
class TorsionScan:
    """One relaxed scan.

    Args:
        angles: the scanned dihedral at each relaxed geometry, rad, ``(n,)``.
        energies: potential energies, eV, ``(n,)``.
        derivatives: slopes ``dE/dφ`` of the relaxed profile, eV/rad, ``(n,)``, or None.
        dihedral: the four atom indices.
        converged: whether each relaxation reached ``fmax``, ``(n,)``.
        frames: the relaxed geometries (with energies), or empty.
    """

    angles: np.ndarray
    energies: np.ndarray
    derivatives: np.ndarray | None = None
    dihedral: Dihedral | None = None
    converged: np.ndarray | None = None
    frames: list[Atoms] = field(default_factory=list)

    def __post_init__(self) -> None:
        angles = np.asarray(self.angles, dtype=float)
        energies = np.asarray(self.energies, dtype=float)
        if angles.ndim != 1 or angles.shape != energies.shape or len(angles) == 0:
            raise MlpotInputError(
                f"angles {angles.shape} and energies {energies.shape} must be equal-length 1D",
                field="energies",
            )
        if not (np.all(np.isfinite(angles)) and np.all(np.isfinite(energies))):
            raise MlpotInputError("angles or energies contain NaN or inf", field="energies")
        object.__setattr__(self, "angles", angles)
        object.__setattr__(self, "energies", energies)
        if self.derivatives is not None:
            derivatives = np.asarray(self.derivatives, dtype=float)
            if derivatives.shape != angles.shape or not np.all(np.isfinite(derivatives)):
                raise MlpotInputError(
                    "derivatives must be finite, one per angle", field="derivatives"
                )
            object.__setattr__(self, "derivatives", derivatives)


def dihedral_angle(positions: np.ndarray, dihedral: Dihedral) -> float:
    """The dihedral ``i-j-k-l`` (rad, in ``(-π, π]``) of ``positions`` (Å)."""
    i, j, k, l = dihedral
    b1 = positions[j] - positions[i]
    b2 = positions[k] - positions[j]
    b3 = positions[l] - positions[k]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return float(np.arctan2(np.linalg.norm(b2) * np.dot(b1, n2), np.dot(n1, n2)))


def dihedral_gradient(positions: np.ndarray, dihedral: Dihedral) -> np.ndarray:
    """``∂φ/∂x`` of the four atoms ``i, j, k, l`` (rad/Å), ``(4, 3)`` (Blondel and Karplus,
    J. Comput. Chem. 17, 1132 (1996)). Raises when three of the atoms are collinear."""
    i, j, k, l = dihedral
    f = positions[i] - positions[j]
    g = positions[j] - positions[k]
    h = positions[l] - positions[k]
    a, b = np.cross(f, g), np.cross(h, g)
    aa, bb, gn = a @ a, b @ b, np.linalg.norm(g)
    if min(aa, bb) < 1e-12 * max(gn, 1.0) ** 4:
        raise MlpotInputError(f"dihedral {dihedral} is undefined (collinear atoms)")
    d_i = -gn / aa * a
    d_l = gn / bb * b
    fg, hg = (f @ g) / (aa * gn), (h @ g) / (bb * gn)
    d_j = gn / aa * a + fg * a - hg * b
    d_k = -gn / bb * b - fg * a + hg * b
    return np.array([d_i, d_j, d_k, d_l])


def torsion_derivative(atoms: Atoms, forces: np.ndarray, dihedral: Dihedral) -> float:
    """``dE/dφ = (∇E · ∇φ) / |∇φ|²`` (eV/rad) from unconstrained ``forces`` (eV/Å): the
    slope of the relaxed profile at a constrained minimum."""
    gradient = dihedral_gradient(atoms.positions, dihedral)
    return float(-np.sum(forces[list(dihedral)] * gradient) / np.sum(gradient * gradient))


def rotating_side(atoms: Atoms, j: int, k: int) -> list[int]:
    """Atoms on the ``k`` side of the ``j-k`` bond (covalent radii bonding graph); raises if
    the bond is in a ring (no side can rotate alone)."""
    first, second = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    keep = ~(((first == j) & (second == k)) | ((first == k) & (second == j)))
    n = len(atoms)
    graph = coo_matrix((np.ones(keep.sum()), (first[keep], second[keep])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    if labels[j] == labels[k]:
        raise MlpotInputError(f"bond {j}-{k} is in a ring: its dihedral cannot be scanned")
    return [int(a) for a in np.flatnonzero(labels == labels[k])]


def _check_dihedral(atoms: Atoms, dihedral: Sequence[int]) -> Dihedral:
    if len(dihedral) != 4 or len(set(dihedral)) != 4:
        raise MlpotInputError(f"a dihedral needs 4 distinct atoms, got {dihedral}")
    if not all(0 <= int(a) < len(atoms) for a in dihedral):
        raise MlpotInputError(f"dihedral {dihedral} names atoms outside 0..{len(atoms) - 1}")
    return tuple(int(a) for a in dihedral)


def relaxed_scan(
    atoms: Atoms,
    calc,
    dihedral: Sequence[int],
    angles_deg: Sequence[float],
    *,
    fmax: float = 0.01,
    steps: int = 300,
    keep_frames: bool = True,
) -> TorsionScan:
    """A relaxed scan of ``dihedral`` over ``angles_deg`` (degrees, visited in order, each
    started from the previous relaxed geometry), with any ASE calculator (a learned
    potential or an oracle).

    Args:
        atoms: the molecule (not changed).
        calc: the ASE calculator.
        dihedral: atom indices ``i, j, k, l``.
        angles_deg: target dihedrals, degrees.
        fmax: BFGS convergence on the constrained forces, eV/Å.
        steps: most BFGS steps per angle.
        keep_frames: keep the relaxed geometries in the result.
    """
    dihedral = _check_dihedral(atoms, dihedral)
    if fmax <= 0 or steps < 1:
        raise MlpotInputError("fmax must be positive and steps at least 1")
    moving = rotating_side(atoms, dihedral[1], dihedral[2])
    work = atoms.copy()
    work.set_constraint()
    work.calc = calc
    angles, energies, slopes, converged, frames = [], [], [], [], []
    for target in angles_deg:
        work.set_constraint()
        work.set_dihedral(*dihedral, float(target), indices=moving)
        work.set_constraint(FixInternals(dihedrals_deg=[[float(target), list(dihedral)]]))
        optimizer = BFGS(work, logfile=None)
        converged.append(bool(optimizer.run(fmax=fmax, steps=steps)))
        forces = work.get_forces(apply_constraint=False)
        energies.append(work.get_potential_energy())
        angles.append(dihedral_angle(work.positions, dihedral))
        slopes.append(torsion_derivative(work, forces, dihedral))
        if keep_frames:
            frame = work.copy()
            frame.set_constraint()
            frame.info.update(energy=energies[-1], dihedral_deg=float(np.degrees(angles[-1])))
            frames.append(frame)
    return TorsionScan(
        angles=np.array(angles),
        energies=np.array(energies),
        derivatives=np.array(slopes),
        dihedral=dihedral,
        converged=np.array(converged),
        frames=frames,
    )
