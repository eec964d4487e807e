"""The building blocks of the validation checks, each against physics it must reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.vibrations import VibrationsData

from mlpot.data.graph import atoms_to_graph
from mlpot.models.registry import build_model
from mlpot.physics.derivatives import predict
from mlpot.validation.checks.defects import largest_void
from mlpot.validation.checks.elastic import strained, voigt_strain
from mlpot.validation.checks.neb import hop_end_points
from mlpot.validation.checks.nvt import autocorrelation_time
from mlpot.validation.checks.rdf import radial_distribution
from mlpot.validation.hessian import model_hessian, rigid_modes, vibrational_frequencies
from mlpot.validation.md import run_nvt
from mlpot.validation.uncertainty import reliability_curve

A = 3.61  # Å, fcc Cu


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_model_hessian_is_the_derivative_of_the_forces():
    torch.manual_seed(0)
    model = build_model({"name": "bpnn", "elements": [1, 6, 8], "cutoff": 4.0, "hidden": [8]})
    model = model.double().eval()
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    hessian = model_hessian(model, atoms)  # (27, 27)

    def forces(positions: np.ndarray) -> np.ndarray:
        moved = atoms.copy()
        moved.positions = positions
        graph = atoms_to_graph(moved, model.cutoff, elements=model.elements)
        return predict(model, graph)["forces"].detach().numpy().ravel()

    h, columns = 1e-5, [0, 4, 8, 13, 20, 26]  # x of C, y of C, z of O, H's
    scale = np.abs(hessian).max()
    for k in columns:
        step = np.zeros(hessian.shape[0])
        step[k] = h
        plus = forces(atoms.positions + step.reshape(-1, 3))
        minus = forces(atoms.positions - step.reshape(-1, 3))
        numeric = -(plus - minus) / (2 * h)
        assert np.abs(hessian[:, k] - numeric).max() < 1e-6 * scale
    assert np.allclose(hessian, hessian.T)
    # translation invariance: every row sums to zero over the atoms, per direction
    assert np.abs(hessian.reshape(27, 9, 3).sum(axis=1)).max() < 1e-8 * scale


def test_lj_dimer_frequency_is_analytic():
    sigma, epsilon = 2.338, 0.409
    model = build_model(
        {"name": "lj", "elements": [29], "sigma": sigma, "epsilon": epsilon, "cutoff": 8.0}
    ).double()
    r0 = 2 ** (1 / 6) * sigma  # minimum of the unshifted pair potential
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [r0, 0, 0]])
    data = VibrationsData.from_2d(atoms, model_hessian(model, atoms))
    frequencies = vibrational_frequencies(data, atoms)
    assert rigid_modes(atoms) == 5 and frequencies.shape == (1,)
    k = 72 * epsilon / r0**2  # u''(r0) of LJ, eV/Å²
    mu = atoms.get_masses()[0] / 2  # amu
    from ase.units import _amu, _c, _e

    omega = np.sqrt(k * _e * 1e20 / (mu * _amu))  # rad/s
    wavenumber = omega / (2 * np.pi * _c * 100)  # cm⁻¹
    assert frequencies[0] == pytest.approx(wavenumber, rel=1e-6)


def test_rdf_of_fcc_and_of_an_ideal_gas():
    crystal = bulk("Cu", "fcc", a=A, cubic=True) * (3, 3, 3)
    r, g = radial_distribution([crystal], 4.0, 80, periodic=True)
    peak = r[np.argmax(g)]
    assert peak == pytest.approx(A / np.sqrt(2), abs=0.05)
    # 12 neighbours in the first shell: the integral of 4π r² ρ g(r) over the peak
    density = len(crystal) / crystal.get_volume()
    shell = (r > 2.2) & (r < 3.0)
    count = np.sum(4 * np.pi * r[shell] ** 2 * density * g[shell]) * (r[1] - r[0])
    assert count == pytest.approx(12, rel=0.02)
    rng = np.random.default_rng(0)
    gas = [
        Atoms("Ar500", positions=rng.random((500, 3)) * 20.0, cell=[20.0] * 3, pbc=True)
        for _ in range(4)
    ]
    r, g = radial_distribution(gas, 6.0, 30, periodic=True)
    assert np.mean(g[r > 2.0]) == pytest.approx(1.0, abs=0.03)


def test_autocorrelation_time_of_white_and_red_noise():
    rng = np.random.default_rng(0)
    assert autocorrelation_time(rng.normal(size=20000)) == pytest.approx(1.0, abs=0.1)
    phi, x = 0.8, np.zeros(50000)
    noise = rng.normal(size=x.size)
    for k in range(1, x.size):
        x[k] = phi * x[k - 1] + noise[k]
    assert autocorrelation_time(x) == pytest.approx((1 + phi) / (1 - phi), rel=0.1)


def test_langevin_samples_the_canonical_temperature():
    atoms = bulk("Cu", "fcc", a=A, cubic=True) * (2, 2, 2)
    run = run_nvt(
        atoms,
        EMT(),
        temperature_K=500.0,
        timestep_fs=2.0,
        friction_per_fs=0.05,
        equilibration_steps=100,
        steps=1000,
        sample_interval=400,
        seed=3,
        stress=True,
    )
    assert len(run.frames) == 2 and "stress" in run.frames[0].calc.results
    assert run.temperature_K.mean() == pytest.approx(500.0, rel=0.05)
    expected_std = 500.0 * np.sqrt(2 / (3 * len(atoms)))
    assert run.temperature_K.std() == pytest.approx(expected_std, rel=0.25)


def test_octahedral_void_and_nearest_neighbour_hop():
    crystal = bulk("Cu", "fcc", a=A, cubic=True) * (2, 2, 2)
    site = largest_void(crystal)
    probe = crystal.copy()
    probe.append("Cu")
    probe.positions[-1] = site
    nearest = np.sort(probe.get_distances(-1, range(len(crystal)), mic=True))
    assert nearest[:6] == pytest.approx([A / 2] * 6, abs=1e-9)  # octahedral: 6 at a/2
    initial, final, hopper = hop_end_points(crystal)
    assert len(initial) == len(crystal) - 1
    step = np.linalg.norm(final.positions[hopper] - initial.positions[hopper])
    assert step == pytest.approx(A / np.sqrt(2), abs=1e-9)
    assert np.allclose(
        np.delete(final.positions, hopper, 0), np.delete(initial.positions, hopper, 0)
    )


def test_voigt_strain_convention_matches_ase_stress():
    crystal = bulk("Cu", "fcc", a=A, cubic=True)
    crystal.calc = EMT()
    stress = crystal.get_stress()  # Voigt, eV/Å³
    volume = crystal.get_volume()
    for j in range(6):
        energies = []
        for amount in (1e-5, -1e-5):
            moved = strained(crystal, voigt_strain(j, amount))
            moved.calc = EMT()
            energies.append(moved.get_potential_energy())
        # dE = V σ_j dε_j with engineering shear strain (central difference)
        derivative = (energies[0] - energies[1]) / (2e-5 * volume)
        assert derivative == pytest.approx(stress[j], abs=1e-7)


def test_reliability_curve_of_calibrated_and_overconfident_errors():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.05, 0.5, 20000)
    errors = np.abs(rng.normal(0.0, sigma))
    levels, observed = reliability_curve(errors, sigma)
    assert np.abs(observed - levels).max() < 0.02
    _, overconfident = reliability_curve(errors, sigma / 3)  # σ three times too small
    assert np.all(overconfident < levels) and (levels - overconfident).max() > 0.4
