"""The mpnn's radial floor: the radial features see each distance through a soft floor at
the shortest distance of that pair of elements in the training data. Trained distances are
untouched; below, the features level off (no growth without bound at short range); forces
stay exact gradients there, in the autograd and the explicit member paths; older files
load without floors; new training data lowers the floors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from mlpot.data.graph import FORCES, atoms_to_graph
from mlpot.models.checkpoint import load_model, save_model
from mlpot.models.mpnn import FLOOR_WIDTH
from mlpot.models.registry import build_model
from mlpot.nn.radial import soft_floor
from mlpot.physics.derivatives import predict, strained_graph

H, C, O = 1, 6, 8
SPEC = {"name": "mpnn", "elements": [H, C, O], "cutoff": 4.0, "channels": 8, "radial_hidden": 8}


def _frames(n: int = 4) -> list[Atoms]:
    frames = []
    for k in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=k)
        frames.append(atoms)
    return frames


def _graph(model, atoms: Atoms):
    return atoms_to_graph(atoms, model.cutoff, dtype=torch.float64, elements=model.elements)


def _fitted(spec: dict = SPEC, frames: list[Atoms] | None = None):
    torch.manual_seed(0)
    model = build_model(spec).double()
    graphs = []
    for k, atoms in enumerate(frames or _frames()):
        graph = _graph(model, atoms)
        generator = torch.Generator().manual_seed(k)
        graph[FORCES] = torch.randn(len(atoms), 3, generator=generator, dtype=torch.float64)
        graphs.append(graph)
    model.fit_statistics(graphs)
    return model


def _pushed(atoms: Atoms, i: int, j: int, distance: float) -> Atoms:
    """``atoms`` with atom ``j`` moved along the ``i``-``j`` line to ``distance`` Å."""
    moved = atoms.copy()
    vector = moved.positions[j] - moved.positions[i]
    moved.positions[j] = moved.positions[i] + distance * vector / np.linalg.norm(vector)
    return moved


def _energy_forces(model, atoms: Atoms) -> tuple[float, np.ndarray]:
    out = predict(model, _graph(model, atoms), forces=True)
    return float(out["energy"]), out["forces"].detach().numpy()


def test_soft_floor_is_the_identity_above_and_bounded_and_smooth_below():
    floor = torch.tensor(1.0, dtype=torch.float64)
    r = torch.linspace(0.01, 2.0, 400, dtype=torch.float64)
    r_eff, slope = soft_floor(r, floor, 0.2)
    above = r >= floor
    assert torch.equal(r_eff[above], r[above])
    assert torch.all(r_eff[~above] > 1.0 - 0.2) and torch.all(torch.diff(r_eff) > 0)
    x = r.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(soft_floor(x, floor, 0.2)[0].sum(), x)
    torch.testing.assert_close(slope, auto)
    # value, first and second derivatives continuous at the floor (C², in fact C⁴)
    h = 1e-3
    steps = torch.tensor([h, 2 * h], dtype=torch.float64)
    left, right = floor - steps, floor + steps
    values_left, values_right = soft_floor(left, floor, 0.2)[0], soft_floor(right, floor, 0.2)[0]
    second_left = (values_left[1] - 2 * values_left[0] + floor) / h**2
    second_right = (values_right[1] - 2 * values_right[0] + floor) / h**2
    assert abs(float(second_left - second_right)) < 1e-3  # a C¹-only floor gives ~1/w = 5
    zero = torch.zeros(())  # no floor
    assert torch.equal(soft_floor(r, zero, 0.2)[0], r)


def test_floors_are_the_shortest_training_distances_and_unseen_pairs_the_cutoff():
    frames = _frames()
    model = _fitted(frames=frames)
    index = {z: k for k, z in enumerate(model.elements)}
    expected = np.full((3, 3), model.cutoff)
    for atoms in frames:
        d = atoms.get_all_distances()
        for i in range(len(atoms)):
            for j in range(len(atoms)):
                if i != j and d[i, j] < model.cutoff:
                    a, b = index[atoms.numbers[i]], index[atoms.numbers[j]]
                    expected[a, b] = min(expected[a, b], d[i, j])
    np.testing.assert_allclose(model.radial_floor.numpy(), expected, atol=1e-12)
    assert model.radial_floor[index[O], index[O]] == model.cutoff  # one O per ethanol


def test_trained_distances_give_the_unfloored_model():
    model = _fitted()
    free = copy.deepcopy(model)
    free.radial_floor.zero_()
    for atoms in _frames():
        e, f = _energy_forces(model, atoms)
        e_free, f_free = _energy_forces(free, atoms)
        assert e == e_free
        np.testing.assert_array_equal(f, f_free)


def test_radial_features_level_off_below_the_floor():
    """Push a methyl H onto a methylene H down to 0.3 Å: the features the layers see stay
    those of distances at most FLOOR_WIDTH below the H-H floor (unfloored: those of
    0.3 Å, beyond that range); energies along the path are finite and the forces their
    gradient (finite differences)."""
    model = _fitted()
    atoms = _frames()[0]
    h = model.elements.index(H)
    floor = model.radial_floor[h, h]
    span = torch.linspace(float(floor) - FLOOR_WIDTH, float(floor), 50, dtype=torch.float64)
    trained_range = model.radial_features(span).abs().max()
    short = torch.tensor([0.3], dtype=torch.float64)
    floored = model.radial_features(soft_floor(short, floor, FLOOR_WIDTH)[0]).abs().max()
    assert floored <= trained_range
    assert model.radial_features(short).abs().max() > trained_range  # what the floor stops
    hydrogens = [k for k, z in enumerate(atoms.numbers) if z == H]
    i, j = hydrogens[0], hydrogens[3]
    energies = []
    for d in np.linspace(float(floor) - 0.05, 0.3, 12):
        moved = _pushed(atoms, i, j, d)
        energy, forces = _energy_forces(model, moved)
        energies.append(energy)
        step = 1e-5
        plus, minus = moved.copy(), moved.copy()
        plus.positions[j, 0] += step
        minus.positions[j, 0] -= step
        numeric = -(_energy_forces(model, plus)[0] - _energy_forces(model, minus)[0]) / (2 * step)
        assert forces[j, 0] == pytest.approx(numeric, abs=1e-6)
    assert np.all(np.isfinite(energies))


def test_member_forces_below_the_floor_equal_autograd():
    """The explicit reverse pass (mpnn_gradients) applies the floor's chain rule."""
    model = _fitted()
    atoms = _pushed(_frames()[0], 0, 1, 0.6)  # C-C pushed far below its floor
    graph = _graph(model, atoms)
    shifts = 0.5 * torch.randn(2, model.n_last_layer_features, dtype=torch.float64)
    explicit = model.last_layer_gradients(graph, shifts, strain=True)
    strained, inputs = strained_graph(graph, forces=True, stress=True)
    last = model.last_layer(strained)
    local = last.energies[None, :] + shifts @ last.features.T  # (K, N)
    for k in range(2):
        d_positions, d_strain = torch.autograd.grad(local[k].sum(), inputs, retain_graph=True)
        torch.testing.assert_close(explicit.positions[k], d_positions, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(explicit.strain[k], d_strain, rtol=1e-12, atol=1e-12)


def test_files_written_before_floors_load_without_them(tmp_path):
    model = _fitted()
    save_model(tmp_path / "m.pt", model)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["state_dict"]["radial_floor"]  # as written before floors existed
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert float(old.radial_floor.abs().max()) == 0.0
    free = copy.deepcopy(model)
    free.radial_floor.zero_()
    deep = _pushed(_frames()[0], 0, 1, 0.6)
    assert _energy_forces(old, deep)[0] == pytest.approx(_energy_forces(free, deep)[0], abs=1e-12)
    assert torch.equal(load_model(tmp_path / "m.pt").radial_floor, model.radial_floor)


def test_new_training_data_lowers_the_floors_and_never_raises_them():
    model = _fitted()
    before = model.radial_floor.clone()
    model.extend_domain([_graph(model, atoms) for atoms in _frames()])  # the same data
    assert torch.equal(model.radial_floor, before)
    squeezed = _pushed(_frames()[0], 0, 1, 1.2)  # C-C at 1.2 Å, below its floor
    model.extend_domain([_graph(model, squeezed)])
    c = model.elements.index(C)
    assert float(model.radial_floor[c, c]) == pytest.approx(1.2, abs=1e-12)
    assert torch.all(model.radial_floor <= before)
    summed = build_model({"name": "sum", "terms": [SPEC]}).double()  # reaches terms
    summed.terms[0].radial_floor.fill_(9.0)
    summed.extend_domain([_graph(summed, squeezed)])
    assert float(summed.terms[0].radial_floor[c, c]) == pytest.approx(1.2, abs=1e-12)
