"""ACSF descriptors against a plain brute-force implementation of their definition.

The reference loops over neighbours (radial) and over unordered pairs of neighbours
(angular), with neighbours from ASE's neighbour list, exactly as written in the docstring of
:mod:`mlpot.nn.acsf`; mlpot computes the angular terms without enumerating triplets.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from mlpot.data.graph import atoms_to_graph
from mlpot.nn.acsf import ACSF


@pytest.fixture(scope="module", autouse=True)
def _single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fc(r: float, cutoff: float) -> float:
    return 0.5 * (math.cos(math.pi * r / cutoff) + 1.0) if r < cutoff else 0.0


def brute_force_acsf(
    atoms: Atoms,
    elements: list[int],
    cutoff: float,
    radial_count: int,
    radial_min: float,
    angular_cutoff: float,
    etas: list[float],
    zetas: list[int],
    lambdas: list[int],
) -> np.ndarray:
    """``(N, F)``: radial block ``(species, radial_count)`` species-major, then the angular
    block ``(pairs (a <= b), etas, zeta-major (zeta, lambda) combinations)``. Species are
    numbered in the order of ``elements``.
    """
    species = {z: k for k, z in enumerate(elements)}
    n_species = len(species)
    spacing = (cutoff - radial_min) / radial_count
    centres = [radial_min + k * spacing for k in range(radial_count)]
    radial_eta = 1.0 / (2.0 * spacing**2)  # Gaussian width equal to the spacing
    pairs = [(a, b) for a in range(n_species) for b in range(a, n_species)]
    combos = [(zeta, lam) for zeta in zetas for lam in lambdas]

    i_list, j_list, vectors = neighbor_list("ijD", atoms, cutoff)
    n_atoms = len(atoms)
    radial = np.zeros((n_atoms, n_species, radial_count))
    angular = np.zeros((n_atoms, len(pairs), len(etas), len(combos)))
    for i in range(n_atoms):
        mine = np.flatnonzero(i_list == i)
        neighbours = [
            (species[int(atoms.numbers[j_list[e]])], vectors[e], float(np.linalg.norm(vectors[e])))
            for e in mine
        ]
        for s, _, r in neighbours:
            for k, centre in enumerate(centres):
                radial[i, s, k] += math.exp(-radial_eta * (r - centre) ** 2) * fc(r, cutoff)
        # each unordered pair of distinct neighbours (edges) once
        for (sj, vj, rj), (sk, vk, rk) in itertools.combinations(neighbours, 2):
            if rj >= angular_cutoff or rk >= angular_cutoff:
                continue
            p = pairs.index((min(sj, sk), max(sj, sk)))
            cos = float(vj @ vk) / (rj * rk)
            for e, eta in enumerate(etas):
                g = (
                    math.exp(-eta * (rj**2 + rk**2))
                    * fc(rj, angular_cutoff)
                    * fc(rk, angular_cutoff)
                )
                for c, (zeta, lam) in enumerate(combos):
                    angular[i, p, e, c] += 2.0 ** (1 - zeta) * (1 + lam * cos) ** zeta * g
    return np.concatenate([radial.reshape(n_atoms, -1), angular.reshape(n_atoms, -1)], axis=1)


def small_periodic() -> Atoms:
    """Two elements, 4 atoms in a sheared cell smaller than the cutoff."""
    rng = np.random.default_rng(0)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.numbers[[1, 3]] = 47
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))), True)
    atoms.positions += rng.normal(scale=0.15, size=atoms.positions.shape)
    return atoms


def molecule() -> Atoms:
    rng = np.random.default_rng(1)
    positions = np.array(
        [
            [0, 0, 0],
            [1.9, 0.3, 0],
            [-0.4, 2.1, 0.5],
            [0.8, 0.9, 2.0],
            [2.5, 2.4, 1.1],
            [-1.8, -0.7, 1.2],
            [3.9, 0.4, 0.9],
        ]
    )
    positions = positions + rng.normal(scale=0.1, size=positions.shape)
    return Atoms([29, 47, 29, 47, 47, 29, 29], positions=positions, pbc=False)


def three_elements() -> Atoms:
    rng = np.random.default_rng(2)
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 1, 1))
    atoms.numbers = [29, 47, 79, 29, 79, 47, 47, 29]
    atoms.positions += rng.normal(scale=0.12, size=atoms.positions.shape)
    return atoms


CASES = {
    "periodic-default": (small_periodic, [29, 47], dict(cutoff=4.5)),
    "molecule-default": (molecule, [29, 47], dict(cutoff=4.5)),
    "periodic-angular-cutoff": (
        small_periodic,
        [29, 47],
        dict(
            cutoff=5.0,
            radial_count=7,
            radial_min=0.8,
            angular_cutoff=3.6,
            angular_etas=(0.02, 0.3),
            zetas=(1, 3, 5),
            lambdas=(-1,),
        ),
    ),
    "molecule-angular-cutoff": (
        molecule,
        [29, 47],
        dict(cutoff=4.0, radial_count=5, angular_cutoff=3.0, zetas=(2, 1), lambdas=(-1, 1)),
    ),
    "three-elements": (three_elements, [79, 29, 47], dict(cutoff=4.2, radial_count=6)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_acsf_equals_brute_force(case):
    build, elements, options = CASES[case]
    atoms = build()
    descriptor = ACSF(elements, **options)
    defaults = dict(
        radial_count=12,
        radial_min=0.5,
        angular_etas=(0.005, 0.03, 0.1),
        zetas=(1, 2, 4),
        lambdas=(1, -1),
    )
    settings = {**defaults, **options}
    expected = brute_force_acsf(
        atoms,
        elements,
        settings["cutoff"],
        settings["radial_count"],
        settings["radial_min"],
        settings.get("angular_cutoff") or settings["cutoff"],
        list(settings["angular_etas"]),
        list(settings["zetas"]),
        list(settings["lambdas"]),
    )
    graph = atoms_to_graph(atoms, descriptor.cutoff)
    actual = descriptor(graph).detach().numpy()

    n_species, n_pairs = len(elements), len(elements) * (len(elements) + 1) // 2
    n_combos = len(settings["zetas"]) * len(settings["lambdas"])
    n_radial = n_species * settings["radial_count"]
    assert descriptor.n_features == n_radial + n_pairs * len(settings["angular_etas"]) * n_combos
    assert actual.shape == expected.shape == (len(atoms), descriptor.n_features)
    # the test systems populate every block (radial per species, angular per pair)
    assert np.all(np.abs(expected[:, :n_radial]).reshape(len(atoms), n_species, -1).sum((0, 2)))
    angular = np.abs(expected[:, n_radial:]).reshape(len(atoms), n_pairs, -1).sum((0, 2))
    assert np.all(angular > 0)

    scale = np.abs(expected).max(axis=0, keepdims=True)
    scale = np.maximum(scale, 1e-12)
    np.testing.assert_allclose(
        actual[:, :n_radial], expected[:, :n_radial], rtol=1e-12, atol=1e-12 * scale.max()
    )
    error = np.abs(actual - expected) / scale
    worst = np.unravel_index(np.argmax(error), error.shape)
    assert error.max() < 1e-10, f"feature {worst[1]} of atom {worst[0]}: {error.max():.2e}"


def test_acsf_float32_matches_float64():
    """Same descriptor in float32 (model dtype) to single precision."""
    atoms = small_periodic()
    descriptor = ACSF([29, 47], 4.5)
    reference = descriptor(atoms_to_graph(atoms, 4.5)).detach().numpy()
    graph32 = atoms_to_graph(atoms, 4.5, dtype=torch.float32)
    single = descriptor.float()(graph32).detach().numpy()
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, reference, rtol=2e-4, atol=2e-4 * np.abs(reference).max())


def test_edge_chunks_change_nothing(monkeypatch):
    """Many small edge chunks give the same features and position gradients as one."""
    import mlpot.nn.acsf as acsf_module

    atoms = small_periodic()
    descriptor = ACSF([29, 47], 4.5, angular_cutoff=3.6)

    def features_and_gradient():
        graph = atoms_to_graph(atoms, 4.5)
        graph["positions"].requires_grad_(True)
        features = descriptor(graph)
        weights = torch.linspace(-1.0, 1.0, features.numel(), dtype=features.dtype)
        (grad,) = torch.autograd.grad((features.flatten() * weights).sum(), graph["positions"])
        return features.detach(), grad, graph["edge_index"].shape[1]

    whole, whole_grad, n_edges = features_and_gradient()
    monkeypatch.setattr(acsf_module, "EDGE_CHUNK_BYTES", 1)
    monkeypatch.setattr(acsf_module, "MIN_EDGE_CHUNK", 7)
    assert n_edges > 3 * 7
    chunked, chunked_grad, _ = features_and_gradient()
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked_grad, whole_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_explicit_vector_jacobian_products_equal_autograd(case, monkeypatch):
    """``K`` cotangents on the features, taken to positions and strain by the descriptor's
    closed-form derivatives (in small edge chunks), equal ``K`` autograd backward passes
    through the strained graph of two structures."""
    import mlpot.nn.acsf as acsf_module
    from mlpot.data.graph import collate, edge_vectors
    from mlpot.physics.derivatives import strained_graph

    build, elements, options = CASES[case]
    descriptor = ACSF(elements, **options)
    first = build()
    second = first.copy()
    second.rattle(0.05, seed=7)
    graph = collate([atoms_to_graph(a, descriptor.cutoff) for a in (first, second)])
    strained, inputs = strained_graph(graph, forces=True, stress=True)
    features = descriptor(strained)
    k = 3
    cotangent = torch.randn(
        features.shape[0],
        k,
        features.shape[1],
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    expected = [
        torch.autograd.grad((features * cotangent[:, m]).sum(), inputs, retain_graph=True)
        for m in range(k)
    ]
    monkeypatch.setattr(acsf_module, "EDGE_CHUNK_BYTES", 1)
    monkeypatch.setattr(acsf_module, "MIN_EDGE_CHUNK", 11)
    with torch.no_grad():
        vectors = edge_vectors(graph)
        densities, factors = descriptor.densities_and_derivatives(graph, vectors, k)
        torch.testing.assert_close(
            descriptor.features_from_densities(densities), features.detach(), rtol=0, atol=1e-13
        )
        rows = descriptor.density_cotangents(densities, cotangent)
        d_positions, d_strain = descriptor.position_strain_vjp(
            graph, vectors, rows, factors, strain=True
        )
    assert vectors.shape[0] > 3 * 11
    for m in range(k):
        torch.testing.assert_close(d_positions[m], expected[m][0], rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(d_strain[m], expected[m][1], rtol=1e-11, atol=1e-11)
