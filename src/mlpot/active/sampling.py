"""Initial configurations: normal-mode sampling (molecules) and rattling (any system)."""

from __future__ import annotations

import tempfile

import numpy as np
from ase import Atoms
from ase.units import kB


def rattled(
    start: Atoms, count: int, *, stdev: float = 0.05, strain: float = 0.0, seed: int = 0
) -> list[Atoms]:
    """``count`` copies with Gaussian displacements (``stdev`` Å) and, for 3D-periodic
    cells, a random symmetric strain of size ``strain``."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = start.copy()
        if strain > 0 and atoms.pbc.all():
            eps = rng.normal(0.0, strain, (3, 3))
            atoms.set_cell(atoms.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += rng.normal(0.0, stdev, atoms.positions.shape)
        frames.append(atoms)
    return frames


def harmonic_modes(atoms: Atoms, calculator, *, delta: float = 0.01):
    """Mass-weighted normal modes of ``atoms`` from the calculator's finite-difference
    Hessian (ASE Vibrations, ``6N`` calls): see :func:`modes_of_hessian`."""
    from ase.vibrations import Vibrations

    atoms = atoms.copy()
    atoms.calc = calculator
    with tempfile.TemporaryDirectory() as tmp:
        vib = Vibrations(atoms, delta=delta, name=f"{tmp}/vib")
        vib.run()
        hessian = vib.get_vibrations().get_hessian_2d()  # (3N, 3N) eV/Å²
    return modes_of_hessian(atoms, hessian)


def modes_of_hessian(atoms: Atoms, hessian: np.ndarray):
    """``(ω² (M,) in eV/(Å² amu), modes (M, N, 3))`` of the Cartesian ``hessian (3N, 3N)``
    (eV/Å²) for the ``M = 3N - 6`` (or ``3N - 5``) vibrational modes, in mass-weighted
    coordinates."""
    masses = np.repeat(atoms.get_masses(), 3)
    weighted = hessian / np.sqrt(np.outer(masses, masses))
    omega2, vectors = np.linalg.eigh(0.5 * (weighted + weighted.T))
    n_rigid = 5 if _is_linear(atoms) else 6
    keep = np.argsort(np.abs(omega2))[n_rigid:]
    keep = keep[np.argsort(omega2[keep])]
    return omega2[keep], vectors[:, keep].T.reshape(len(keep), len(atoms), 3)


def _is_linear(atoms: Atoms) -> bool:
    centred = atoms.positions - atoms.positions.mean(0)
    return len(atoms) < 3 or np.linalg.matrix_rank(centred, tol=1e-3) < 2


def normal_mode_samples(
    atoms: Atoms,
    omega2: np.ndarray,
    modes: np.ndarray,
    count: int,
    *,
    temperature: float,
    seed: int = 0,
) -> list[Atoms]:
    """Classical harmonic samples at ``temperature`` (K): each mode displaced by a Gaussian
    of variance ``kT/ω²``; soft or imaginary modes (ω² ≤ 1e-3) are left out."""
    rng = np.random.default_rng(seed)
    stiff = omega2 > 1e-3
    amplitudes = np.sqrt(kB * temperature / omega2[stiff])  # Å sqrt(amu)
    inv_sqrt_mass = 1.0 / np.sqrt(atoms.get_masses())[:, None]
    frames = []
    for _ in range(count):
        coefficients = rng.normal(size=stiff.sum()) * amplitudes  # (M,)
        displacement = np.einsum("m,mnk->nk", coefficients, modes[stiff]) * inv_sqrt_mass
        sample = atoms.copy()
        sample.positions += displacement
        frames.append(sample)
    return frames
