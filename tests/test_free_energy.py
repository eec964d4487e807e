"""Free energies along collective variables: exact CV derivatives, umbrella sampling with
MBAR against an analytic PMF, durable windows, parallel windows, reweighting to an oracle
(and its refusal), and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule

pytest.importorskip("pymbar")

from support.model_potentials import DoubleWellBond, double_well_factory  # noqa: E402

from mlpot.apps.colvars import CollectiveVariable, parse_cv  # noqa: E402
from mlpot.apps.mbar import umbrella_pmf  # noqa: E402
from mlpot.apps.restraint import HarmonicRestraint, Restrained  # noqa: E402
from mlpot.apps.reweight import ReweightingUnreliable, reweight_to_oracle  # noqa: E402
from mlpot.apps.umbrella import UmbrellaPlan, load_windows, run_umbrella  # noqa: E402
from mlpot.errors import MlpotInputError  # noqa: E402

T = 300.0
KT = units.kB * T


def _fd_gradient(cv: CollectiveVariable, atoms: Atoms, h: float = 1e-6) -> np.ndarray:
    gradient = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, k] += h
            minus.positions[i, k] -= h
            gradient[i, k] = cv.difference(cv.value(plus), cv.value(minus)) / (2 * h)
    return gradient


@pytest.mark.parametrize(
    "text", ["distance:0,1", "angle:1,0,2", "dihedral:3,0,1,2", "dihedral:4,0,1,7",
             "distance-difference:0,2,2,8"],
)  # fmt: skip
def test_collective_variable_gradients_are_exact(text):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=1)
    cv = parse_cv(text)
    value, gradient = cv.evaluate(atoms)
    np.testing.assert_allclose(gradient, _fd_gradient(cv, atoms), atol=1e-8)
    np.testing.assert_allclose(gradient.sum(axis=0), 0.0, atol=1e-12)  # translation
    if cv.kind == "dihedral":
        assert value == pytest.approx(np.radians(atoms.get_dihedral(*cv.indices)) % (2 * np.pi)
                                      - (2 * np.pi if value < 0 else 0.0), abs=1e-10)  # fmt: skip
    if cv.kind == "angle":
        assert value == pytest.approx(np.radians(atoms.get_angle(*cv.indices)), abs=1e-10)


def test_collective_variables_use_the_minimum_image_and_wrap_dihedrals():
    atoms = Atoms("H2", positions=[[0.2, 0, 0], [9.6, 0, 0]], cell=[10, 10, 10], pbc=True)
    cv = parse_cv("distance:0,1")
    assert cv.value(atoms) == pytest.approx(0.6)
    np.testing.assert_allclose(cv.evaluate(atoms)[1], _fd_gradient(cv, atoms), atol=1e-8)
    dihedral = parse_cv("dihedral:0,1,2,3")
    assert dihedral.difference(3.1, -3.1) == pytest.approx(6.2 - 2 * np.pi)
    restraint = HarmonicRestraint(dihedral, np.pi - 0.05, 2.0)
    assert restraint.energy(np.array([-np.pi + 0.05])) == pytest.approx(0.5 * 2.0 * 0.1**2)


@pytest.mark.parametrize(
    "text, message",
    [("distance:0", "needs 2 atom indices"), ("torsion:0,1,2,3", "unknown collective"),
     ("angle:0,0,1", "must be distinct"), ("distance:a,b", "integer atom indices")],
)  # fmt: skip
def test_bad_collective_variables_are_named(text, message):
    with pytest.raises(MlpotInputError, match=message):
        parse_cv(text)
    with pytest.raises(MlpotInputError, match="outside the structure of 2 atoms"):
        parse_cv("distance:0,5").check_atoms(Atoms("H2"))


def test_restrained_forces_are_the_gradient_of_the_biased_energy():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    from ase.calculators.emt import EMT

    calc = Restrained(EMT(), HarmonicRestraint(parse_cv("dihedral:4,0,1,7"), 0.5, 3.0))
    atoms.calc = calc
    forces = atoms.get_forces()
    h = 1e-5
    for i, k in [(4, 0), (7, 2), (1, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        plus.calc = minus.calc = calc
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert forces[i, k] == pytest.approx(fd, abs=1e-6)
    atoms.get_potential_energy()
    assert calc.results["energy"] == pytest.approx(
        calc.results["unbiased_energy"] + calc.results["bias"]
    )


def _dimer() -> Atoms:
    return Atoms("H2", positions=[[0, 0, 0], [1.2, 0, 0]], masses=[10.0, 10.0])


def _plan(**kwargs) -> UmbrellaPlan:
    options = dict(k=2.5, temperature_K=T, timestep_fs=2.0, equilibration_steps=100,
                   steps=1500, friction_per_fs=0.05, frame_every=10)  # fmt: skip
    options.update(kwargs)
    windows = options.pop("windows", 9)
    return UmbrellaPlan.evenly(parse_cv("distance:0,1"), 1.0, 2.0, windows, **options)


@pytest.fixture(scope="module")
def double_well_run(tmp_path_factory):
    """Umbrella sampling of a double-well bond (minima 1.2 and 1.8 Å, barrier 0.1 eV)."""
    directory = tmp_path_factory.mktemp("umbrella")
    return run_umbrella(DoubleWellBond, _dimer(), _plan(), directory, progress=False)


def test_mbar_pmf_of_a_double_well_matches_the_exact_one(double_well_run):
    pmf = umbrella_pmf(double_well_run, bins=25)
    exact = DoubleWellBond().pmf(pmf.cv, T)
    sampled = pmf.counts >= 10  # decorrelated samples
    reference = np.argmin(pmf.free_energy)  # F = 0 there; MBAR's errors are relative to it
    error = (pmf.free_energy - (exact - exact[reference]))[sampled]
    assert sampled.sum() >= 15
    # within MBAR's own uncertainty (3σ) plus a sliver of histogram bias, and < 0.7 kT
    assert np.all(np.abs(error) <= 3 * pmf.uncertainty[sampled] + 0.15 * KT)
    assert np.abs(error).max() < 0.7 * KT
    d = pmf.diagnostics
    assert d["overlap_ok"] and len(d["neighbour_overlap"]) == 8
    assert all(g >= 1.0 for g in d["statistical_inefficiency"])


def test_reweighting_corrects_the_pmf_to_the_oracle(double_well_run, tmp_path):
    """The oracle's double well is higher and shifted: the reweighted PMF follows the
    oracle's exact PMF, the ML one does not; oracle energies are cached."""
    pmf = umbrella_pmf(double_well_run, bins=25)
    oracle = DoubleWellBond(height=0.16, centre=1.6)
    result = reweight_to_oracle(double_well_run, pmf, oracle, max_frames=250, progress=False)
    exact = oracle.pmf(pmf.cv, T)
    sampled = np.isfinite(result.reference.free_energy)  # enough effective samples
    assert sampled.sum() >= 12

    def worst(free):
        error = (free - exact)[sampled]
        return np.abs(error - error.mean()).max()

    assert worst(pmf.free_energy) > 5 * KT
    assert worst(result.reference.free_energy) < 1.2 * KT
    s = result.summary
    assert s["frames"] > 200 and 20 <= s["effective_samples"] <= s["frames"]
    assert s["bins_corrected"] >= 10
    cached = DoubleWellBond(height=0.16, centre=1.6, fail_after=[0])  # any call would raise
    again = reweight_to_oracle(double_well_run, pmf, cached, max_frames=250, progress=False)
    np.testing.assert_allclose(again.reference.free_energy, result.reference.free_energy)
    assert np.isnan(result.reference.free_energy[~sampled]).all()  # said, not guessed


def test_the_ensembles_offset_free_spread_is_what_reweighting_reports():
    """Members that differ by a constant have a large energy_std but agree on every energy
    difference: their offset-free spread is zero. A member that disagrees on one frame only
    shows there, scaled by the calibration."""
    from mlpot.apps.reweight import _relative_std
    from mlpot.apps.umbrella import UmbrellaRun, WindowSamples

    n = 6
    members = np.array([[0.0, 0.3, -0.2]] * n) + np.linspace(0, 1, n)[:, None]  # offsets
    raw = members.std(axis=1)
    window = WindowSamples(1.0, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, 2, 3)),
                           np.zeros(n), np.zeros(n), 2.0 * raw, members)  # fmt: skip
    run = UmbrellaRun(_plan(windows=2), _dimer(), [window, window])
    frames = [(0, i) for i in range(n)]
    np.testing.assert_allclose(_relative_std(run, frames, 2.0 * raw), 0.0, atol=1e-12)
    members[3, 0] += 0.6  # one member disagrees about frame 3
    window.frame_member_energy = members
    relative = _relative_std(run, frames, 2.0 * members.std(axis=1))
    # member 0 deviates by 0.6·5/6 at frame 3 and by −0.6/6 elsewhere (its mean moved)
    np.testing.assert_allclose(np.delete(relative, 3), relative[3] / 5, rtol=1e-12)
    scale = 2.0
    assert relative[3] == pytest.approx(scale * np.std([0.5, 0.0, 0.0]), rel=1e-12)


def test_reweighting_refuses_when_the_effective_sample_size_is_too_small(tmp_path):
    run = run_umbrella(DoubleWellBond, _dimer(), _plan(windows=5, steps=300), tmp_path,
                       progress=False)  # fmt: skip
    pmf = umbrella_pmf(run, bins=10)
    far_off = DoubleWellBond(height=0.6, centre=1.7, width=0.2)
    with pytest.raises(ReweightingUnreliable, match=r"effective samples of \d+ frames"):
        reweight_to_oracle(run, pmf, far_off, max_frames=100, progress=False)


def test_a_killed_umbrella_run_resumes_each_window_where_it_stopped(tmp_path):
    plan = _plan(windows=3, steps=300, equilibration_steps=0, checkpoint_every=100,
                 sample_every=5)  # fmt: skip
    countdown = [600]  # relaxations + window 0 + part of window 1, then the "kill"

    def dying():
        return DoubleWellBond(fail_after=countdown)

    with pytest.raises(RuntimeError, match="injected failure"):
        run_umbrella(dying, _dimer(), plan, tmp_path, progress=False)
    windows = tmp_path / "windows"
    first = (windows / "window_000.npz").read_bytes()
    with np.load(windows / "window_001.npz") as partial:
        assert not bool(partial["done"]) and 0 < int(partial["step"]) < 300
    run = run_umbrella(DoubleWellBond, _dimer(), plan, tmp_path, progress=False)
    assert (windows / "window_000.npz").read_bytes() == first  # not run again
    assert [len(w.cv) for w in run.windows] == [60, 60, 60]  # no sample lost or repeated
    with pytest.raises(MlpotInputError, match=r"other settings \(k\)"):
        run_umbrella(DoubleWellBond, _dimer(), _plan(windows=3, steps=300, k=9.0,
                     equilibration_steps=0, checkpoint_every=100), tmp_path)  # fmt: skip


def test_windows_run_in_parallel_processes(tmp_path):
    plan = _plan(windows=4, steps=200, equilibration_steps=20)
    factory = double_well_factory(0.1, 1.5, 0.3)
    run = run_umbrella(factory, _dimer(), plan, tmp_path, workers=2, progress=False)
    assert [len(w.cv) for w in run.windows] == [40] * 4
    centres = np.array([w.cv.mean() for w in run.windows])
    assert np.all(np.diff(centres) > 0)  # each window sits near its own centre
    assert load_windows(tmp_path).plan == plan


def test_windows_run_on_a_dask_cluster(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    plan = _plan(windows=3, steps=100, equilibration_steps=10)
    with distributed.LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            run = run_umbrella(double_well_factory(0.1, 1.5, 0.3), _dimer(), plan, tmp_path,
                               executor=client.get_executor(), progress=False)  # fmt: skip
    assert [len(w.cv) for w in run.windows] == [20] * 3


def _invoke(args):
    from typer.testing import CliRunner

    from mlpot.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_free_energy_command_writes_the_pmf_and_reweights_to_the_same_potential(tmp_path):
    """An argon dimer on mlpot's Lennard-Jones model, reweighted to ASE's Lennard-Jones
    with the same parameters: ΔE = 0, so every frame counts and the PMF is unchanged."""
    from mlpot.models.checkpoint import save_model
    from mlpot.models.registry import build_model

    lj = {"sigma": 3.4, "epsilon": 0.0104}
    save_model(tmp_path / "lj.pt", build_model({"name": "lj", "elements": [18], **lj}).double())
    Atoms("Ar2", positions=[[0, 0, 0], [3.8, 0, 0]]).write(tmp_path / "ar2.xyz")
    out = tmp_path / "fe"
    result = _invoke(["free-energy", tmp_path / "lj.pt", tmp_path / "ar2.xyz",
                      "--cv", "distance:0,1", "--from", "3.6", "--to", "4.4", "--windows", "4",
                      "--k", "1.0", "--steps", "200", "--equilibration", "20", "--timestep", "2",
                      "--bins", "8", "--frame-every", "10", "-o", out, "--oracle", "lj",
                      "--oracle-param", "sigma=3.4", "--oracle-param", "epsilon=0.0104",
                      "--reweight", "80", "--min-effective-samples", "10"])  # fmt: skip
    assert result.exit_code == 0, result.output
    ml = json.loads((out / "pmf.json").read_text())
    assert ml["cv"] == "distance:0,1" and min(ml["free_energy_eV"]) == 0.0
    assert json.loads((out / "reweighting.json").read_text())["delta_energy_std_eV"] < 1e-9
    oracle = np.loadtxt(out / "pmf_oracle.csv", delimiter=",", skiprows=1)
    finite = np.isfinite(oracle[:, 1])
    assert finite.sum() >= 4
    shift = oracle[finite, 1] - np.array(ml["free_energy_eV"])[finite]
    np.testing.assert_allclose(shift, shift[0], atol=2e-6)  # the CSV keeps 6 digits


def test_free_energy_command_refuses_an_untrustworthy_reweighting(tmp_path):
    import torch

    from mlpot.models.checkpoint import save_model
    from mlpot.models.registry import build_model

    torch.manual_seed(0)
    # a random model, nothing like EMT, whose surface keeps the atoms apart for 60 steps
    # (with this seed, the shared channel mixing; with per-element mixing two atoms collide)
    spec = {"name": "mpnn", "elements": [1, 6, 8], "cutoff": 3.5, "channels": 8}
    model = build_model({**spec, "element_mixing": False})
    model.energy_scale.fill_(0.02)
    save_model(tmp_path / "model.pt", model.double())
    molecule("CH3CH2OH").write(tmp_path / "ethanol.xyz")
    args = ["free-energy", tmp_path / "model.pt", tmp_path / "ethanol.xyz", "--cv",
            "distance:0,2", "--from", "2.3", "--to", "2.7", "--windows", "3", "--steps", "60",
            "--equilibration", "10", "--bins", "6", "--frame-every", "5", "-o",
            tmp_path / "fe", "--oracle", "emt", "--reweight", "18"]  # fmt: skip
    result = _invoke(args)
    assert result.exit_code == 3 and "reweighting to the oracle refused" in result.output
    assert (tmp_path / "fe" / "pmf.csv").is_file()  # the ML PMF stands, labelled as such
    bad = _invoke([*args[:4], "dihedral:0,1", *args[5:]])
    assert bad.exit_code == 2 and "needs 4 atom indices" in bad.output
