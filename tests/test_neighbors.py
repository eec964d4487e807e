"""mlpot's neighbour list (vesin) against ASE's, as sets of (i, j, shift) triples."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mlpot.data.graph import atoms_to_graph
from mlpot.data.neighbors import neighbor_list
from mlpot.errors import MlpotInputError


def triples(i, j, shifts) -> set[tuple[int, int, tuple[int, int, int]]]:
    return {
        (int(a), int(b), tuple(int(x) for x in s)) for a, b, s in zip(i, j, shifts, strict=True)
    }


def random_atoms(rng, n_atoms: int, pbc, *, scale: float, spread=(0.0, 1.0)) -> Atoms:
    """Random triclinic cell; atoms at random fractional coordinates in ``spread``, kept at
    least 0.6 Å apart (images included) so that no pair overlaps.
    """
    while True:
        cell = scale * (np.eye(3) + rng.uniform(-0.35, 0.35, (3, 3)))
        if abs(np.linalg.det(cell)) > 0.3 * scale**3:
            break
    atoms = Atoms(cell=cell, pbc=pbc)
    while len(atoms) < n_atoms:
        candidate = atoms.copy()
        candidate.append("H")
        candidate.positions[-1] = rng.uniform(*spread, 3) @ cell
        if len(candidate) == 1 or ase_neighbor_list("d", candidate, 0.6).size == 0:
            atoms = candidate
    return atoms


def check_against_ase(atoms: Atoms, cutoff: float) -> int:
    edges, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    assert edges.shape == (2, shifts.shape[0]) and shifts.shape[1:] == (3,)
    assert edges.dtype == np.int64 and np.issubdtype(shifts.dtype, np.integer)
    expected = triples(*ase_neighbor_list("ijS", atoms, cutoff))
    got = triples(edges[0], edges[1], shifts)
    assert len(got) == edges.shape[1], "duplicate edges"
    assert got == expected, (
        f"missing {sorted(expected - got)[:5]}, extra {sorted(got - expected)[:5]}"
    )
    # r_ij = x_j - x_i + S @ cell is within the cutoff for every edge
    vectors = atoms.positions[edges[1]] - atoms.positions[edges[0]] + shifts @ atoms.cell.array
    assert np.all(np.linalg.norm(vectors, axis=1) < cutoff)
    return len(got)


@pytest.mark.parametrize("seed", range(12))
def test_random_periodic_cells(seed):
    """Random triclinic cells from 2.5 Å (much smaller than the cutoff) to 8 Å."""
    rng = np.random.default_rng(seed)
    scale = [2.5, 3.5, 5.0, 8.0][seed % 4]
    atoms = random_atoms(rng, int(rng.integers(1, 9)), True, scale=scale)
    cutoff = float(rng.uniform(3.0, 6.0))
    assert check_against_ase(atoms, cutoff) > 0


@pytest.mark.parametrize("seed", range(4))
def test_unwrapped_positions(seed):
    """Atoms outside the cell (as in an unwrapped trajectory) give the same pairs."""
    rng = np.random.default_rng(100 + seed)
    atoms = random_atoms(rng, 6, True, scale=4.0, spread=(-1.3, 2.3))
    assert check_against_ase(atoms, 4.5) > 0


@pytest.mark.parametrize("pbc", [(True, True, False), (False, True, True), (True, False, False)])
@pytest.mark.parametrize("seed", range(3))
def test_mixed_pbc(pbc, seed):
    rng = np.random.default_rng(200 + seed)
    atoms = random_atoms(rng, 7, pbc, scale=4.0, spread=(-0.2, 1.2))
    assert check_against_ase(atoms, 4.2) > 0


def test_slab_without_third_cell_vector():
    """pbc (True, True, False) with a zero third cell vector (a pure 2-D cell)."""
    rng = np.random.default_rng(7)
    cell = np.array([[3.1, 0.0, 0.0], [1.2, 2.9, 0.0], [0.0, 0.0, 0.0]])
    positions = rng.uniform(0, 1, (5, 3)) @ np.array([[3.1, 0, 0], [1.2, 2.9, 0], [0, 0, 3.0]])
    atoms = Atoms("H5", positions=positions, cell=cell, pbc=(True, True, False))
    assert ase_neighbor_list("d", atoms, 0.6).size == 0, "overlapping test atoms"
    assert check_against_ase(atoms, 4.0) > 0


@pytest.mark.parametrize("seed", range(3))
def test_free_molecule(seed):
    rng = np.random.default_rng(300 + seed)
    atoms = random_atoms(rng, 12, False, scale=5.0)
    atoms.cell = np.zeros((3, 3))
    assert check_against_ase(atoms, 3.0) > 0


def test_cutoff_larger_than_molecule_and_single_atom():
    molecule = Atoms("H3", positions=[[0, 0, 0], [1.0, 0, 0], [0, 1.5, 0.3]])
    assert check_against_ase(molecule, 10.0) == 6
    single = Atoms("H", positions=[[0.1, 0.2, 0.3]])
    edges, shifts = neighbor_list(single.positions, np.zeros((3, 3)), np.zeros(3, bool), 5.0)
    assert edges.shape == (2, 0) and shifts.shape == (0, 3)
    # a single atom in a periodic cell smaller than the cutoff sees its own images
    lone = Atoms("H", positions=[[0.1, 0.2, 0.3]], cell=np.diag([2.0, 2.2, 2.4]), pbc=True)
    assert check_against_ase(lone, 3.0) > 0


def test_overlapping_atoms_raise():
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    with pytest.raises(MlpotInputError) as info:
        neighbor_list(positions, np.zeros((3, 3)), np.zeros(3, bool), 3.0, frame=7)
    message = str(info.value)
    assert "frame 7" in message and "positions" in message
    assert info.value.frame == 7 and info.value.field == "positions"

    # through the graph builder, with the source named too
    atoms = Atoms("H3", positions=positions)
    with pytest.raises(MlpotInputError) as info:
        atoms_to_graph(atoms, 3.0, source="data.xyz", frame=12)
    message = str(info.value)
    assert "data.xyz" in message and "frame 12" in message and "positions" in message


def test_overlap_with_a_periodic_image_raises():
    """An atom on top of another atom's periodic image overlaps as well."""
    cell = np.diag([4.0, 4.0, 4.0])
    positions = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    with pytest.raises(MlpotInputError) as info:
        neighbor_list(positions, cell, np.ones(3, bool), 3.0, frame=3)
    assert "frame 3" in str(info.value) and "positions" in str(info.value)
    # but the same positions without periodicity along x are fine
    atoms = Atoms("H3", positions=positions, cell=cell, pbc=(False, True, True))
    assert check_against_ase(atoms, 4.5) > 0
