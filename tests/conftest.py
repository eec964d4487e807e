"""Shared fixtures: small datasets generated with ASE's EMT (no binary blobs)."""

from __future__ import annotations

import os

# Test systems are small: one thread per process is faster than two fighting over two cores
# (and subprocesses started by tests inherit this).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

torch.set_num_threads(1)


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
