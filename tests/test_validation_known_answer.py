"""Validation checks on cases with a known answer.

The Lennard-Jones model and ASE's Lennard-Jones oracle with the same parameters are the
same potential: every check must pass with differences at round-off. Models perturbed in a
known way must fail exactly the checks that physics says they should.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.cluster import Icosahedron

from mlpot.data.graph import EDGE_INDEX, Graph, edge_vectors
from mlpot.models.lennard_jones import LennardJones
from mlpot.models.registry import build_model
from mlpot.validation import run_validation
from mlpot.validation.settings import QUICK

SIGMA, EPSILON, CUTOFF = 2.338, 0.409, 6.0  # Å, eV, Å: a copper-like LJ
LJ_MODEL = {"name": "lj", "elements": [29], "sigma": SIGMA, "epsilon": EPSILON, "cutoff": CUTOFF}
LJ_ORACLE = {"sigma": SIGMA, "epsilon": EPSILON, "rc": CUTOFF, "smooth": True}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small systems: one intra-op thread is fastest (and fair on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lj(**changes) -> LennardJones:
    return build_model({**LJ_MODEL, "smooth": True, **changes})


def validate(model, system="cu-fcc", settings=QUICK, **kwargs):
    return run_validation(
        model,
        oracle="lj",
        oracle_params=LJ_ORACLE,
        system=system,
        temperature=300.0,
        settings=settings,
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def exact_report():
    return validate(lj())


def test_identical_potential_passes_every_check(exact_report):
    statuses = {c.name: c.status for c in exact_report.checks}
    # the IR check needs a dipole model (and a molecule): skipped here, with the reason
    assert statuses.pop("infrared") == "skip"
    assert "dipole model" in exact_report.check("infrared").reason
    assert statuses == {name: "pass" for name in statuses}, [
        (c.name, c.reason, c.failed_figures()) for c in exact_report.checks
    ]
    assert len(statuses) == 10 and exact_report.passed


def test_identical_potential_differences_are_round_off(exact_report):
    f = {c.name: c.figures for c in exact_report.checks}
    assert f["errors"]["energy_rmse_meV_per_atom"] < 1e-9
    assert f["errors"]["forces_rmse_eV_per_A"] < 1e-9
    assert f["errors"]["stress_rmse_GPa"] < 1e-9
    assert f["rdf"]["rdf_distance"] < 1e-6  # same trajectory up to chaos from round-off
    assert abs(f["defects"]["vacancy_error_eV"]) < 1e-6
    assert abs(f["defects"]["interstitial_error_eV"]) < 1e-5  # relaxation tolerance
    assert abs(f["neb"]["barrier_error_eV"]) < 1e-6
    assert f["neb"]["oracle_perpendicular_force_eV_per_A"] < QUICK.get("neb_fmax", 0.03) + 0.01
    # finite-difference Hessian of the oracle against the exact one of the model
    assert f["vibrations"]["mean_relative_error"] < 1e-3
    assert f["elastic"]["max_error_GPa"] < 1e-6
    assert abs(f["eos"]["bulk_modulus_relative_error"]) < 1e-7  # the fit amplifies round-off
    assert f["dimers"]["hole_points"] == 0


def test_identical_potential_physics_is_sane(exact_report):
    f = {c.name: c.figures for c in exact_report.checks}
    # pair potential at (nearly) zero pressure: cubic, and C12 close to C44 (Cauchy)
    e = f["elastic"]
    assert e["C11_oracle_GPa"] > e["C12_oracle_GPa"] > 0 and e["C44_oracle_GPa"] > 0
    bulk_from_elastic = (e["C11_oracle_GPa"] + 2 * e["C12_oracle_GPa"]) / 3
    assert bulk_from_elastic == pytest.approx(f["eos"]["bulk_modulus_oracle_GPa"], rel=0.1)
    # fcc: first RDF peak at the nearest-neighbour distance a/√2 (thermal broadening aside)
    assert f["rdf"]["first_peak_oracle_A"] == pytest.approx(3.61 / np.sqrt(2), abs=0.1)
    # vacancy hop: a barrier exists and a vacancy costs energy
    assert f["neb"]["barrier_oracle_eV"] > 0.1 and f["defects"]["vacancy_oracle_eV"] > 0
    assert abs(f["nve"]["drift_meV_per_atom_per_ps"]) < 0.1


def test_epsilon_off_by_20_percent_fails_energetics_only():
    report = validate(lj(epsilon=1.2 * EPSILON))
    status = {c.name: c.status for c in report.checks}
    # energies scale with epsilon: errors, formation energies, barrier, stiffness all fail
    for name in ("errors", "defects", "neb", "vibrations", "elastic", "eos"):
        assert status[name] == "fail", name
    # the model's own dynamics stays fine and short range stays repulsive
    for name in ("nve", "nvt", "dimers"):
        assert status[name] == "pass", name
    f = {c.name: c.figures for c in report.checks}
    assert f["elastic"]["relative_error"] == pytest.approx(0.2, rel=1e-6)
    assert f["eos"]["bulk_modulus_relative_error"] == pytest.approx(0.2, rel=1e-6)
    assert abs(f["eos"]["volume_relative_error"]) < 1e-6  # sigma sets the volume
    # frequencies scale with sqrt(epsilon)
    assert f["vibrations"]["mean_relative_error"] == pytest.approx(np.sqrt(1.2) - 1, rel=0.01)
    assert report.check("neb").failed_figures() == ["barrier_error_eV"]


def test_sigma_off_by_5_percent_moves_structure():
    short = {**QUICK, "equilibration_steps": 50, "md_steps": 150}
    report = validate(lj(sigma=1.05 * SIGMA), checks=["rdf", "eos"], settings=short)
    f = {c.name: c.figures for c in report.checks}
    assert "volume_relative_error" in report.check("eos").failed_figures()
    # the model's minimum lies outside the sampled volumes (about 1.05³ - 1 = 16 % away):
    # extrapolated, and said so
    assert 0.1 < f["eos"]["volume_relative_error"] < 0.25
    assert "outside the volumes" in report.check("eos").details["note"]
    assert report.check("rdf").status == "fail"


class HoleyLJ(LennardJones):
    """LJ with a Gaussian well at 2.1 Å, inside the repulsive wall (the minimum is at
    2.6 Å): a hole an MD run at high temperature could fall into."""

    def forward(self, graph: Graph) -> torch.Tensor:
        r = edge_vectors(graph).norm(dim=-1)  # (E,)
        well = -5.0 * torch.exp(-(((r - 2.1) / 0.15) ** 2))  # eV per pair
        local = super().forward(graph)
        return local.index_add(0, graph[EDGE_INDEX][0], 0.5 * well)  # (N,)


def test_hole_in_the_wall_fails_dimers():
    model = HoleyLJ([29], sigma=SIGMA, epsilon=EPSILON, cutoff=CUTOFF, smooth=True)
    report = validate(model, checks=["dimers"])
    dimers = report.check("dimers")
    assert dimers.status == "fail"
    assert "hole_points" in dimers.failed_figures()
    assert dimers.figures["Cu-Cu_max_inner_slope_eV_per_A"] > 1.0  # pulls atoms together


def test_cluster_runs_molecule_checks_and_skips_crystal_ones():
    cluster = Icosahedron("Cu", 2)  # 13 atoms, free
    report = validate(lj(), system=cluster)
    status = {c.name: c.status for c in report.checks}
    for name in ("defects", "neb", "elastic", "eos"):
        assert status[name] == "skip" and "crystal" in report.check(name).reason
    for name in ("errors", "nvt", "nve", "rdf", "vibrations", "dimers"):
        assert status[name] == "pass", (name, report.check(name).reason)
    assert "stress_kT" not in report.check("errors").figures
    assert "not a 3D crystal" in report.check("errors").details["note"]
    vib = report.check("vibrations").figures
    assert vib["modes_compared"] == 3 * 13 - 6


@pytest.mark.slow
def test_identical_potential_passes_with_default_settings():
    report = run_validation(
        lj(), oracle="lj", oracle_params=LJ_ORACLE, system="cu-fcc", progress=False
    )
    assert report.passed and report.counts()["pass"] == 10


def test_delta_checkpoint_is_validated_as_baseline_plus_correction(tmp_path):
    """LJ is linear in ε: a learned LJ(0.6 ε) on an LJ(0.4 ε) baseline is the oracle LJ(ε),
    so a delta-learned checkpoint must validate at round-off (energies, forces, stress,
    and the Hessian: model autograd + baseline finite differences)."""
    from mlpot.models.checkpoint import save_model

    path = tmp_path / "delta.pt"
    baseline = {"name": "lj", "params": {**LJ_ORACLE, "epsilon": 0.4 * EPSILON}}
    save_model(path, lj(epsilon=0.6 * EPSILON), baseline=baseline)
    report = validate(path, checks=["errors", "vibrations", "elastic"])
    f = {c.name: c.figures for c in report.checks}
    assert report.passed
    assert f["errors"]["forces_rmse_eV_per_A"] < 1e-9
    assert f["errors"]["stress_rmse_GPa"] < 1e-9
    assert f["vibrations"]["mean_relative_error"] < 1e-3
    assert f["elastic"]["max_error_GPa"] < 1e-6
    # without its baseline the same correction is far off
    alone = validate(lj(epsilon=0.6 * EPSILON), checks=["errors"])
    assert {c.name: c.figures for c in alone.checks}["errors"]["forces_rmse_eV_per_A"] > 1e-3
