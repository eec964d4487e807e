"""Learned polarisabilities and harmonic Raman activities: the polarisability is a
symmetric tensor that rotates as ``R α Rᵀ`` and ignores translations, its autograd
derivatives equal finite differences, Raman activities do not depend on the molecule's
orientation, and the pyscf oracle's finite-field polarisability is symmetric and
positive."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy.spatial.transform import Rotation

from mlpot.models.registry import build_model
from mlpot.models.response import PolarizabilityModel, body_spec, response_graph
from mlpot.validation.spectra import (
    harmonic_raman,
    md_spectrum,
    polarizability_derivatives,
    polarizability_line_shape,
)

#: as response bodies are built (mlpot.models.response.body_spec: shared channel mixing)
BODY = body_spec({"name": "mpnn", "elements": [1, 6, 8], "cutoff": 4.0, "channels": 8, "layers": 2})


def _model() -> PolarizabilityModel:
    torch.manual_seed(0)
    model = PolarizabilityModel(build_model(BODY)).double()
    model.body.fit_statistics(
        [response_graph(molecule(n), model, labelled=False) for n in ("CH3CH2OH", "CH3OH")]
    )
    return model.eval()


def _alpha(model, atoms) -> np.ndarray:
    return model(response_graph(atoms, model, labelled=False))[0].detach().numpy()


def test_polarizability_is_symmetric_equivariant_and_translation_invariant():
    model = _model()
    atoms = molecule("CH3CH2OH")
    alpha = _alpha(model, atoms)
    np.testing.assert_allclose(alpha, alpha.T, atol=1e-14)
    anisotropic = alpha - np.trace(alpha) / 3 * np.eye(3)
    assert np.abs(anisotropic).max() > 1e-4  # not a multiple of the identity
    rotation = Rotation.from_euler("zyx", [0.7, 0.2, -1.3])
    turned = atoms.copy()
    turned.positions = rotation.apply(atoms.positions)
    matrix = rotation.as_matrix()
    np.testing.assert_allclose(_alpha(model, turned), matrix @ alpha @ matrix.T, atol=1e-12)
    moved = atoms.copy()
    moved.positions += [2.0, -4.0, 1.0]
    np.testing.assert_allclose(_alpha(model, moved), alpha, atol=1e-12)


def test_polarizability_derivatives_equal_finite_differences():
    model = _model()
    atoms = molecule("CH3OH")
    analytic = polarizability_derivatives(atoms, model)
    h = 1e-5
    for j in (1, 7, 14):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[j // 3, j % 3] += h
        minus.positions[j // 3, j % 3] -= h
        numeric = (_alpha(model, plus) - _alpha(model, minus)) / (2 * h)
        np.testing.assert_allclose(analytic[j], numeric, atol=1e-7 * np.abs(analytic).max())


def test_raman_activities_do_not_depend_on_orientation():
    """Activities are rotational invariants of ∂α/∂Q: turning the molecule (and with it
    the Hessian of an untrained mpnn energy) leaves frequencies and activities alone."""
    model = _model()
    energy = build_model({**BODY, "channels": 8}).double()
    atoms = molecule("H2O")
    first = harmonic_raman(atoms, energy, model)
    turned = atoms.copy()
    turned.positions = Rotation.from_euler("xyz", [1.0, 0.4, -0.6]).apply(atoms.positions)
    second = harmonic_raman(turned, energy, model)
    np.testing.assert_allclose(second.frequencies, first.frequencies, rtol=1e-8)
    np.testing.assert_allclose(second.intensities, first.intensities, rtol=1e-7, atol=1e-12)
    assert first.intensities.max() > 0


def test_pyscf_finite_field_polarizability():
    pytest.importorskip("pyscf")
    from mlpot.calculators.oracles import PySCFCalculator

    atoms = molecule("H2O")
    calc = PySCFCalculator(functional="hf", basis="sto-3g")
    atoms.calc = calc
    alpha = calc.get_property("polarizability", atoms)  # e·Å²/V
    np.testing.assert_allclose(alpha, alpha.T, atol=1e-10)
    values = np.linalg.eigvalsh(alpha)
    assert values.min() > -1e-6 and values.max() > 0.01
    # a weaker field gives the same linear response
    weak = PySCFCalculator(functional="hf", basis="sto-3g", field=5e-4)
    np.testing.assert_allclose(
        weak.get_property("polarizability", atoms), alpha, atol=1e-4 * values.max()
    )


def test_raman_line_shape_of_a_known_oscillation():
    """An isotropic breathing at 1000 cm⁻¹ and a traceless oscillation at 2500 cm⁻¹: peaks
    there, weighted 45 : 7 · 3/2 · Σβ² as the activities are."""
    dt = 0.5
    t = np.arange(4000) * dt * 1e-15
    c = 100.0 * 2.99792458e8
    iso = 0.1 * np.cos(2 * np.pi * 1000.0 * c * t)
    aniso = 0.1 * np.cos(2 * np.pi * 2500.0 * c * t)
    alpha = np.zeros((len(t), 3, 3))
    alpha += iso[:, None, None] * np.eye(3)
    alpha[:, 0, 0] += aniso
    alpha[:, 1, 1] -= aniso
    shape = polarizability_line_shape([alpha], dt)
    assert abs(shape.peak(500, 1500) - 1000.0) <= shape.resolution
    assert abs(shape.peak(2000, 3000) - 2500.0) <= shape.resolution
    # areas: 45 a'² (a = iso) against 7 · 3/2 · 2 (β_xx = -β_yy = aniso), equal amplitudes
    # and the same ω² weight up to the frequency ratio squared
    near = lambda f: (shape.wavenumbers > f - 100) & (shape.wavenumbers < f + 100)  # noqa: E731
    ratio = shape.intensities[near(1000)].sum() / shape.intensities[near(2500)].sum()
    assert ratio == pytest.approx(45.0 / 21.0 * (1000.0 / 2500.0) ** 2, rel=0.05)


def test_md_raman_peaks_near_the_harmonic_bands():
    """NVE of water on the GFN2-xTB surface with a polarisability model: the line shape
    peaks near the harmonic bend and stretch (not above them beyond one resolution step)."""
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    calc = TBLite(method="GFN2-xTB", verbosity=0)
    water = molecule("H2O")
    water.calc = calc
    BFGS(water, logfile=None).run(fmax=1e-4)
    frequencies = harmonic_raman(water, calc, _model()).frequencies
    shape = md_spectrum(water, calc, _model(), trajectories=2, steps=2000, equilibration=100)
    bend, stretch = shape.peak(1200, 1900), shape.peak(3200, 4000)
    assert frequencies[0] - 120 <= bend <= frequencies[0] + shape.resolution
    assert frequencies[1] - 200 <= stretch <= frequencies[2] + shape.resolution


@pytest.mark.slow
def test_learned_polarizability_gives_the_oracles_raman_activities():
    """Water, HF/STO-3G (pyscf, finite fields): a polarisability model learned from 220
    rattled structures gives Raman activities, relative to the strongest band, within 20 %
    of the oracle's for every band (about 2 minutes: 260 x 7 SCF runs)."""
    pytest.importorskip("pyscf")
    from ase.optimize import BFGS

    from mlpot.calculators.oracles import PySCFCalculator
    from mlpot.training.response import fit_response

    calc = PySCFCalculator(functional="hf", basis="sto-3g")
    water = molecule("H2O")
    water.calc = calc
    BFGS(water, logfile=None).run(fmax=1e-4)
    reference = harmonic_raman(water, calc, calc)
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(260):
        atoms = water.copy()
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info["polarizability"] = calc.get_property("polarizability", atoms)
        frames.append(atoms)
    torch.manual_seed(0)
    body = build_model({**BODY, "elements": [1, 8], "channels": 16})
    model = PolarizabilityModel(body).double()
    fit_response(model, frames[:220], frames[220:], epochs=500)
    learned = harmonic_raman(water, calc, model)
    np.testing.assert_allclose(learned.frequencies, reference.frequencies, rtol=1e-6)
    ref = reference.intensities / reference.intensities.max()
    got = learned.intensities / learned.intensities.max()
    np.testing.assert_allclose(got, ref, rtol=0.2)
