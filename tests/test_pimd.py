"""Path-integral MD through i-PI: the quantum kinetic energy of a harmonic oscillator
(exact at any number of beads), durable runs, isotope masses, the centroid restraint,
transition-state theory on known PMFs, and the kinetic isotope effect of a double well."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms, units

pytest.importorskip("ipi")
pytest.importorskip("pymbar")

from support.model_potentials import (  # noqa: E402
    DoubleWellBond,
    Harmonic,
    harmonic_quantum_kinetic_energy,
)

from mlpot.apps.colvars import parse_cv  # noqa: E402
from mlpot.apps.isotope import barrier, kinetic_isotope_effect  # noqa: E402
from mlpot.apps.mbar import PMF  # noqa: E402
from mlpot.apps.pimd import PIMDSettings, run_pimd  # noqa: E402
from mlpot.apps.restraint import HarmonicRestraint  # noqa: E402
from mlpot.apps.umbrella import UmbrellaPlan  # noqa: E402
from mlpot.errors import MlpotInputError  # noqa: E402

T = 300.0
K_SPRING = 2.41  # eV/Å²: ħω = 0.1 eV for a proton, βħω = 3.9 at 300 K


def _proton() -> Atoms:
    return Atoms("H", positions=[[5.0, 5.0, 5.0]], cell=[10, 10, 10])


def _settings(**kwargs) -> PIMDSettings:
    options = dict(temperature_K=T, timestep_fs=0.25, steps=2000, equilibration_steps=200,
                   tau_fs=20.0, sample_every=2)  # fmt: skip
    options.update(kwargs)
    return PIMDSettings(**options)


def test_one_bead_is_classical_and_eight_beads_give_the_exact_path_integral(tmp_path):
    """Harmonic proton: P = 1 gives 3kT/2 and no spread; P = 8 the exact 8-bead kinetic
    energy (within 3 standard errors), twice the classical one, near the exact quantum."""
    classical = run_pimd(Harmonic(K_SPRING, [5, 5, 5]), _proton(), _settings(beads=1,
                         steps=200), tmp_path / "p1", progress=False)  # fmt: skip
    kinetic, _ = classical.mean_kinetic_energy()
    assert kinetic[0] == pytest.approx(1.5 * units.kB * T, rel=1e-5)  # i-PI vs ASE constants
    assert classical.mean_gyration_radius()[0][0] == pytest.approx(0.0, abs=1e-9)

    quantum = run_pimd(Harmonic(K_SPRING, [5, 5, 5]), _proton(), _settings(beads=8),
                       tmp_path / "p8", progress=False)  # fmt: skip
    kinetic, error = quantum.mean_kinetic_energy()
    exact_8 = harmonic_quantum_kinetic_energy(K_SPRING, 1.008, T, beads=8)
    assert 0 < error[0] < 0.03 * exact_8
    assert abs(kinetic[0] - exact_8) < 3 * error[0] + 0.005 * exact_8
    assert exact_8 / (1.5 * units.kB * T) > 1.9  # strongly quantum
    assert exact_8 == pytest.approx(harmonic_quantum_kinetic_energy(K_SPRING, 1.008, T),
                                    rel=0.03)  # fmt: skip
    radius, _ = quantum.mean_gyration_radius()
    assert 0.05 < radius[0] < 0.3  # Å: a delocalised proton
    assert quantum.bead_potentials.shape == (1000, 8)
    summary = quantum.summary()
    assert summary["atoms"][0]["kinetic_over_classical"] > 1.8
    json.dumps(summary)


def test_a_heavier_isotope_is_more_classical(tmp_path):
    light = run_pimd(Harmonic(K_SPRING, [5, 5, 5]), _proton(), _settings(beads=4, steps=800),
                     tmp_path / "h", progress=False)  # fmt: skip
    heavy = run_pimd(Harmonic(K_SPRING, [5, 5, 5]), _proton(), _settings(beads=4, steps=800),
                     tmp_path / "t", masses=[3.016], progress=False)  # fmt: skip
    for run, mass in ((light, 1.008), (heavy, 3.016)):
        exact = harmonic_quantum_kinetic_energy(K_SPRING, mass, T, beads=4)
        kinetic, error = run.mean_kinetic_energy()
        assert abs(kinetic[0] - exact) < 4 * error[0] + 0.01 * exact
    assert light.mean_kinetic_energy()[0][0] > heavy.mean_kinetic_energy()[0][0]
    assert light.mean_gyration_radius()[0][0] > 1.3 * heavy.mean_gyration_radius()[0][0]
    langevin = "<thermostat mode='pile_l'><tau units='femtosecond'>20</tau></thermostat>"
    block = run_pimd(Harmonic(K_SPRING, [5, 5, 5]), _proton(), _settings(beads=4, steps=100,
                     thermostat=langevin), tmp_path / "block", progress=False)  # fmt: skip
    assert len(block.kinetic_cv) == 50  # an i-PI thermostat block is passed through
    with pytest.raises(MlpotInputError, match="or an i-PI <thermostat> block"):
        _settings(thermostat="nose")
    with pytest.raises(MlpotInputError, match="one positive mass"):
        run_pimd(Harmonic(K_SPRING, [5, 5, 5]), _proton(), _settings(), tmp_path / "x",
                 masses=[1.0, 2.0])  # fmt: skip


def test_a_killed_pimd_run_resumes_from_its_checkpoint(tmp_path):
    dimer = Atoms("H2", positions=[[0, 0, 0], [1.2, 0, 0]], cell=[20, 20, 20])
    settings = _settings(beads=2, steps=300, equilibration_steps=0, checkpoint_every=100)
    countdown = [2 * 250]  # two beads per step: killed during step ~250

    with pytest.raises(RuntimeError, match="injected failure"):
        run_pimd(DoubleWellBond(fail_after=countdown), dimer, settings, tmp_path,
                 progress=False)  # fmt: skip
    with np.load(tmp_path / "pimd_state.npz") as state:
        assert int(state["step"]) == 200 and len(state["kinetic_cv"]) == 100
    saved = dict(np.load(tmp_path / "pimd_state.npz"))
    resumed = run_pimd(DoubleWellBond(), dimer, settings, tmp_path, progress=False)
    assert len(resumed.kinetic_cv) == 150  # every sample once
    # a run directory from elsewhere cannot make i-PI import code of its choosing
    saved["restart"] = np.array(str(saved["restart"]).replace("<pes>custom</pes>",
                                                              "<pes>ase</pes>"))  # fmt: skip
    saved["step"] = np.array(200)
    np.savez(tmp_path / "pimd_state.npz", **saved)
    with pytest.raises(MlpotInputError, match="force fields mlpot does not write"):
        run_pimd(DoubleWellBond(), dimer, settings, tmp_path, progress=False)
    with pytest.raises(MlpotInputError, match="other settings"):
        run_pimd(DoubleWellBond(), dimer, _settings(beads=3, steps=300), tmp_path)


def test_a_restraint_on_the_centroid_holds_the_centroid(tmp_path):
    dimer = Atoms("OH", positions=[[0, 0, 0], [1.2, 0, 0]], cell=[20, 20, 20])
    restraint = HarmonicRestraint(parse_cv("distance:0,1"), 1.35, 20.0)
    run = run_pimd(DoubleWellBond(), dimer, _settings(beads=4, steps=600), tmp_path,
                   restraint=restraint, progress=False)  # fmt: skip
    # stiff restraint (20 eV/Å²) on a gentle well: the centroid sits near 1.35 Å
    assert np.mean(run.centroid_cv) == pytest.approx(1.35, abs=0.03)
    assert 0.005 < np.std(run.centroid_cv) < 0.06


def test_an_mlpot_model_answers_all_beads_in_one_batch(tmp_path):
    """A learned model's calculator evaluates the ring polymer in one batched pass; the run
    is the one it would be bead by bead."""
    import torch
    from ase.build import molecule

    from mlpot.calculators.ase_calculator import MlpotCalculator
    from mlpot.models.registry import build_model

    torch.manual_seed(0)
    model = build_model({"name": "mpnn", "elements": [1, 6, 8], "cutoff": 3.5, "channels": 8})
    model.energy_scale.fill_(0.02)
    calc = MlpotCalculator(model.double())
    atoms = molecule("CH3CH2OH")
    structures = [atoms.copy() for _ in range(3)]
    for k, s in enumerate(structures):
        s.rattle(0.05, seed=k)
    for s, (energy, forces) in zip(structures, calc.energies_and_forces(structures), strict=True):
        s.calc = calc
        assert energy == pytest.approx(s.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(forces, s.get_forces(), atol=1e-10)

    class OneByOne(MlpotCalculator):
        energies_and_forces = None  # i-PI then asks bead by bead

    settings = _settings(beads=4, steps=20, equilibration_steps=0)
    batched = run_pimd(calc, atoms, settings, tmp_path / "batched", progress=False)
    single = run_pimd(OneByOne(model), atoms, settings, tmp_path / "single", progress=False)
    np.testing.assert_allclose(batched.bead_potentials, single.bead_potentials, atol=1e-6)


def _pmf(x, free, temperature=T) -> PMF:
    return PMF("distance:0,1", "Å", temperature, x, free - free.min(), np.zeros_like(x),
               np.full(len(x), 100))  # fmt: skip


def test_transition_state_theory_on_a_known_pmf():
    """A symmetric double-well PMF: the barrier, the reactant basin and the TST rate equal
    their direct evaluation; equal PMFs give a KIE of sqrt(m_D/m_H) from the metric."""
    x = np.linspace(0.8, 1.6, 161)
    height = 0.12
    free = height * (((x - 1.2) / 0.25) ** 2 - 1) ** 2
    atoms = Atoms("OH", positions=[[0, 0, 0], [1.2, 0, 0]])
    cv = parse_cv("distance:0,1")
    h = barrier(_pmf(x, free), atoms, masses=[16.0, 1.008], cv=cv)
    assert h.transition_state == pytest.approx(1.2, abs=1e-9)
    assert h.reactant_minimum == pytest.approx(0.95, abs=0.006)
    assert h.barrier == pytest.approx(height, abs=1e-6)
    beta = 1 / (units.kB * T)
    metric = 1 / 16.0 + 1 / 1.008
    reactant = x < 1.2
    q = np.sum(np.exp(-beta * (free[reactant] - free[reactant].min()))) * (x[1] - x[0])
    rate = np.sqrt(metric / (2 * np.pi * beta)) * np.exp(-beta * height) / q * units.fs
    assert h.rate_per_fs == pytest.approx(rate, rel=1e-9)
    d = barrier(_pmf(x, free), atoms, masses=[16.0, 2.014], cv=cv)
    assert h.rate_per_fs / d.rate_per_fs == pytest.approx(np.sqrt(metric / (1 / 16 + 1 / 2.014)))
    given = barrier(_pmf(x, free), atoms, masses=[16.0, 1.008], cv=cv, transition_state=1.2)
    assert given.rate_per_fs == pytest.approx(h.rate_per_fs, rel=1e-12)
    with pytest.raises(MlpotInputError, match="single minimum"):
        barrier(_pmf(x, (x - 1.2) ** 2), atoms, cv=cv)


@pytest.mark.slow
def test_proton_in_a_double_well_tunnels_more_than_deuterium(tmp_path):
    """Centroid umbrella sampling of a proton bound to a heavy atom by a double well
    (barrier 0.15 eV): the quantum barriers are below the classical one, H's below D's,
    and the KIE is > 1."""
    atoms = Atoms("OH", positions=[[0, 0, 0], [0.95, 0, 0]], cell=[20, 20, 20])
    plan = UmbrellaPlan.evenly(parse_cv("distance:0,1"), 0.85, 1.55, 10, k=4.0,
                               temperature_K=T)  # fmt: skip
    settings = _settings(beads=8, steps=2000, equilibration_steps=200)
    result = kinetic_isotope_effect(
        DoubleWellBond(height=0.15, centre=1.2, width=0.25), atoms, plan, settings, tmp_path,
        light_masses=[100.0, 1.008], heavy_masses=[100.0, 2.014], bins=20, progress=False,
    )  # fmt: skip
    b = result.barriers
    assert b["light"].barrier < b["heavy"].barrier < b["classical"].barrier
    assert b["classical"].barrier == pytest.approx(0.15 - 2 * units.kB * T * np.log(1.2 / 0.95),
                                                   abs=0.02)  # fmt: skip
    assert result.kie > 1.0


def test_pimd_command_reports_kinetic_energies_and_isotopes(tmp_path):
    from typer.testing import CliRunner

    from mlpot.cli.main import app
    from mlpot.models.checkpoint import save_model
    from mlpot.models.registry import build_model

    model = build_model({"name": "lj", "elements": [18], "sigma": 3.4, "epsilon": 0.0104})
    save_model(tmp_path / "lj.pt", model.double())
    Atoms("Ar2", positions=[[0, 0, 0], [3.8, 0, 0]]).write(tmp_path / "ar2.xyz")
    args = ["pimd", str(tmp_path / "lj.pt"), str(tmp_path / "ar2.xyz"), "-o",
            str(tmp_path / "p"), "--beads", "4", "--steps", "40", "--equilibration", "0",
            "--mass", "1=36.0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "p" / "pimd.json").read_text())
    assert [a["mass_amu"] for a in summary["atoms"]] == pytest.approx([39.948, 36.0])
    assert summary["samples"] == 20 and summary["settings"]["beads"] == 4
    assert all(a["kinetic_energy_eV"] > 0 for a in summary["atoms"])
    bad = CliRunner().invoke(app, [*args[:-1], "7=2.0"])
    assert bad.exit_code == 2 and "no atom 7" in bad.output
