"""Reading labelled structures: extxyz files and ASE databases, default and custom keys.

Every file is real (written with ``ase.io.write`` / ``ase.db.connect``) and labelled by EMT.
"""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot.data.dataset import LabelKeys, read_dataset, sample_to_graph
from mlpot.data.graph import CELL, PBC, STRESS, STRESS_MASK

# extxyz stores per-atom columns with 8 decimals; per-frame values keep full precision.
COLUMN_ATOL = 1e-7


def strained_cu(seed: int) -> Atoms:
    """A rattled, generally strained 4-atom Cu cell: every stress component is distinct."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    strain = np.array([[0.010, 0.004, -0.006], [0.002, -0.008, 0.005], [0.003, 0.001, 0.012]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + (seed + 1) * strain), scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def emt_labelled(atoms: Atoms, *, stress: bool | None = None) -> Atoms:
    """Label with EMT, keeping the results in a SinglePointCalculator (stress if periodic)."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress if stress is not None else atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def cu_cluster() -> Atoms:
    return Atoms(
        "Cu3",
        positions=[[0.0, 0.0, 0.0], [2.5, 0.1, 0.0], [1.2, 2.2, 0.3]],
        pbc=False,
    )


# ---------------------------------------------------------------------------- extxyz


def test_extxyz_energy_forces_stress_read_back(tmp_path):
    frames = [emt_labelled(strained_cu(seed)) for seed in range(3)]
    path = tmp_path / "labelled.xyz"
    ase.io.write(path, frames)

    samples = read_dataset(path)

    assert len(samples) == 3
    for k, (sample, ref) in enumerate(zip(samples, frames, strict=True)):
        assert sample.source == str(path)
        assert sample.frame == k
        assert sample.n_atoms == len(ref)
        np.testing.assert_array_equal(sample.atoms.numbers, ref.numbers)
        np.testing.assert_allclose(sample.atoms.cell.array, ref.cell.array, atol=1e-12)
        assert sample.energy == pytest.approx(ref.get_potential_energy(), abs=1e-12)
        assert sample.forces.shape == (len(ref), 3)
        np.testing.assert_allclose(sample.forces, ref.get_forces(), atol=COLUMN_ATOL)
        assert sample.stress.shape == (3, 3)
        np.testing.assert_allclose(sample.stress, ref.get_stress(voigt=False), atol=1e-12)
    # the check above is only meaningful if the off-diagonal components all differ
    off_diagonal = samples[0].stress[np.triu_indices(3, k=1)]
    assert len(set(np.round(off_diagonal, 8))) == 3


@pytest.mark.parametrize("where", ["calculator", "info REF_stress"])
def test_voigt_stress_becomes_3x3_in_order_xx_yy_zz_yz_xz_xy(tmp_path, where):
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # xx yy zz yz xz xy
    expected = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    atoms = strained_cu(0)
    forces = np.zeros((len(atoms), 3))
    if where == "calculator":
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=forces, stress=voigt)
        np.testing.assert_array_equal(atoms.get_stress(voigt=False), expected)  # ASE agrees
    else:
        atoms.info["REF_energy"] = -1.0
        atoms.arrays["REF_forces"] = forces
        atoms.info["REF_stress"] = voigt
    path = tmp_path / "voigt.xyz"
    ase.io.write(path, atoms)

    (sample,) = read_dataset(path)

    np.testing.assert_array_equal(sample.stress, expected)


def ref_labelled_frames(n: int = 3) -> list[Atoms]:
    frames = []
    for seed in range(n):
        atoms = emt_labelled(strained_cu(seed), stress=False)
        plain = atoms.copy()  # labels only under REF_*, no calculator
        plain.info["REF_energy"] = atoms.get_potential_energy()
        plain.arrays["REF_forces"] = atoms.get_forces()
        frames.append(plain)
    return frames


@pytest.mark.parametrize(
    "keys",
    [LabelKeys(), LabelKeys(energy="REF_energy", forces="REF_forces")],
    ids=["default", "explicit"],
)
def test_ref_keys_in_info_and_arrays(tmp_path, keys):
    frames = ref_labelled_frames()
    path = tmp_path / "ref.xyz"
    ase.io.write(path, frames)

    samples = read_dataset(path, keys)

    assert [s.energy for s in samples] == pytest.approx([a.info["REF_energy"] for a in frames])
    for sample, ref in zip(samples, frames, strict=True):
        np.testing.assert_allclose(sample.forces, ref.arrays["REF_forces"], atol=COLUMN_ATOL)
        assert sample.stress is None


def test_user_keys_are_used_when_given_and_win_over_calculator_results(tmp_path):
    frames = []
    for seed in range(3):
        atoms = emt_labelled(strained_cu(seed), stress=False)
        atoms.info["dft_energy"] = 100.0 + seed
        atoms.arrays["dft_forces"] = np.full((len(atoms), 3), 0.25 * seed)
        frames.append(atoms)
    path = tmp_path / "dft.xyz"
    ase.io.write(path, frames)

    custom = read_dataset(path, LabelKeys(energy="dft_energy", forces="dft_forces"))
    default = read_dataset(path)

    assert [s.energy for s in custom] == [100.0, 101.0, 102.0]
    for seed, sample in enumerate(custom):
        np.testing.assert_array_equal(sample.forces, np.full((4, 3), 0.25 * seed))
    # with no key, the calculator results (ASE's energy/forces) are the labels
    assert [s.energy for s in default] == pytest.approx(
        [a.get_potential_energy() for a in frames], abs=1e-12
    )
    for sample, ref in zip(default, frames, strict=True):
        np.testing.assert_allclose(sample.forces, ref.get_forces(), atol=COLUMN_ATOL)


def test_user_energy_key_with_default_forces(tmp_path):
    frames = ref_labelled_frames()
    for k, atoms in enumerate(frames):
        atoms.info["dft_energy"] = -7.5 - k
    path = tmp_path / "mixed_keys.xyz"
    ase.io.write(path, frames)

    samples = read_dataset(path, LabelKeys(energy="dft_energy"))

    assert [s.energy for s in samples] == [-7.5, -8.5, -9.5]
    for sample, ref in zip(samples, frames, strict=True):
        np.testing.assert_allclose(sample.forces, ref.arrays["REF_forces"], atol=COLUMN_ATOL)


# ------------------------------------------------------------------------ databases


@pytest.mark.parametrize("suffix", [".db", ".json"])
def test_database_with_calculator_results(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    frames = []
    with ase.db.connect(path) as db:
        for seed in range(3):
            atoms = strained_cu(seed)
            atoms.calc = EMT()
            atoms.get_stress()
            db.write(atoms)
            frames.append(atoms)

    samples = read_dataset(path)

    assert len(samples) == 3
    for k, (sample, ref) in enumerate(zip(samples, frames, strict=True)):
        assert sample.source == str(path)
        assert sample.frame == k
        np.testing.assert_allclose(sample.atoms.positions, ref.positions, atol=1e-12)
        assert sample.energy == pytest.approx(ref.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(sample.forces, ref.get_forces(), atol=1e-12)
        np.testing.assert_allclose(sample.stress, ref.get_stress(voigt=False), atol=1e-12)


def test_database_custom_labels_in_key_value_pairs_and_data(tmp_path):
    path = tmp_path / "x.db"
    with ase.db.connect(path) as db:
        for seed in range(3):
            atoms = strained_cu(seed)
            n = len(atoms)
            db.write(
                atoms,
                key_value_pairs={"REF_energy": -1.0 - seed, "dft_energy": 10.0 + seed},
                data={
                    "REF_forces": np.full((n, 3), 0.5 * seed),
                    "dft_forces": np.arange(3 * n, dtype=float).reshape(n, 3) * (seed + 1),
                    "dft_stress": np.arange(6, dtype=float) + seed,
                },
            )

    by_default = read_dataset(path)
    explicit = read_dataset(path, LabelKeys(energy="REF_energy", forces="REF_forces"))
    user = read_dataset(
        path, LabelKeys(energy="dft_energy", forces="dft_forces", stress="dft_stress")
    )

    for samples in (by_default, explicit):
        assert [s.energy for s in samples] == [-1.0, -2.0, -3.0]
        for seed, sample in enumerate(samples):
            np.testing.assert_array_equal(sample.forces, np.full((4, 3), 0.5 * seed))
            assert sample.stress is None
    assert [s.energy for s in user] == [10.0, 11.0, 12.0]
    for seed, sample in enumerate(user):
        np.testing.assert_array_equal(
            sample.forces, np.arange(12, dtype=float).reshape(4, 3) * (seed + 1)
        )
        xx, yy, zz, yz, xz, xy = np.arange(6, dtype=float) + seed
        np.testing.assert_array_equal(sample.stress, [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


# ----------------------------------------------------------- periodic and molecules mixed


def test_mixed_periodic_and_molecule_frames_in_one_file(tmp_path):
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)  # periodic in x and y only
    slab.rattle(0.02, seed=3)
    del slab.info["adsorbate_info"]  # not storable in extxyz
    frames = [
        emt_labelled(strained_cu(0)),  # 3D periodic, with stress
        emt_labelled(cu_cluster()),  # free molecule
        emt_labelled(slab),  # surface slab: no stress label
        emt_labelled(strained_cu(1)),
    ]
    path = tmp_path / "mixed.xyz"
    ase.io.write(path, frames)

    samples = read_dataset(path)

    assert [s.atoms.pbc.tolist() for s in samples] == [a.pbc.tolist() for a in frames]
    assert [s.stress is not None for s in samples] == [True, False, False, True]
    for sample, ref in zip(samples, frames, strict=True):
        assert sample.energy == pytest.approx(ref.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(sample.forces, ref.get_forces(), atol=COLUMN_ATOL)
    np.testing.assert_allclose(samples[3].stress, frames[3].get_stress(voigt=False), atol=1e-12)
    assert not samples[1].atoms.cell.any()

    graphs = [sample_to_graph(s, 4.0, dtype=torch.float64) for s in samples]
    assert [bool(g[STRESS_MASK]) for g in graphs] == [True, False, False, True]
    assert [g[PBC][0].tolist() for g in graphs] == [a.pbc.tolist() for a in frames]
    assert torch.all(graphs[1][CELL] == 0)
    assert torch.all(graphs[1][STRESS] == 0)  # masked-out stress is a harmless zero
    torch.testing.assert_close(
        graphs[0][STRESS][0], torch.as_tensor(frames[0].get_stress(voigt=False))
    )
