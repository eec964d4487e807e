"""Bayesian torsion fitting (mlpot.apps.torsion): the posterior covers known Fourier
coefficients at its stated level, the evidence is maximised, the force-field files read
back, and a real relaxed scan (GFN2-xTB ethane) gives the threefold barrier."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase.build import molecule

from mlpot.apps.torsion import FourierBasis, TorsionScan, coverage, fit_torsion
from mlpot.apps.torsion_forcefield import (
    KJ_PER_MOL_PER_EV,
    gromacs_dihedraltypes,
    openmm_xml,
    read_gromacs_dihedraltypes,
    read_openmm_torsions,
)
from mlpot.apps.torsion_scan import dihedral_angle, dihedral_gradient, relaxed_scan
from mlpot.errors import MlpotInputError

TRUTH = np.array([0.02, -0.01, 0.05])  # a1, a2, a3 (eV): k(1 + cos nφ) with δ = 0, 180, 0
BASIS = FourierBasis((1, 2, 3))


def _synthetic(rng, coefficients, *, basis=BASIS, noise=(0.004, 0.01), offset=0.3, n=18):
    """A scan every 360/n degrees (jittered) of known coefficients plus Gaussian noise on
    energies (eV) and slopes (eV/rad)."""
    angles = np.radians(np.arange(0, 360, 360 / n)) + rng.normal(0, 0.02, n)
    energies = offset + basis.energy_rows(angles) @ coefficients + rng.normal(0, noise[0], n)
    slopes = basis.derivative_rows(angles) @ coefficients + rng.normal(0, noise[1], n)
    return TorsionScan(angles, energies, slopes)


def _interval_binomial(fraction, level, trials):
    """|observed - nominal| in binomial standard errors."""
    return abs(fraction - level) / math.sqrt(level * (1 - level) / trials)


def test_dihedral_angle_and_gradient():
    atoms = molecule("C2H6")
    atoms.rattle(0.05, seed=1)
    dihedral = (2, 0, 1, 5)
    phi = dihedral_angle(atoms.positions, dihedral)
    assert math.degrees(phi) % 360 == pytest.approx(atoms.get_dihedral(*dihedral), abs=1e-9)
    gradient, h = dihedral_gradient(atoms.positions, dihedral), 1e-6
    for a, index in enumerate(dihedral):
        for x in range(3):
            plus, minus = atoms.positions.copy(), atoms.positions.copy()
            plus[index, x] += h
            minus[index, x] -= h
            numeric = (dihedral_angle(plus, dihedral) - dihedral_angle(minus, dihedral)) / (2 * h)
            assert gradient[a, x] == pytest.approx(numeric, abs=1e-7)


def test_derivative_rows_are_the_slopes_of_the_energy_rows():
    basis = FourierBasis((1, 2, 3, 4), symmetric=False)
    angles, h = np.linspace(-3, 3, 7), 1e-6
    numeric = (basis.energy_rows(angles + h) - basis.energy_rows(angles - h)) / (2 * h)
    np.testing.assert_allclose(basis.derivative_rows(angles), numeric, atol=1e-8)


def test_noise_free_data_give_the_coefficients_and_the_force_field_form():
    rng = np.random.default_rng(0)
    fit = fit_torsion(_synthetic(rng, TRUTH, noise=(1e-7, 1e-7)))
    np.testing.assert_allclose(fit.mean, TRUTH, atol=1e-6)
    terms = fit.terms()
    assert [t.periodicity for t in terms] == [1, 2, 3]
    assert [t.phase for t in terms] == [0.0, 180.0, 0.0]
    np.testing.assert_allclose([t.k for t in terms], np.abs(TRUTH), atol=1e-6)
    angles = np.linspace(0, 2 * np.pi, 13)
    profile = BASIS.energy_rows(angles) @ TRUTH
    shifted = fit.torsion_energy(angles) - profile  # the same function up to a constant
    np.testing.assert_allclose(shifted, shifted[0], atol=1e-6)


def test_free_phases_are_recovered():
    basis = FourierBasis((1, 3), symmetric=False)
    k, phase = np.array([0.03, 0.02]), np.radians([40.0, 100.0])
    truth = np.concatenate([k * np.cos(phase), k * np.sin(phase)])
    fit = fit_torsion(
        _synthetic(np.random.default_rng(1), truth, basis=basis, noise=(1e-4, 1e-4)),
        periodicities=(1, 3),
        symmetric=False,
    )
    terms = fit.terms()
    for term, k_true, phase_true in zip(terms, k, [40.0, 100.0], strict=True):
        assert abs(term.k - k_true) < 3 * term.k_std + 1e-9
        assert abs(term.phase - phase_true) < 3 * term.phase_std + 1e-9
        assert term.phase_std < 1.0


def test_related_scans_share_the_terms_with_their_own_offsets():
    rng = np.random.default_rng(2)
    scans = [_synthetic(rng, TRUTH, offset=off, n=8) for off in (-150.0, 20.0, 0.7)]
    fit = fit_torsion(scans)
    np.testing.assert_allclose(fit.offsets, [-150.0, 20.0, 0.7], atol=0.01)
    assert np.all(np.abs(fit.mean - TRUTH) < 4 * fit.std)
    one = fit_torsion(scans[0])
    assert np.all(fit.std < one.std)  # three molecules know more than one


def test_evidence_maximisation_finds_the_noise_and_a_maximum():
    rng = np.random.default_rng(3)
    scan = _synthetic(rng, TRUTH, noise=(0.004, 0.01), n=36)
    fit = fit_torsion(scan)
    assert fit.optimised == ("alpha", "beta_energy", "beta_derivative")
    assert fit.noise_energy == pytest.approx(0.004, rel=0.3)
    assert fit.noise_derivative == pytest.approx(0.01, rel=0.3)
    for factor in (0.5, 2.0):
        stated = fit_torsion(
            scan,
            alpha=fit.alpha * factor,
            noise_energy=fit.noise_energy * factor,
            noise_derivative=fit.noise_derivative,
        )
        assert stated.optimised == () and math.isinf(stated.dof)
        assert stated.log_evidence < fit.log_evidence


def test_posterior_covers_fixed_truth_at_its_stated_level_with_evidence_hyperparameters():
    """300 synthetic scans of fixed coefficients, α and both noise levels from the evidence:
    the fraction of coefficients inside their 68.3 % and 95.4 % intervals (Student-t of the
    estimated noise) is nominal within 3 binomial standard errors."""
    rng = np.random.default_rng(4)
    hits = {0.6827: [], 0.9545: []}
    for _ in range(300):
        fit = fit_torsion(_synthetic(rng, TRUTH))
        for level, found in hits.items():
            found.append(coverage(fit, TRUTH, level))
    for level, found in hits.items():
        fraction = float(np.mean(found))
        assert _interval_binomial(fraction, level, np.size(found)) < 3, (level, fraction)


def test_posterior_covers_truth_drawn_from_the_stated_prior():
    """Coefficients drawn from the stated prior, stated noise: exact Bayesian coverage of
    every coefficient, energies only."""
    rng = np.random.default_rng(5)
    alpha, noise = 1.0 / 0.03**2, 0.01
    basis = FourierBasis((1, 2, 3, 4), symmetric=False)
    hits = {0.6827: [], 0.9545: []}
    for _ in range(150):
        truth = rng.normal(0, alpha**-0.5, basis.size)
        scan = _synthetic(rng, truth, basis=basis, noise=(noise, 1.0), n=12)
        fit = fit_torsion(
            scan,
            periodicities=(1, 2, 3, 4),
            symmetric=False,
            use_derivatives=False,
            alpha=alpha,
            noise_energy=noise,
        )
        for level, found in hits.items():
            found.append(coverage(fit, truth, level))
    for level, found in hits.items():
        fraction = float(np.mean(found))
        assert _interval_binomial(fraction, level, np.size(found)) < 3, (level, fraction)


def test_predictive_band_covers_held_out_energies():
    rng = np.random.default_rng(6)
    fit = fit_torsion(_synthetic(rng, TRUTH, noise=(0.004, 0.01), n=24))
    held_out = _synthetic(rng, TRUTH, noise=(0.004, 0.01), n=200)
    band = fit.predict(held_out.angles)
    inside = np.abs(held_out.energies - band.mean) <= fit.quantile(0.9545) * band.std_observed
    assert _interval_binomial(inside.mean(), 0.9545, inside.size) < 3
    assert np.all(band.std < band.std_observed)


def test_force_field_files_read_back_in_their_units(tmp_path):
    rng = np.random.default_rng(7)
    fit = fit_torsion(_synthetic(rng, TRUTH))
    terms, types = fit.terms(), ("CT", "CT", "CT", "CT")
    path = tmp_path / "dihedrals.itp"
    gromacs_dihedraltypes(terms, types, path)
    gromacs = read_gromacs_dihedraltypes(path.read_text())
    openmm = read_openmm_torsions(openmm_xml(terms, types))
    assert KJ_PER_MOL_PER_EV == pytest.approx(96.485, rel=1e-4)
    for written in (gromacs, openmm):
        assert [w.types for w in written] == [types] * 3
        assert [w.periodicity for w in written] == [1, 2, 3]
        np.testing.assert_allclose([w.phase for w in written], [t.phase for t in terms])
        np.testing.assert_allclose(
            [w.k for w in written], [t.k * KJ_PER_MOL_PER_EV for t in terms], rtol=1e-6
        )
    angles = np.linspace(0, 2 * np.pi, 9)
    from_file = sum(
        w.k * (1 + np.cos(w.periodicity * angles - np.radians(w.phase))) for w in openmm
    )
    np.testing.assert_allclose(from_file / KJ_PER_MOL_PER_EV, fit.torsion_energy(angles))


def test_bad_input_is_refused():
    rng = np.random.default_rng(8)
    scan = _synthetic(rng, TRUTH, n=4)
    with pytest.raises(MlpotInputError, match="periodicity 6 needs"):
        fit_torsion(scan, periodicities=(1, 6))
    with pytest.raises(MlpotInputError, match="noise_energy must be a positive"):
        fit_torsion(scan, noise_energy=-1.0)
    with pytest.raises(MlpotInputError, match="distinct positive integers"):
        fit_torsion(scan, periodicities=(1, 1))
    with pytest.raises(MlpotInputError, match="four atom-type names"):
        gromacs_dihedraltypes(fit_torsion(scan).terms(), ("CT", "CT", "C T", "CT"))
    with pytest.raises(MlpotInputError, match="equal-length"):
        TorsionScan(np.zeros(3), np.zeros(4))
    with pytest.raises(MlpotInputError, match="in a ring"):
        relaxed_scan(molecule("C6H6"), None, (6, 0, 1, 7), [0.0])


def test_relaxed_xtb_scan_of_ethane_gives_a_threefold_barrier():
    """GFN2-xTB ethane, H-C-C-H every 30°: the slopes from the constraint force match the
    fitted profile, the threefold term carries the ~0.11 eV (2.6 kcal/mol) barrier with its
    maximum at the eclipsed 0°, and the one- and twofold terms vanish within their error."""
    pytest.importorskip("tblite")
    from mlpot.calculators.oracles import make_oracle

    scan = relaxed_scan(
        molecule("C2H6"), make_oracle("xtb"), (2, 0, 1, 5), np.arange(0, 360, 30), fmax=0.01
    )
    assert scan.converged.all()
    np.testing.assert_allclose(np.degrees(scan.angles) % 360, np.arange(0, 360, 30), atol=1e-3)
    barrier = scan.energies.max() - scan.energies.min()
    assert 0.08 < barrier < 0.15
    fit = fit_torsion(scan)
    one, two, three = fit.terms()
    assert three.phase == 0.0 and three.k == pytest.approx(barrier / 2, rel=0.05)
    assert one.k < 3 * one.k_std + 1e-3 and two.k < 3 * two.k_std + 1e-3
    expected_slopes = -3 * three.k * np.sin(3 * scan.angles)
    np.testing.assert_allclose(scan.derivatives, expected_slopes, atol=0.01)


def test_torsion_fit_command(tmp_path):
    """The thin command (registered by the CLI as ``mlpot torsion-fit``): xTB ethane, a
    GROMACS file that reads back with the threefold term in kJ/mol."""
    pytest.importorskip("tblite")
    import ase.io
    import typer
    from typer.testing import CliRunner

    from mlpot.cli.studies import torsion_fit

    app = typer.Typer()
    app.command()(torsion_fit)
    ase.io.write(tmp_path / "ethane.xyz", molecule("C2H6"))
    itp = tmp_path / "ethane.itp"
    args = [str(tmp_path / "ethane.xyz"), "--dihedral", "2", "0", "1", "5", "--oracle", "xtb"]
    args += ["--step", "30", "--types", "HC", "CT", "CT", "HC", "--gromacs", str(itp)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = read_gromacs_dihedraltypes(itp.read_text())
    three = next(w for w in written if w.periodicity == 3)
    assert three.types == ("HC", "CT", "CT", "HC") and three.phase == 0.0
    assert 4.0 < three.k < 7.0  # kJ/mol: half the ~0.11 eV barrier
