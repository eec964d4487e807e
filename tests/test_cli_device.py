"""``--device`` on the commands that build or load a model outside training and
evaluation (spectrum, response, free-energy, pimd, qmml, growth, boyle, torsion-fit,
diabatic, nac): a device that is not a torch device, or one this machine lacks, is refused
with exit status 2 and a message naming ``--device`` before any work (nothing written),
and ``--device cpu`` gives the same figures as the default."""

from __future__ import annotations

import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.cluster import Octahedron
from typer.testing import CliRunner

from mlpot.cli.main import app


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small models and structures: every command given them would start real work."""
    from mlpot.apps.diabatic import ENERGIES, save_diabatic
    from mlpot.models.checkpoint import save_model, save_response_model
    from mlpot.models.diabatic import DiabaticModel
    from mlpot.models.registry import build_model
    from mlpot.models.response import DipoleModel

    d = tmp_path_factory.mktemp("device")
    torch.manual_seed(0)
    save_model(d / "cu.pt", build_model({"name": "bpnn", "elements": [29], "cutoff": 4.0}))
    lj = {"name": "lj", "elements": [18], "sigma": 3.4, "epsilon": 0.0104}
    save_model(d / "ar.pt", build_model(lj).double())
    mpnn = {"name": "mpnn", "elements": [1, 6, 8], "cutoff": 4.0, "channels": 8}
    save_model(d / "organic.pt", build_model(mpnn).double())
    save_response_model(d / "dipole.pt", DipoleModel(build_model(mpnn)).double())
    trunk = build_model({"name": "bpnn", "elements": [1], "cutoff": 4.0})
    save_diabatic(d / "diabatic.pt", DiabaticModel(trunk, 2, hidden=[8, 8]).double())

    copper = Atoms(Octahedron("Cu", 4, cutoff=1))
    copper.rattle(0.05, seed=1)
    ase.io.write(d / "cu.xyz", copper)
    Atoms("Ar2", positions=[[0, 0, 0], [3.8, 0, 0]]).write(d / "ar2.xyz")
    ase.io.write(d / "water.xyz", molecule("H2O"))
    ase.io.write(d / "ethane.xyz", molecule("C2H6"))
    rng = np.random.default_rng(0)
    waters, pairs = [], []
    for k in range(8):
        water = molecule("H2O")
        water.rattle(0.05, seed=k)
        water.info["dipole"] = rng.normal(0.0, 0.3, 3)
        waters.append(water)
        r = 0.6 + 0.1 * k
        pair = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, r]])
        pair.info[ENERGIES] = np.array([-1.0 / r, 0.5 + 0.2 * r])
        pairs.append(pair)
    ase.io.write(d / "dipoles.xyz", waters, format="extxyz")
    ase.io.write(d / "states.xyz", pairs, format="extxyz")
    return d


def _commands(d, out):
    """Each command with arguments that start real work (MD, NEB, relaxed scans, oracle
    calls, training; checked by hand: without ``--device`` each runs, or ends later in the
    random models' collapsed molecules) and write their files into ``out``."""
    return {
        "spectrum": ["spectrum", d / "organic.pt", d / "water.xyz", "--response",
                     d / "dipole.pt", "--method", "md", "--temperature", "50",
                     "--csv", out / "ir.csv"],
        "response": ["response", d / "dipoles.xyz", "-o", out / "dipole.pt", "--epochs", "5"],
        "free-energy": ["free-energy", d / "ar.pt", d / "ar2.xyz", "--cv", "distance:0,1",
                        "--from", "3.6", "--to", "4.4", "--windows", "4", "-o", out,
                        "--oracle", "lj"],
        "pimd": ["pimd", d / "ar.pt", d / "ar2.xyz", "-o", out, "--beads", "4"],
        "qmml": ["qmml", d / "cu.pt", d / "cu.xyz", "--qm-atoms", "0", "--oracle", "emt",
                 "--groups", "atoms", "--no-capping", "--steps", "100"],
        "growth": ["growth", d / "cu.pt", "--oracle", "emt", "--csv", out / "growth.csv"],
        "boyle": ["boyle", d / "ar.pt", "--bracket", "300", "500"],
        "torsion-fit": ["torsion-fit", d / "ethane.xyz", "--dihedral", "2", "0", "1", "5",
                        "--model", d / "organic.pt", "--gromacs", out / "ethane.itp"],
        "diabatic": ["diabatic", d / "states.xyz", "-o", out / "diabatic.pt"],
        "nac": ["nac", d / "diabatic.pt", d / "states.xyz", "-o", out / "nac.xyz"],
    }  # fmt: skip


COMMANDS = list(_commands(Path(), Path()))


def _invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("device", ["nonsense", "cuda:7"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_or_absent_device_is_refused_before_any_work(inputs, tmp_path, command, device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "out"
    out.mkdir()
    start = time.perf_counter()
    result = _invoke([*_commands(inputs, out)[command], "--device", device])
    elapsed = time.perf_counter() - start
    assert result.exit_code == 2, result.output
    assert "--device" in result.output and repr(device) in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert list(out.iterdir()) == []
    assert elapsed < 10.0  # imports only: MD, NEB, scans or training take far longer


@pytest.mark.parametrize("command", COMMANDS)
def test_the_help_shows_the_device_option(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0 and "--device DEVICE" in result.output


def _same_with_device_cpu(args) -> str:
    """The command's output, once without --device and once with --device cpu: equal."""
    plain = _invoke(args)
    assert plain.exit_code == 0, plain.output
    on_cpu = _invoke([*args, "--device", "cpu"])
    assert on_cpu.exit_code == 0, on_cpu.output
    assert on_cpu.output == plain.output
    return plain.output


def test_qmml_on_cpu_gives_the_same_figures(inputs):
    options = ["--r-core", "2.2", "--r-buffer", "3.4", "--groups", "atoms", "--no-capping"]
    output = _same_with_device_cpu(
        ["qmml", inputs / "cu.pt", inputs / "cu.xyz", "--qm-atoms", "0", "--oracle", "emt",
         *options]
    )  # fmt: skip
    assert "energy" in output and "ΔE_max" in output


def test_boyle_on_cpu_gives_the_same_figures(inputs):
    args = ["boyle", inputs / "ar.pt", "--points", "60", "--bracket", "300", "500"]
    output = _same_with_device_cpu([*args, "--temperatures", "300,500"])
    assert "Boyle temperature" in output and "B2 (Å³)" in output


def test_diabatic_and_nac_on_cpu_give_the_same_figures(inputs, tmp_path):
    model = tmp_path / "diabatic.pt"
    args = ["diabatic", inputs / "states.xyz", "-o", model, "--epochs", "3"]
    assert "train: energy_rmse" in _same_with_device_cpu(args)
    assert "|d_mn|" in _same_with_device_cpu(["nac", model, inputs / "states.xyz"])


def test_response_fit_on_cpu_gives_the_same_figures(inputs, tmp_path):
    args = ["response", inputs / "dipoles.xyz", "-o", tmp_path / "dipole.pt", "--epochs", "3"]
    assert "validation dipole RMSE" in _same_with_device_cpu(args)
    ensemble = [*args, "--members", "2"]
    assert "calibrated spread scale" in _same_with_device_cpu(ensemble)


def test_spectrum_on_cpu_gives_the_same_figures(inputs):
    args = ["spectrum", inputs / "organic.pt", inputs / "water.xyz", "--response"]
    args += [inputs / "dipole.pt", "--no-relax"]
    assert "cm^-1" in _same_with_device_cpu(args)
    md = [*args, "--method", "md", "--trajectories", "1", "--steps", "20"]
    assert "resolution" in _same_with_device_cpu(md)
