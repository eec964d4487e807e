"""Learned dipoles and harmonic IR spectra: the dipole rotates as a vector, is
translation invariant for a neutral molecule, conserves the total charge, has exact
derivatives; the IR routine agrees with ASE's Infrared; a dipole model learned from
GFN2-xTB gives the oracle's strong IR bands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize import BFGS
from scipy.spatial.transform import Rotation

from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_response_model, save_response_model
from mlpot.models.registry import build_model
from mlpot.models.response import DipoleModel, body_spec, response_graph
from mlpot.training.response import fit_response
from mlpot.validation.spectra import dipole_derivatives, dipole_line_shape, harmonic_ir, md_spectrum

#: as response bodies are built (mlpot.models.response.body_spec: shared channel mixing)
BODY = body_spec({"name": "mpnn", "elements": [1, 6, 8], "cutoff": 4.0, "channels": 8, "layers": 2})


def _model(radial_basis: int = 8) -> DipoleModel:
    """An untrained dipole model whose body has its neighbour-count normalisation."""
    torch.manual_seed(0)
    model = DipoleModel(build_model(BODY), radial_basis=radial_basis).double()
    model.body.fit_statistics(
        [response_graph(molecule(name), model, labelled=False) for name in ("CH3CH2OH", "CH3OH")]
    )
    return model.eval()


def _dipole(model: DipoleModel, atoms) -> np.ndarray:
    graph = response_graph(atoms, model, labelled=False)
    return model(graph)[0].detach().numpy()


@pytest.mark.parametrize("radial_basis", [0, 8], ids=["charges", "charges+atomic"])
def test_dipole_is_equivariant_and_translation_invariant(radial_basis):
    model = _model(radial_basis)
    atoms = molecule("CH3CH2OH")
    mu = _dipole(model, atoms)
    assert np.linalg.norm(mu) > 1e-3
    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0])
    turned = atoms.copy()
    turned.positions = rotation.apply(atoms.positions)
    np.testing.assert_allclose(_dipole(model, turned), rotation.apply(mu), atol=1e-10)
    moved = atoms.copy()
    moved.positions += [3.0, -2.0, 7.5]
    np.testing.assert_allclose(_dipole(model, moved), mu, atol=1e-10)


def test_charges_add_up_to_the_total_charge():
    model = _model()
    atoms = molecule("CH3CH2OH")
    atoms.info["charge"] = 1.0
    graph = response_graph(atoms, model, labelled=False)
    assert float(model.charges(graph).sum()) == pytest.approx(1.0, abs=1e-12)
    # a charged molecule's dipole moves with the origin by Q times the shift
    moved = atoms.copy()
    moved.positions += [1.0, 0.0, 0.0]
    shift = _dipole(model, moved) - _dipole(model, atoms)
    np.testing.assert_allclose(shift, [1.0, 0.0, 0.0], atol=1e-10)


def test_dipole_derivatives_equal_finite_differences():
    model = _model()
    atoms = molecule("CH3OH")
    analytic = dipole_derivatives(atoms, model)
    h = 1e-5
    for j in (0, 4, 13):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[j // 3, j % 3] += h
        minus.positions[j // 3, j % 3] -= h
        numeric = (_dipole(model, plus) - _dipole(model, minus)) / (2 * h)
        np.testing.assert_allclose(analytic[j], numeric, atol=1e-7 * np.abs(analytic).max())


def test_periodic_cell_is_refused():
    atoms = molecule("H2O")
    atoms.set_cell([5.0, 5.0, 5.0])
    atoms.pbc = True
    with pytest.raises(MlpotInputError, match="polarisation quantum") as err:
        response_graph(atoms, _model(), labelled=False)
    assert err.value.field == "pbc"


def test_missing_label_names_the_frame():
    with pytest.raises(MlpotInputError, match="frame 3") as err:
        response_graph(molecule("H2O"), _model(), source="train", frame=3)
    assert err.value.field == "dipole"


def test_response_model_file_round_trip(tmp_path):
    model = _model()
    save_response_model(tmp_path / "dipole.pt", model)
    loaded = load_response_model(tmp_path / "dipole.pt")
    atoms = molecule("CH3CH2OH")
    np.testing.assert_allclose(_dipole(loaded, atoms), _dipole(model, atoms), atol=1e-12)
    with pytest.raises(MlpotInputError, match="not an mlpot"):
        (tmp_path / "junk.pt").write_bytes(b"not a model")
        load_response_model(tmp_path / "junk.pt")


def _rattled(water, calc, n: int, *, seed: int, stdev: float = 0.05, labels: str = "dipole"):
    """``n`` copies of ``water`` rattled by ``stdev`` Å, labelled by ``calc``: the dipole,
    or energy and forces (``labels="forces"``), in a SinglePointCalculator."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = water.copy()
        atoms.positions += rng.normal(0.0, stdev, atoms.positions.shape)
        atoms.calc = calc
        if labels == "forces":
            values = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        else:
            values = {"dipole": atoms.get_dipole_moment()}
        atoms.calc = SinglePointCalculator(atoms, **values)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def water_xtb():
    from tblite.ase import TBLite

    calc = TBLite(method="GFN2-xTB", verbosity=0)
    water = molecule("H2O")
    water.calc = calc
    BFGS(water, logfile=None).run(fmax=1e-4)
    return water, calc


def test_harmonic_ir_agrees_with_ase_infrared(water_xtb, tmp_path, monkeypatch):
    from ase.vibrations import Infrared

    water, calc = water_xtb
    ours = harmonic_ir(water, calc, calc)
    monkeypatch.chdir(tmp_path)
    atoms = water.copy()
    atoms.calc = calc
    ase_ir = Infrared(atoms, delta=0.01)
    ase_ir.run()
    ase_ir.read()
    np.testing.assert_allclose(ours.frequencies, np.real(ase_ir.get_frequencies()[-3:]), rtol=1e-3)
    np.testing.assert_allclose(ours.intensities, ase_ir.intensities[-3:], rtol=2e-3)


@pytest.fixture(scope="module")
def learned_water_dipole(water_xtb):
    """A dipole model trained on 170 rattled waters (GFN2-xTB dipoles)."""
    water, calc = water_xtb
    frames = _rattled(water, calc, 200, seed=0, labels="dipole")
    torch.manual_seed(0)
    body = build_model({**BODY, "elements": [1, 8], "channels": 16})
    model = DipoleModel(body).double()
    fit = fit_response(model, frames[:170], frames[170:], epochs=400)
    return model, fit


def test_learned_dipole_gives_the_oracles_ir_bands(water_xtb, learned_water_dipole):
    """Harmonic IR on the oracle's Hessian with the learned dipole: intensities relative to
    the strongest band within 20 % of the oracle's for every band above a tenth of it."""
    water, calc = water_xtb
    model, fit = learned_water_dipole
    assert fit["validation_rmse"] < 0.003  # e·Å; the dipole itself is ~0.48 e·Å
    reference = harmonic_ir(water, calc, calc)
    learned = harmonic_ir(water, calc, model)
    np.testing.assert_allclose(learned.frequencies, reference.frequencies, rtol=1e-6)
    ref = reference.intensities / reference.intensities.max()
    got = learned.intensities / learned.intensities.max()
    strong = ref > 0.1
    assert strong.sum() >= 2
    np.testing.assert_allclose(got[strong], ref[strong], rtol=0.2)


def test_cli_fits_a_dipole_and_prints_a_spectrum(water_xtb, tmp_path):
    import ase.io
    from typer.testing import CliRunner

    from mlpot.cli.main import app
    from mlpot.models.checkpoint import save_model

    water, calc = water_xtb
    frames = _rattled(water, calc, 40, seed=1, labels="dipole")
    ase.io.write(tmp_path / "dipoles.xyz", frames)
    runner = CliRunner()
    fitted = runner.invoke(
        app,
        ["response", str(tmp_path / "dipoles.xyz"), "-o", str(tmp_path / "dipole.pt"),
         "--epochs", "30"],
    )  # fmt: skip
    assert fitted.exit_code == 0, fitted.output
    assert "validation dipole RMSE" in fitted.output
    torch.manual_seed(0)
    energy = build_model({"name": "mpnn", "elements": [1, 8], "cutoff": 4.0, "channels": 8})
    save_model(tmp_path / "model.pt", energy.double())
    ase.io.write(tmp_path / "water.xyz", water)
    result = runner.invoke(
        app,
        ["spectrum", str(tmp_path / "model.pt"), str(tmp_path / "water.xyz"),
         "--response", str(tmp_path / "dipole.pt"), "--no-relax",
         "--csv", str(tmp_path / "ir.csv"), "--html", str(tmp_path / "ir.html")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cm^-1" in result.output and (tmp_path / "ir.csv").exists()
    page = (tmp_path / "ir.html").read_text()
    assert "data:image/png;base64," in page and "cm^-1" in page
    table = np.loadtxt(tmp_path / "ir.csv", delimiter=",")
    assert table.shape == (4001, 2) and np.isfinite(table).all()
    missing = runner.invoke(
        app, ["spectrum", str(tmp_path / "model.pt"), str(tmp_path / "water.xyz"),
              "--response", str(tmp_path / "nothing.pt")]
    )  # fmt: skip
    assert missing.exit_code == 2 and "nothing.pt" in missing.output
    md = runner.invoke(
        app,
        ["spectrum", str(tmp_path / "model.pt"), str(tmp_path / "water.xyz"),
         "--response", str(tmp_path / "dipole.pt"), "--no-relax", "--method", "md",
         "--trajectories", "1", "--steps", "200", "--temperature", "50"],
    )  # fmt: skip
    assert md.exit_code == 0, md.output
    assert "resolution" in md.output


def test_line_shape_of_a_known_oscillation():
    """A dipole oscillating at 1650 cm⁻¹ (with a weaker 3000 cm⁻¹ component) gives its
    peaks there, within the resolution 1 / (T Δt)."""
    dt = 0.5  # fs
    t = np.arange(4000) * dt * 1e-15  # s
    c = 100.0 * 2.99792458e8  # cm/s
    mu = np.zeros((len(t), 3))
    mu[:, 0] = 0.1 * np.cos(2 * np.pi * 1650.0 * c * t)
    mu[:, 2] = 0.02 * np.cos(2 * np.pi * 3000.0 * c * t + 0.3)
    shape = dipole_line_shape([mu], dt)
    assert shape.resolution == pytest.approx(1 / (len(t) * dt * 1e-15 * c))
    assert abs(shape.peak(1000, 2500) - 1650.0) <= shape.resolution
    assert abs(shape.peak(2500, 3500) - 3000.0) <= shape.resolution


def test_md_spectrum_is_red_shifted_from_the_harmonic_one(water_xtb, learned_water_dipole):
    """NVE at 300 K on the oracle's surface, dipoles from the learned model: the bend and
    the stretch peaks lie near the harmonic frequencies and, anharmonic, not above them
    (beyond one resolution step)."""
    water, calc = water_xtb
    model, _ = learned_water_dipole
    harmonic = harmonic_ir(water, calc, calc).frequencies  # bend, two stretches
    shape = md_spectrum(water, calc, model, trajectories=2, steps=2000, equilibration=100, seed=1)
    bend = shape.peak(1200, 1900)
    stretch = shape.peak(3200, 4000)
    assert harmonic[0] - 120 <= bend <= harmonic[0] + shape.resolution
    assert harmonic[1] - 200 <= stretch <= harmonic[2] + shape.resolution


def test_an_ensemble_of_dipole_models_gives_an_error_band(water_xtb, learned_water_dipole):
    """Two dipole models (the learned one and one trained from another seed): the
    spectrum's intensities are their mean, the spread their standard deviation."""
    water, calc = water_xtb
    first, _ = learned_water_dipole
    frames = _rattled(water, calc, 60, seed=5, labels="dipole")
    torch.manual_seed(1)
    second = DipoleModel(build_model({**BODY, "elements": [1, 8], "channels": 16})).double()
    fit_response(second, frames[:50], frames[50:], epochs=100, seed=1)
    both = harmonic_ir(water, calc, [first, second])
    one, two = harmonic_ir(water, calc, first), harmonic_ir(water, calc, second)
    np.testing.assert_allclose(both.intensities, (one.intensities + two.intensities) / 2)
    expected = np.abs(one.intensities - two.intensities) / np.sqrt(2.0)
    np.testing.assert_allclose(both.spread, expected, rtol=1e-8)
    assert (both.spread > 0).all()
    grid = np.linspace(1000.0, 4000.0, 301)
    assert both.broadened_spread(grid).shape == grid.shape
    assert "± std" in both.table()


def test_mlpot_train_fits_a_dipole_model(water_xtb, tmp_path):
    import json

    import ase.io
    import yaml
    from typer.testing import CliRunner

    from mlpot.cli.main import app

    water, calc = water_xtb
    frames = _rattled(water, calc, 40, seed=2, labels="dipole")
    ase.io.write(tmp_path / "dipoles.xyz", frames)
    config = {
        "data": {"train": "dipoles.xyz", "validation_fraction": 0.2, "test_fraction": 0.1},
        "model": {"name": "dipole", "body": {"name": "mpnn", "cutoff": 4.0, "channels": 8}},
        "training": {"epochs": 60, "batch_size": 8, "progress": False},
        "output": "run",
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml")])
    assert result.exit_code == 0, result.output
    assert "dipole" in result.output and "me·Å" in result.output
    model = load_response_model(tmp_path / "run" / "model.pt")
    assert model.kind == "dipole"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 < metrics["validation"]["dipole"]["rmse"] < 0.05  # e·Å; |μ| ≈ 0.48
    assert metrics["test"]["dipole"]["n"] == 4
    again = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml")])
    assert again.exit_code == 2 and "--resume" in again.output


@pytest.mark.parametrize(
    ("model", "extra", "words"),
    [
        ({"name": "dipole", "bogus": 1}, {}, "bogus"),
        ({"name": "dipole"}, {"ensemble": {"size": 3}}, "remove ensemble"),
        ({"name": "polarizability", "radial_basis": 0}, {}, "at least 1"),
        ({"name": "dipole", "body": {"name": "mpnn", "chanels": 8}}, {}, "chanels"),
    ],
)
def test_response_config_errors_name_the_keys(model, extra, words):
    from mlpot.training.config import parse_config

    with pytest.raises(MlpotInputError, match=words):
        parse_config({"data": {"train": "x.xyz"}, "model": model, **extra})


def test_missing_dipole_in_a_training_file_names_file_and_frame(tmp_path):
    import ase.io
    import yaml

    from mlpot.training.config import parse_config
    from mlpot.training.run import run_training

    frames = [molecule("H2O") for _ in range(6)]
    for atoms in frames[:3] + frames[4:]:
        atoms.info["dipole"] = [0.0, 0.0, 0.4]
    ase.io.write(tmp_path / "some.xyz", frames)
    raw = {
        "data": {"train": "some.xyz", "validation_fraction": 0.2},
        "model": {"name": "dipole", "body": {"name": "mpnn", "cutoff": 4.0, "channels": 8}},
        "training": {"epochs": 2, "progress": False},
        "output": "run",
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    config = parse_config(raw, base=tmp_path)
    with pytest.raises(MlpotInputError, match=r"some\.xyz, frame 3, field 'dipole'"):
        run_training(config)


def test_validation_ir_check_with_a_learned_potential_and_dipole(
    water_xtb, learned_water_dipole, tmp_path
):
    """`run_validation(..., response=dipole)` on a molecule with GFN2-xTB: the infrared
    check compares the model's harmonic IR intensities (its own Hessian and minimum, the
    learned dipole) with the oracle's, band by band; the potential learned from 120
    rattled structures in seconds has the oracle's harmonic frequencies."""
    from mlpot.training.config import parse_config
    from mlpot.training.run import run_training
    from mlpot.validation import run_validation

    water, calc = water_xtb
    dipole, _ = learned_water_dipole
    frames = _rattled(water, calc, 120, seed=3, stdev=0.06, labels="forces")
    config = parse_config(
        {
            "model": {"name": "mpnn", "cutoff": 4.0, "channels": 16},
            "training": {"epochs": 150, "batch_size": 8, "progress": False},
            "data": {"validation_fraction": 0.15},
            "fisher": {"structures": 0},
            "output": str(tmp_path / "energy"),
        }
    )
    energy = run_training(config, train=frames, log=lambda _: None).model_path
    report = run_validation(
        energy,
        oracle="xtb",
        system=water,
        checks=["infrared", "vibrations"],
        response=dipole,
        progress=False,
    )
    check = report.check("infrared")
    assert check.status in ("pass", "fail"), check.reason
    assert check.figures["bands_compared"] >= 2
    assert (check.status == "pass") == (check.figures["max_relative_error"] <= 0.2)
    assert check.status == "pass", check.figures
    # the learned potential's harmonic frequencies (its own Hessian at its own minimum)
    # within 1 % or 10 cm⁻¹ of the oracle's finite-difference ones, mode by mode
    vibrations = report.check("vibrations")
    learned, oracle = vibrations.details["model_cm1"], vibrations.details["oracle_cm1"]
    assert len(oracle) == 3
    np.testing.assert_array_less(np.abs(learned - oracle), np.maximum(0.01 * oracle, 10.0))


def test_calibrated_dipole_ensemble_from_the_cli(water_xtb, tmp_path):
    """`mlpot response --members 2`: one file with both members and the calibrated scale of
    their spread; the spectrum's spread is that scale times the members' std."""
    import ase.io
    from typer.testing import CliRunner

    from mlpot.cli.main import app
    from mlpot.models.response import ResponseEnsemble
    from mlpot.training.response import calibrate_ensemble

    water, calc = water_xtb
    frames = _rattled(water, calc, 40, seed=4, labels="dipole")
    ase.io.write(tmp_path / "dipoles.xyz", frames)
    result = CliRunner().invoke(
        app,
        ["response", str(tmp_path / "dipoles.xyz"), "-o", str(tmp_path / "ens.pt"),
         "--members", "2", "--epochs", "40"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "calibrated spread scale" in result.output
    ensemble = load_response_model(tmp_path / "ens.pt")
    assert isinstance(ensemble, ResponseEnsemble) and len(ensemble.members) == 2
    scale = float(ensemble.scale)
    assert np.isfinite(scale) and scale > 0
    # the stored scale is the calibration on the held-out structures the CLI used
    written = ase.io.read(tmp_path / "dipoles.xyz", ":")  # as the command read them
    held_out = [written[k] for k in np.random.default_rng(0).permutation(40)[:6]]
    assert calibrate_ensemble(ensemble, held_out) == pytest.approx(scale, rel=1e-9)
    spectrum = harmonic_ir(water, calc, ensemble)
    raw = harmonic_ir(water, calc, list(ensemble.members))
    np.testing.assert_allclose(spectrum.spread, scale * raw.spread, rtol=1e-6)  # xTB SCF noise
