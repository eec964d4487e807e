"""Attachment barriers on a stepped Cu(100) surface (:mod:`mlpot.apps.growth`), and the
validation module's climbing-image NEB they run on.

EMT copper is both "model" and oracle where the machinery is tested: every error must be
exactly zero, and the barriers must be those of EMT copper (hop on Cu(100) about 0.4 eV,
vacancy migration about 0.76 eV). Geometry and environment analysis are checked on the
ideal, unrelaxed sites, where the coordination is known by counting.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import LBFGS

from mlpot.apps.growth import attachment_barriers, calculator_factory
from mlpot.apps.growth_surface import (
    COORDINATION_FACTOR,
    PROCESSES,
    environment,
    growth_processes,
    stepped_surface,
)
from mlpot.errors import MlpotInputError
from mlpot.validation import climbing_image_neb

A = 3.61  # Å, EMT copper
D = A / np.sqrt(2.0)  # nearest-neighbour distance, Å
SMALL = {"size": (7, 5), "layers": 3, "fixed_layers": 1, "terrace_width": 3}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def surface():
    return stepped_surface(**SMALL)


def _env(atoms, index, surface):
    return environment(
        atoms,
        index,
        cutoff=COORDINATION_FACTOR * surface.nearest_neighbour,
        surface_atoms=surface.surface_atoms,
        layer_spacing=surface.layer_spacing,
    )


def test_stepped_surface_is_built_as_asked(surface):
    (nx, ny), w, k = surface.size, surface.terrace_width, surface.kink_length
    slab = surface.slab
    assert len(slab) == nx * ny * 3 + w * ny - k  # three full layers, the strip, the kink
    (fixed,) = slab.constraints
    assert len(fixed.index) == nx * ny  # the bottom layer
    assert np.all(slab.positions[fixed.index, 2] < slab.positions[:, 2].min() + 0.1)
    assert len(surface.surface_atoms) == nx * ny
    top = slab.positions[:, 2].max()
    assert top == pytest.approx(surface.surface_z + surface.layer_spacing)
    assert slab.cell[2, 2] - top >= 10.0 and slab.positions[:, 2].min() >= 10.0  # vacuum, Å


def test_ideal_sites_have_the_coordination_of_terrace_step_and_kink(surface):
    """Counting neighbours on fcc(100): terrace hollow 4, step foot 5, kink (the
    half-crystal position) 6, upper terrace 4 one layer higher; a step-row atom has 7."""
    ny, w, k = surface.size[1], surface.terrace_width, surface.kink_length
    low, up = surface.lower_site, surface.upper_site
    expected = {
        "terrace": (low(w + 1, ny - 2), 4, 1),
        "step foot": (low(w, ny - 2), 5, 1),
        "retreated step foot": (low(w - 1, k - 2), 5, 1),
        "kink": (low(w - 1, k - 1), 6, 1),
        "upper terrace": (up(0, ny - 2), 4, 2),
    }
    for name, (site, coordination, layer) in expected.items():
        atoms = surface.with_adatom(site)
        env = _env(atoms, len(atoms) - 1, surface)
        assert (env.coordination, env.layer) == (coordination, layer), name
        assert env.height_A == pytest.approx(layer * A / 2)
    kink_atom = surface.strip_atom(w - 1, k)  # the end of the edge row
    assert _env(surface.slab, kink_atom, surface).coordination == 6
    wide = stepped_surface()  # six rows: the edge row has a middle
    edge = wide.strip_atom(wide.terrace_width - 1, wide.size[1] - 2)
    assert _env(wide.slab, edge, wide).coordination == 7
    with pytest.raises(MlpotInputError, match="no strip atom"):
        surface.strip_atom(w, 0)


def test_environment_of_hand_built_geometries():
    """An atom above the centre of a square of four (side D) at height h: all four at
    sqrt(D²/2 + h²); the same square split across a periodic boundary counts the same."""
    h = 1.6
    square = np.array([[0, 0, 0], [D, 0, 0], [0, D, 0], [D, D, 0]]) + [1.0, 1.0, 5.0]
    above = square.mean(axis=0) + [0, 0, h]
    atoms = Atoms("Cu5", positions=[*square, above], cell=[8 * D, 8 * D, 20], pbc=(1, 1, 0))
    env = environment(atoms, 4, cutoff=1.2 * D, surface_atoms=range(4), layer_spacing=A / 2)
    assert env.coordination == 4 and env.layer == 1
    assert env.height_A == pytest.approx(h)
    atoms.positions[:, :2] -= 2.0  # across the boundary: the minimum image is used
    atoms.wrap()
    moved = environment(atoms, 4, cutoff=1.2 * D, surface_atoms=range(4), layer_spacing=A / 2)
    assert (moved.coordination, moved.layer) == (4, 1)
    assert moved.height_A == pytest.approx(h)
    atoms.positions[4, 2] += 2.0  # 3.6 Å up: no neighbour, second layer
    env = environment(atoms, 4, cutoff=1.2 * D, surface_atoms=range(4), layer_spacing=A / 2)
    assert env.coordination == 0 and env.layer == 2
    bulk_cu = bulk("Cu", "fcc", a=A, cubic=True) * (2, 2, 2)
    env = environment(bulk_cu, 0, cutoff=1.2 * D, surface_atoms=[0], layer_spacing=A / 2)
    assert env.coordination == 12 and env.height_A == 0.0  # fcc, through periodic images


def test_processes_move_the_adatom_between_neighbouring_sites(surface):
    processes = growth_processes(surface)
    assert [p.name for p in processes] == list(PROCESSES)
    for process in processes:
        moved = np.flatnonzero(
            np.linalg.norm(process.final.positions - process.initial.positions, axis=1) > 1e-9
        )
        assert process.adatom == len(surface.slab)  # the adatom is the last atom
        if process.name == "descent_exchange":  # adatom into the edge row, edge atom out
            assert sorted(moved) == sorted([process.adatom, process.final_adatom])
            step = (
                process.final.positions[process.final_adatom]
                - process.initial.positions[process.final_adatom]
            )
            assert np.linalg.norm(step) == pytest.approx(D)
        else:
            assert list(moved) == [process.adatom] == [process.final_adatom]
        for atoms in (process.initial, process.final):
            assert atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min() > 2.4
    hop = processes[0].final.positions[-1] - processes[0].initial.positions[-1]
    assert np.linalg.norm(hop) == pytest.approx(D)


@pytest.fixture(scope="module")
def emt_against_emt(surface):
    return attachment_barriers(
        EMT,
        "emt",
        surface=surface,
        processes=["terrace_hop", "kink_from_edge"],
        images=3,
        fmax=0.05,
    )


def test_emt_against_itself_has_zero_errors(emt_against_emt):
    for row in emt_against_emt.rows:
        assert row.error_eV == 0.0, row.name
        assert row.model.reaction_energy_eV == row.oracle.reaction_energy_eV
        assert row.oracle.converged and row.model.converged
        assert row.oracle.end_point_shift_A < 0.2  # the adatoms stayed on their sites
    assert emt_against_emt.max_absolute_error_eV == 0.0


def test_emt_barriers_and_environments_are_those_of_copper(emt_against_emt):
    """Adatom hop on Cu(100): EMT gives about 0.41 eV (experiment and EAM 0.35-0.5 eV),
    over the bridge site (2 neighbours, higher than the hollow); the symmetric hop has no
    reaction energy. Attachment into the kink along the step: 5 -> 6 neighbours, downhill,
    over a lower barrier than the terrace hop."""
    hop = emt_against_emt.row("terrace_hop").oracle
    assert 0.3 < hop.barrier_eV < 0.5
    assert abs(hop.reaction_energy_eV) < 0.01
    assert (hop.initial.coordination, hop.saddle.coordination, hop.final.coordination) == (4, 2, 4)
    assert hop.saddle.height_A > hop.initial.height_A + 0.1
    assert hop.initial.layer == hop.saddle.layer == hop.final.layer == 1
    kink = emt_against_emt.row("kink_from_edge").oracle
    assert (kink.initial.coordination, kink.final.coordination) == (5, 6)
    assert kink.saddle.coordination < kink.initial.coordination
    assert kink.reaction_energy_eV < -0.1
    assert 0.1 < kink.barrier_eV < hop.barrier_eV
    assert kink.energies_eV[0] == 0.0 and kink.energies_eV.max() == kink.barrier_eV


def test_tables_in_three_formats(emt_against_emt, tmp_path):
    text = emt_against_emt.table()
    assert "terrace_hop" in text and "4/2/4" in text and "max |error| 0.000 eV" in text
    markdown = emt_against_emt.table("markdown").splitlines()
    assert len(markdown) == 4 and markdown[1].startswith("| ---")
    path = emt_against_emt.write(tmp_path / "barriers.csv")
    records = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["process"] for r in records] == ["terrace_hop", "kink_from_edge"]
    assert records[1]["description"] == PROCESSES["kink_from_edge"]  # has a comma: quoted
    assert float(records[0]["error_eV"]) == 0.0 and records[1]["cn_final_oracle"] == "6"
    with pytest.raises(MlpotInputError, match="unknown format"):
        emt_against_emt.table("html")


@pytest.fixture(scope="module")
def vacancy_hop():
    """Relaxed (EMT) end points of a vacancy hop in a 31-atom copper cell."""
    from mlpot.validation.checks.neb import hop_end_points

    initial, final, _ = hop_end_points(bulk("Cu", "fcc", a=A, cubic=True) * (2, 2, 2))
    ends = []
    for atoms in (initial, final):
        atoms.calc = EMT()
        LBFGS(atoms, logfile=None).run(fmax=0.01)
        atoms.calc = None
        ends.append(atoms)
    return ends


def test_climbing_image_neb_of_a_vacancy_hop(vacancy_hop):
    """EMT copper: migration barrier about 0.76 eV (experiment 0.7-0.8 eV), symmetric path
    with the saddle in the middle; the end points given are not changed; an IDPP start
    converges to the same saddle."""
    initial, final = vacancy_hop
    before = initial.positions.copy()
    band = climbing_image_neb(initial, final, EMT, images=3, fmax=0.03)
    assert band.converged and len(band.images) == 5 and band.saddle == 2
    assert 0.65 < band.barrier < 0.85
    assert abs(band.reaction_energy) < 1e-6
    assert band.reverse_barrier == pytest.approx(band.barrier, abs=1e-6)
    assert np.array_equal(initial.positions, before) and initial.calc is None
    idpp = climbing_image_neb(initial, final, EMT, images=3, fmax=0.03, interpolation="idpp")
    assert idpp.barrier == pytest.approx(band.barrier, abs=0.01)


def test_the_neb_check_runs_the_public_neb(monkeypatch):
    """One home for NEB: the validation check's barriers are those of
    :func:`climbing_image_neb`, which it calls once for the model and once for the oracle."""
    import mlpot.validation.checks.neb as neb_check
    from mlpot.models.registry import build_model
    from mlpot.validation import run_validation
    from mlpot.validation.settings import QUICK

    calls = []

    def spy(*args, **kwargs):
        result = climbing_image_neb(*args, **kwargs)
        calls.append(result)
        return result

    monkeypatch.setattr(neb_check, "climbing_image_neb", spy)
    lj = {"name": "lj", "elements": [29], "sigma": 2.338, "cutoff": 6.0, "smooth": True}
    model = build_model({**lj, "epsilon": 0.45})  # the oracle's epsilon is 0.409 eV
    report = run_validation(
        model,
        oracle="lj",
        oracle_params={"sigma": 2.338, "epsilon": 0.409, "rc": 6.0, "smooth": True},
        system="cu-fcc",
        settings=QUICK,
        checks=["neb"],
        progress=False,
    )
    figures = report.check("neb").figures
    assert len(calls) == 2
    assert figures["barrier_model_eV"] == calls[0].barrier
    assert figures["barrier_oracle_eV"] == calls[1].barrier
    assert figures["barrier_error_eV"] == pytest.approx(calls[0].barrier - calls[1].barrier)
    ratio = figures["barrier_model_eV"] / figures["barrier_oracle_eV"]
    assert ratio == pytest.approx(0.45 / 0.409, rel=1e-3)  # LJ energies scale with epsilon


def test_a_model_file_runs_against_the_oracle(surface, tmp_path):
    """A checkpoint (a copper-like Lennard-Jones model) is loaded from its file; its
    barrier differs from EMT's and the difference is reported."""
    from mlpot.models.checkpoint import save_model
    from mlpot.models.registry import build_model

    lj = {"name": "lj", "elements": [29], "sigma": 2.338, "epsilon": 0.409, "cutoff": 6.0}
    save_model(tmp_path / "lj.pt", build_model({**lj, "smooth": True}))
    result = attachment_barriers(
        tmp_path / "lj.pt", "emt", surface=surface, processes=["terrace_hop"], fmax=0.05,
        images=3,
    )  # fmt: skip
    row = result.row("terrace_hop")
    assert row.model.converged and np.isfinite(row.model.barrier_eV)
    assert row.error_eV == pytest.approx(row.model.barrier_eV - row.oracle.barrier_eV)
    assert abs(row.error_eV) > 0.01
    assert row.model.initial.coordination == 4


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: stepped_surface(size=(6, 6), terrace_width=3), "nx - terrace_width >= 4"),
        (lambda: stepped_surface(kink_length=2), "kink_length >= 3"),
        (lambda: stepped_surface(vacuum=5.0), "vacuum >= 10"),
        (lambda: stepped_surface(layers=3, fixed_layers=3), "fixed_layers < layers"),
        (lambda: growth_processes(names=["terrace_hop", "jump"]), r"unknown or no processes"),
        (lambda: attachment_barriers("missing.pt"), "model file not found"),
        (lambda: attachment_barriers(EMT, "dft"), "unknown oracle"),
        (lambda: attachment_barriers(EMT, 3), "expected a model file"),
        (lambda: attachment_barriers(EMT, images=0), "positive"),
        (lambda: calculator_factory({"params": {}}), "expected a model file"),
        (
            lambda: environment(Atoms("Cu"), 1, cutoff=3.0, surface_atoms=[0], layer_spacing=1),
            "no atom 1",
        ),
        (
            lambda: environment(Atoms("Cu"), 0, cutoff=3.0, surface_atoms=[], layer_spacing=1),
            "surface_atoms not empty",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, words):
    with pytest.raises(MlpotInputError, match=words):
        call()


def test_bad_neb_input_is_refused(vacancy_hop):
    initial, final = vacancy_hop
    with pytest.raises(MlpotInputError, match="same atoms"):
        climbing_image_neb(initial, final[:-1], EMT)
    with pytest.raises(MlpotInputError, match="unknown interpolation"):
        climbing_image_neb(initial, final, EMT, interpolation="spline")
    with pytest.raises(MlpotInputError, match="unknown optimizer"):
        climbing_image_neb(initial, final, EMT, optimizer="sd")
    with pytest.raises(MlpotInputError, match="intermediate image"):
        climbing_image_neb(initial, final, EMT, images=0)
