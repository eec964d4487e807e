"""Extrapolation probe: the least-covered direction, the scan, ``mlpot probe``."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT
from typer.testing import CliRunner
from uncertainty_models import committee_path, data_files, one_thread

from mlpot.cli.main import app
from mlpot.data.graph import atoms_to_graph
from mlpot.models.checkpoint import save_model
from mlpot.models.registry import build_model
from mlpot.uncertainty.domain import fit_domain
from mlpot.uncertainty.probe import feature_jacobian, probe, scan

pytestmark = pytest.mark.usefixtures("one_thread")
assert one_thread  # the fixture is used through pytestmark

BOND = 2.55  # Å, Cu-Cu


def _tetrahedron() -> Atoms:
    corners = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    return Atoms("Cu4", positions=corners * BOND / np.sqrt(8))


def _breathing_only_model():
    """Features fitted on Cu4 tetrahedra that only breathe (±8 %), with 3 mÅ of noise."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(200):
        atoms = _tetrahedron()
        atoms.positions *= 1 + rng.uniform(-0.08, 0.08)
        atoms.positions += rng.normal(0.0, 0.003, atoms.positions.shape)
        frames.append(atoms)
    torch.manual_seed(0)
    model = build_model({"name": "bpnn", "elements": [29], "cutoff": 4.0, "hidden": [8]})
    model = model.double()
    graphs = [atoms_to_graph(a, 4.0) for a in frames]
    model.fit_statistics(graphs)
    return model, fit_domain(model, graphs)


def test_probe_finds_the_direction_training_never_covered():
    """Training only breathed: the probe must pick a distortion, orthogonal to breathing,
    along which T² climbs far faster than along a random displacement of the same size."""
    model, domain = _breathing_only_model()
    start = _tetrahedron()
    result = probe(model, start, EMT(), domain, max_amplitude=0.1, steps=4)
    breathing = start.positions / np.linalg.norm(start.positions)
    direction = result.direction / np.linalg.norm(result.direction)
    assert abs(float(np.sum(direction * breathing))) < 0.05
    assert np.linalg.norm(result.direction, axis=1).max() == pytest.approx(1.0)
    assert result.t2_rate >= result.median_t2_rate
    assert result.probe.t2_max[-1] > 5 * result.random.t2_max[-1]
    along_breathing = scan(
        model,
        start,
        breathing / np.linalg.norm(breathing, axis=1).max(),
        result.probe.amplitudes,
        EMT(),
        domain=domain,
    )
    assert result.probe.t2_max[-1] > 20 * along_breathing.t2_max[-1]
    assert np.all(np.diff(result.probe.t2_max) > 0)
    # both scans start from the same structure: same errors there
    assert result.probe.force_rmse[0] == pytest.approx(result.random.force_rmse[0])
    assert result.probe.energy_error[0] == pytest.approx(result.random.energy_error[0])
    assert np.isfinite(result.probe.growth)


def test_feature_jacobian_matches_autograd():
    model, _ = _breathing_only_model()
    atoms = Atoms("Cu3", positions=[[0, 0, 0], [2.4, 0.1, 0], [1.1, 2.2, 0.3]])
    graph = atoms_to_graph(atoms, 4.0)
    jac = feature_jacobian(model, graph)

    def features(positions):
        return model.features({**graph, "positions": positions})

    exact = torch.autograd.functional.jacobian(features, graph["positions"])  # (N, F, N, 3)
    exact = exact.reshape(jac.shape)
    assert float((jac - exact).abs().max()) < 1e-6 * float(exact.abs().max())


def test_probe_command(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "probe",
            str(committee_path()),
            data_files()["calibration"],
            "--oracle",
            "emt",
            "--frame",
            "2",
            "--steps",
            "3",
            "--amplitude",
            "0.1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["probe"]["force_rmse"]) == 3 and len(report["direction"]) == 32
    assert report["probe"]["t2_max"][-1] > report["probe"]["t2_max"][0]
    assert len(report["probe"]["forces_std_max"]) == 3  # a committee reports its spread
    table = CliRunner().invoke(
        app, ["probe", str(committee_path()), data_files()["calibration"], "--oracle", "emt"]
    )
    assert table.exit_code == 0 and "force error growth" in table.output


def test_probe_command_bad_input(tmp_path):
    runner = CliRunner()
    structure = data_files()["calibration"]
    result = runner.invoke(app, ["probe", str(committee_path()), structure, "--oracle", "nope"])
    assert result.exit_code == 2 and "unknown oracle" in result.output
    bare = tmp_path / "bare.pt"
    save_model(bare, build_model({"name": "bpnn", "elements": [29], "cutoff": 4.0}).double())
    result = runner.invoke(app, ["probe", str(bare), structure, "--oracle", "emt"])
    assert result.exit_code == 2 and "domain" in result.output and "bare.pt" in result.output
    missing = tmp_path / "missing.xyz"
    result = runner.invoke(app, ["probe", str(committee_path()), str(missing), "--oracle", "emt"])
    assert result.exit_code == 2 and "missing.xyz" in result.output
