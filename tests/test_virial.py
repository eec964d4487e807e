"""Second virial coefficient and Boyle temperature (mlpot.apps.virial): known answers of
the Lennard-Jones gas, the tail treatment, the same numbers through an ASE calculator, and
the orientation average of rigid molecules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.units import kB
from scipy.integrate import quad, simpson

from mlpot.apps.virial import (
    CM3_PER_MOL,
    DispersionTail,
    boyle_temperature,
    dimer_curves,
    fit_dispersion_tail,
    lennard_jones,
    pair_curves,
    second_virial,
    tabulate,
    to_cm3_per_mol,
)
from mlpot.calculators.oracles import make_oracle
from mlpot.errors import MlpotInputError

SIGMA, EPSILON = 3.4, 0.0104  # argon-like, Å and eV
B0 = 2 * math.pi * SIGMA**3 / 3  # hard-sphere B2 of diameter σ, Å³
C6 = 4 * EPSILON * SIGMA**6
#: reduced B2*(T*) = B2 / b0 of the full Lennard-Jones potential
REDUCED_B2 = {1.0: -2.53809, 2.0: -0.62763, 5.0: 0.24334}
T_BOYLE = 3.4179  # ε/k


def _kelvin(reduced):
    return reduced * EPSILON / kB


def _lj_curves(r_max=10 * SIGMA, n=1500):
    return tabulate(lennard_jones(SIGMA, EPSILON), np.linspace(0.7 * SIGMA, r_max, n))


def test_lennard_jones_boyle_temperature_and_b2():
    curves = _lj_curves()
    tail = DispersionTail(C6, curves.r[-1])
    t_boyle = boyle_temperature(curves, (_kelvin(2), _kelvin(6)), tail=tail)
    assert t_boyle * kB / EPSILON == pytest.approx(T_BOYLE, rel=1e-3)
    for t_star, b2_star in REDUCED_B2.items():
        b2 = second_virial(curves, _kelvin(t_star), tail=tail)
        assert b2 / B0 == pytest.approx(b2_star, abs=2e-4)
    # argon-like, per mole: B2(T_B/2) is about -165 cm³/mol
    b2 = second_virial(curves, [_kelvin(1.0), _kelvin(5.0)], tail=tail)
    np.testing.assert_allclose(to_cm3_per_mol(b2), b2 * CM3_PER_MOL)
    assert to_cm3_per_mol(b2[0]) == pytest.approx(-2.53809 * B0 * 0.6022, rel=1e-3)


def test_dispersion_tail_series_equals_quadrature_and_truncation_lowers_boyle():
    kt = kB * _kelvin(1.5)
    tail = DispersionTail(C6, 2.0 * SIGMA)
    x, a = C6 / (kt * tail.start**6), tail.start  # r = a / t
    numeric, _ = quad(lambda t: a**3 * math.expm1(x * t**6) / t**4 if t > 0 else 0.0, 0, 1)
    assert tail.integral(kt) == pytest.approx(numeric, rel=1e-8)
    cut = _lj_curves(r_max=3 * SIGMA, n=600)
    truncated = boyle_temperature(cut, (_kelvin(2), _kelvin(6)))
    corrected = boyle_temperature(cut, (_kelvin(2), _kelvin(6)), tail=DispersionTail(C6, 3 * SIGMA))
    # the attraction beyond 3σ is worth about 6 % of T_B; the r⁻⁶ tail puts it back
    assert truncated * kB / EPSILON == pytest.approx(T_BOYLE * 0.94, rel=0.01)
    assert corrected * kB / EPSILON == pytest.approx(T_BOYLE, rel=2e-3)


def test_fitted_c6_from_the_curve():
    curves = _lj_curves(r_max=3 * SIGMA, n=600)
    tail = fit_dispersion_tail(curves, (2.2 * SIGMA, 3 * SIGMA))
    assert tail.c6 == pytest.approx(C6, rel=0.02)  # the r⁻¹² part biases it a little
    assert tail.start == pytest.approx(3 * SIGMA)
    with pytest.raises(MlpotInputError, match="repulsive"):
        fit_dispersion_tail(curves, (0.7 * SIGMA, 0.9 * SIGMA))


def test_the_ase_lennard_jones_oracle_gives_the_same_b2():
    """Energies through an ASE calculator (pair energies minus isolated atoms). ASE shifts
    its pair energy to zero at its cutoff ``rc``: with ``rc = 20σ`` the shift (6e-8 ε) moves
    T_B by 0.02 % (with the default 3σ, by 4 %); the table ends at 8σ, the analytic tail
    takes over."""
    oracle = make_oracle("lj", sigma=SIGMA, epsilon=EPSILON, rc=20 * SIGMA)
    r = np.linspace(0.7 * SIGMA, 8 * SIGMA, 500)
    curves = pair_curves(oracle, ("Ar", "Ar"), r)
    np.testing.assert_allclose(curves.u[0], lennard_jones(SIGMA, EPSILON)(r), atol=1e-5 * EPSILON)
    tail = DispersionTail(C6, r[-1])
    t_boyle = boyle_temperature(curves, (_kelvin(2), _kelvin(6)), tail=tail)
    assert t_boyle * kB / EPSILON == pytest.approx(T_BOYLE, rel=1e-3)


def test_an_mlpot_model_through_its_calculator_is_zero_beyond_its_cutoff():
    """The path a learned potential takes: an mlpot energy model (here the registry's
    Lennard-Jones term, cut and shifted at 4σ) through MlpotCalculator, tabulated up to its
    cutoff. Its B2 is that of the shifted, truncated pair function: the missing r⁻⁶ tail
    lowers T_B by 2.2 %, the shift by another 2.3 %."""
    from mlpot.calculators.ase_calculator import MlpotCalculator
    from mlpot.models.registry import build_model

    cutoff = 4 * SIGMA
    spec = {"name": "lj", "elements": [18], "sigma": SIGMA, "epsilon": EPSILON, "cutoff": cutoff}
    calc = MlpotCalculator(build_model(spec))
    r = np.geomspace(0.8 * SIGMA, cutoff, 300)
    curves = pair_curves(calc, ("Ar", "Ar"), r)
    lj = lennard_jones(SIGMA, EPSILON)
    np.testing.assert_allclose(curves.u[0], lj(r) - lj(cutoff), atol=1e-12)
    bracket = (_kelvin(2.5), _kelvin(4.5))
    t_model = boyle_temperature(curves, bracket) * kB / EPSILON
    shifted = tabulate(lambda x: lj(x) - lj(cutoff), np.geomspace(0.8 * SIGMA, cutoff, 2000))
    assert t_model == pytest.approx(boyle_temperature(shifted, bracket) * kB / EPSILON, rel=1e-4)
    assert t_model == pytest.approx(T_BOYLE * 0.955, rel=0.005)


def _dumbbell_b2(temperature, bond, cutoff, r):
    """B2 (Å³) of rigid two-site Lennard-Jones molecules (sites ``bond`` Å apart; the
    pair energy shifted to 0 at ``cutoff`` as ASE's) by product Gauss-Legendre quadrature
    over the relative orientation (cos θ1, cos θ2, φ) and Simpson's rule over ``r``."""
    lj = lennard_jones(SIGMA, EPSILON)
    x, w = np.polynomial.legendre.leggauss(10)
    phi = np.arange(10) * 2 * np.pi / 10
    c1, c2, p = np.meshgrid(x, x, phi, indexing="ij")
    weights = w[:, None, None] * w[None, :, None] / (4 * len(phi))
    s1, s2 = np.sqrt(1 - c1**2), np.sqrt(1 - c2**2)
    e1 = np.stack([s1, 0 * s1, c1], -1)
    e2 = np.stack([s2 * np.cos(p), s2 * np.sin(p), c2], -1)
    mayer = np.empty(len(r))
    for k, distance in enumerate(r):
        u = 0.0
        for a in (-0.5, 0.5):
            for b in (-0.5, 0.5):
                d = np.linalg.norm([0, 0, distance] + b * bond * e2 - a * bond * e1, axis=-1)
                u = u + np.where(d < cutoff, lj(d) - lj(cutoff), 0.0)
        mayer[k] = np.sum(weights * np.expm1(-u / (kB * temperature)))
    return -2 * np.pi * (-(r[0] ** 3) / 3 + simpson(mayer * r * r, x=r))


def test_rigid_molecules_orientation_average():
    """Monomers of one atom give the pair result; rigid two-site LJ molecules averaged over
    32 quasi-random orientations give the B2 of a product quadrature over orientations."""
    oracle = make_oracle("lj", sigma=SIGMA, epsilon=EPSILON, rc=6 * SIGMA)
    r = np.linspace(0.8 * SIGMA, 6 * SIGMA, 80)
    atom = Atoms("Ar", positions=[[0, 0, 0]])
    single = dimer_curves(atom, atom, oracle, r[::8], orientations=2)
    np.testing.assert_allclose(single.u, pair_curves(oracle, ("Ar", "Ar"), r[::8]).u.repeat(2, 0))
    bond = 0.4 * SIGMA
    dumbbell = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, bond]])
    molecules = dimer_curves(dumbbell, dumbbell, oracle, r, orientations=32, seed=1)
    assert molecules.n_orientations == 32
    t = _kelvin(4.0)
    reference = _dumbbell_b2(t, bond, 6 * SIGMA, np.linspace(0.8 * SIGMA, 6 * SIGMA, 600))
    assert reference == pytest.approx(-109.6, rel=0.01)  # Å³, about -66 cm³/mol
    # quasi-Monte Carlo over 32 orientations: a spread of about 2 % between seeds
    assert second_virial(molecules, t) == pytest.approx(reference, rel=0.05)


def test_bad_input_is_refused():
    curves = _lj_curves(r_max=4 * SIGMA, n=200)
    with pytest.raises(MlpotInputError, match="core is not closed"):
        second_virial(tabulate(lennard_jones(SIGMA, EPSILON), curves.r + 0.2 * SIGMA), 1e4)
    with pytest.raises(MlpotInputError, match="same sign"):
        boyle_temperature(curves, (_kelvin(0.5), _kelvin(1.0)))
    with pytest.raises(MlpotInputError, match="must lie inside the table"):
        second_virial(curves, 300.0, tail=DispersionTail(C6, 20 * SIGMA))
    with pytest.raises(MlpotInputError, match="positive"):
        second_virial(curves, -1.0)
    with pytest.raises(MlpotInputError, match="increasing"):
        tabulate(lennard_jones(SIGMA, EPSILON), curves.r[::-1])


def test_boyle_command():
    """The thin command (registered by the CLI as ``mlpot boyle``) on the LJ oracle."""
    import re

    import typer
    from typer.testing import CliRunner

    from mlpot.cli.studies import boyle

    app = typer.Typer()
    app.command()(boyle)
    params = [f"sigma={SIGMA}", f"epsilon={EPSILON}", f"rc={20 * SIGMA}"]
    args = ["--oracle", "lj", "--r-min", str(0.8 * SIGMA), "--r-max", str(8 * SIGMA)]
    args += [x for p in params for x in ("--oracle-param", p)]
    args += ["--c6", str(C6), "--bracket", "300", "500", "--temperatures", "300,412.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    t_boyle = float(re.search(r"Boyle temperature: ([\d.]+) K", result.output).group(1))
    assert t_boyle == pytest.approx(_kelvin(T_BOYLE), rel=1e-3)
    bad = CliRunner().invoke(app, ["--r-max", "10"])
    assert bad.exit_code == 2 and "give a MODEL or --oracle" in bad.output
