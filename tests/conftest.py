"""Shared fixtures: small datasets generated with ASE's EMT (no binary blobs)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def emt_copper_frames(n_frames: int, *, seed: int = 0) -> list[Atoms]:
    """Cu cells labelled with EMT: bulk, vacancy, rattled and strained 2x2x2 cubic cells."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        if k % 3 == 1:
            del atoms[int(rng.integers(len(atoms)))]  # vacancy
        strain = np.eye(3) + rng.normal(0.0, 0.015, (3, 3))
        atoms.set_cell(atoms.cell @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(stdev=0.04 + 0.04 * (k % 4), seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        labels = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="session")
def emt_copper_xyz(tmp_path_factory) -> str:
    """Path of an extxyz file with 60 EMT-labelled copper cells."""
    import ase.io

    path = tmp_path_factory.mktemp("data") / "cu_emt.xyz"
    ase.io.write(path, emt_copper_frames(60, seed=0))
    return str(path)
