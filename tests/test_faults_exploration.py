"""Faults inside one exploration trajectory end that trajectory, never the run; stops are
watched at every MD step; what tripped a stop is not labelled unless asked for.

The dynamics run on EMT copper (a real ASE calculator) with a ``forces_std`` added and
faults injected at a chosen evaluation: evaluation ``k`` is MD step ``k`` (ASE evaluates
the start once, then once per step).
"""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from mlpot.active import parse_learn_config
from mlpot.active.exploration import (
    ExploreOptions,
    Thresholds,
    run_trajectory,
    shortest_contact,
)
from mlpot.calculators.ase_calculator import MlpotCalculator
from mlpot.errors import MlpotInputError
from mlpot.models.lennard_jones import LennardJones

OPTIONS = ExploreOptions(temperatures=[300], steps=20, timestep_fs=2.0, check_interval=5)
A = 3.61  # Å, EMT copper


class FaultyEMT(EMT):
    """EMT with a per-atom ``forces_std`` and faults at chosen evaluations.

    ``std``: the force std of every atom; at evaluation ``spike_at`` atom 0's force std
    becomes ``spike_std`` and/or its force ``spike_force``; from evaluation ``raise_at`` on
    the calculation raises ``error``; from ``nan_at`` on, ``nan`` (a result name) is NaN.
    ``pull``: ``(i, j, F)``, a constant force ``F`` (eV/Å) pulling atoms ``i`` and ``j``
    together along their minimum-image vector (periodic images count).
    """

    implemented_properties = [*EMT.implemented_properties, "forces_std"]

    def __init__(
        self,
        std=0.05,
        *,
        spike_at=None,
        spike_std=None,
        spike_force=None,
        raise_at=None,
        error=None,
        nan_at=None,
        nan="forces",
        pull=None,
    ):
        super().__init__()
        self.std, self.spike_at, self.spike_std, self.spike_force = (
            std,
            spike_at,
            spike_std,
            spike_force,
        )
        self.raise_at, self.error, self.nan_at, self.nan, self.pull = (
            raise_at,
            error,
            nan_at,
            nan,
            pull,
        )
        self.calls = 0

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        call, self.calls = self.calls, self.calls + 1
        if self.raise_at is not None and call >= self.raise_at:
            raise self.error
        super().calculate(atoms, ["energy", "forces"], system_changes)
        results = self.results
        results["forces_std"] = np.full(len(self.atoms), self.std)
        if self.pull is not None:
            i, j, force = self.pull
            vector = self.atoms.get_distance(i, j, mic=True, vector=True)
            distance = np.linalg.norm(vector)
            results["energy"] += force * distance
            results["forces"][i] += force * vector / distance
            results["forces"][j] -= force * vector / distance
        if call == self.spike_at:
            if self.spike_std is not None:
                results["forces_std"][0] = self.spike_std
            if self.spike_force is not None:
                results["forces"][0] = [self.spike_force, 0.0, 0.0]
        if self.nan_at is not None and call >= self.nan_at:
            results[self.nan] = results[self.nan] * np.nan


def _cu(rattle=0.05):
    atoms = bulk("Cu", "fcc", a=A, cubic=True) * (2, 2, 2)
    atoms.rattle(rattle, seed=1)
    return atoms


def _run(calc, thresholds, options=OPTIONS, atoms=None, seed=0):
    start = _cu() if atoms is None else atoms
    return run_trajectory(start, calc, 300, options, thresholds=thresholds, seed=seed)


def test_plain_trajectory_is_unchanged():
    """No fault: every check selects, nothing stops, step 0 is never a candidate."""
    result = _run(FaultyEMT(), Thresholds(force_std=0.01, stop_force_std=0.6))
    assert result.stop_reason == "completed" and result.steps == 20
    assert [c.step for c in result.candidates] == [5, 10, 15, 20]
    assert all(c.reason == "forces_std" for c in result.candidates)
    assert result.max_force_std == pytest.approx(0.05) and not result.failed


def test_an_exception_mid_trajectory_ends_it_with_the_reason():
    error = RuntimeError("atoms overlap:\n  atoms 3 and 7 at 0.05 Å")
    calc = FaultyEMT(raise_at=8, error=error)
    result = _run(calc, Thresholds(force_std=0.01))  # every check selects
    assert result.stop_reason == "error: RuntimeError: atoms overlap: atoms 3 and 7 at 0.05 Å"
    assert result.steps == 7 and result.failed and "Traceback" in result.error
    assert [c.step for c in result.candidates] == [5]  # found before the fault: kept
    # a fault at the start itself, with a long message: one short line
    long = ValueError("SCF failed " + "x" * 500 + "\nsecond line")
    result = _run(FaultyEMT(raise_at=0, error=long), Thresholds(force_std=0.01))
    assert result.steps == 0 and not result.candidates
    assert result.stop_reason.startswith("error: ValueError: SCF failed xxx")
    assert "\n" not in result.stop_reason and len(result.stop_reason) < 200


def test_a_real_model_that_raises_on_overlapping_atoms():
    """mlpot's own calculator refuses overlapping atoms (< 0.1 Å): the trajectory ends."""
    start = Atoms("Cu3", positions=[[0, 0, 0], [0.05, 0, 0], [1.5, 2.0, 0]])
    calc = MlpotCalculator(LennardJones(elements=[29]))
    thresholds = Thresholds(force_std=0.01, min_distance_fraction=None)
    result = run_trajectory(start, calc, 300, OPTIONS, thresholds=thresholds)
    assert result.stop_reason.startswith("error: MlpotInputError:")
    assert "overlap" in result.stop_reason and not result.candidates


def test_interrupts_are_not_contained():
    calc = FaultyEMT(raise_at=3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _run(calc, Thresholds())


@pytest.mark.parametrize("name", ["forces", "forces_std", "energy"])
def test_non_finite_values_end_the_trajectory_and_are_never_labelled(name):
    calc = FaultyEMT(nan_at=7, nan=name)
    thresholds = Thresholds(force_std=0.01, label_beyond_stop=True)
    result = _run(calc, thresholds)
    assert result.stop_reason == f"non-finite {name}" and result.steps == 7 and result.failed
    assert [c.step for c in result.candidates] == [5]
    assert all(np.isfinite(c.force_std) for c in result.candidates)
    assert np.isfinite(result.max_force_std)


def test_force_std_over_the_stop_between_checks_stops_at_that_step():
    """Step 7 lies between the checks at 5 and 10: the stop is seen there, and that
    configuration (force std 10⁴ eV/Å) is not a candidate; step 6, selected and short of
    the stop, is."""
    thresholds = Thresholds(force_std=0.01, stop_force_std=0.6)
    result = _run(FaultyEMT(spike_at=7, spike_std=1e4), thresholds)
    assert result.stop_reason == "forces_std" and result.steps == 7 and not result.failed
    assert [c.step for c in result.candidates] == [5, 6]
    assert all(c.force_std < 0.6 and c.reason == "forces_std" for c in result.candidates)
    assert result.max_force_std == pytest.approx(1e4)
    # a stop right after a check or at step 1: no step is taken twice, step 0 never
    assert [c.step for c in _run(FaultyEMT(spike_at=6, spike_std=1e4), thresholds).candidates] == [
        5
    ]
    result = _run(FaultyEMT(spike_at=1, spike_std=1e4), thresholds)
    assert result.steps == 1 and not result.candidates
    # asked for: the configuration that tripped the stop is labelled, marked as such
    beyond = Thresholds(force_std=0.01, stop_force_std=0.6, label_beyond_stop=True)
    result = _run(FaultyEMT(spike_at=7, spike_std=1e4), beyond)
    assert [c.step for c in result.candidates] == [5, 6, 7]
    last = result.candidates[-1]
    assert last.reason == "beyond_stop+forces_std" and last.force_std == pytest.approx(1e4)
    assert np.isfinite(last.atoms.positions).all() and last.atoms.calc is None


def test_a_force_beyond_the_physical_bound_stops_and_is_never_labelled():
    thresholds = Thresholds(force_std=0.01, max_force=50.0, label_beyond_stop=True)
    result = _run(FaultyEMT(spike_at=7, spike_force=1e4), thresholds)
    assert result.stop_reason == "max_force" and result.steps == 7
    assert [c.step for c in result.candidates] == [5, 6]  # not 7, even though asked for


def _pair_across_the_boundary(atoms):
    """Atom 0 and a nearest neighbour seen only through the periodic boundary."""
    length = atoms.cell[0, 0]
    j = int(np.argmin(np.linalg.norm(atoms.positions - [length - A / 2, A / 2, 0], axis=1)))
    assert atoms.get_distance(0, j, mic=True) < 2.6 < atoms.get_distance(0, j)
    return j


def test_atoms_pushed_together_stop_the_trajectory():
    """A pull drives two atoms together through the periodic boundary: the trajectory
    stops once they are closer than half their covalent bond (1.32 Å for Cu–Cu)."""
    atoms = bulk("Cu", "fcc", a=A, cubic=True) * (2, 2, 2)
    j = _pair_across_the_boundary(atoms)
    options = ExploreOptions(steps=200, timestep_fs=2.0, check_interval=5, thermostat="nve")
    # without the force bound, which this pull (with EMT's repulsion) passes first
    thresholds = Thresholds(force_std=1.0, max_force=None)
    result = _run(FaultyEMT(pull=(0, j, 20.0)), thresholds, options, atoms)
    assert result.stop_reason == "min_distance" and 0 < result.steps < 200
    assert not result.candidates
    # asked for: the close configuration (finite) is labelled, marked as such
    beyond = Thresholds(force_std=1.0, max_force=None, label_beyond_stop=True)
    result = _run(FaultyEMT(pull=(0, j, 20.0)), beyond, options, atoms)
    [close] = result.candidates
    assert close.reason == "beyond_stop+min_distance" and close.step == result.steps
    assert close.atoms.get_distance(0, j, mic=True) < 0.5 * 2 * 1.32
    # with the default force bound it trips too, and no labels beyond it even if asked for
    result = _run(FaultyEMT(pull=(0, j, 20.0)), Thresholds(label_beyond_stop=True), options, atoms)
    assert "max_force" in result.stop_reason.split("+") and not result.candidates
    # a start with atoms already too close never moves
    crowded = atoms.copy()
    crowded.positions[j] = crowded.positions[0] + [-1.0, 0.3, 0.0]
    crowded.wrap()
    result = _run(FaultyEMT(), Thresholds(force_std=0.01, max_force=None), options, crowded)
    assert result.stop_reason == "min_distance" and result.steps == 0 and not result.candidates


def test_shortest_contact_scales_with_covalent_radii_and_sees_periodic_images():
    box = Atoms("Cu2", positions=[[0.1, 1, 1], [9.6, 1, 1]], cell=[10, 10, 10], pbc=True)
    ratio, i, j = shortest_contact(box, 0.5)
    assert ratio == pytest.approx(0.5 / (2 * 1.32)) and {i, j} == {0, 1}
    box.pbc = False  # now 9.5 Å apart
    assert shortest_contact(box, 0.5)[0] == np.inf
    box.pbc = [False, True, True]  # slab-like: x is not periodic
    assert shortest_contact(box, 0.5)[0] == np.inf
    # H at 0.6 Å from Cu is far inside their bond (0.31 + 1.32 Å); two H at 0.6 Å are not
    mixed = Atoms("CuHH", positions=[[0, 0, 0], [0.6, 0, 0], [0.6, 3.0, 0]])
    assert shortest_contact(mixed, 0.5)[0] == pytest.approx(0.6 / 1.63)
    assert shortest_contact(Atoms("HH", positions=[[0, 0, 0], [0.6, 0, 0]]), 0.5)[0] == np.inf
    # matches ASE's neighbour list on a strongly rattled periodic cell
    rattled = _cu(rattle=0.5)
    i, j, d = neighbor_list("ijd", rattled, 2 * 1.32)
    assert shortest_contact(rattled)[0] == pytest.approx(d.min() / (2 * 1.32))


def test_select_config_validates_the_limits():
    select = parse_learn_config(None).select
    assert select.max_force == 50.0 and select.min_distance_fraction == 0.5
    assert select.label_beyond_stop is False
    custom = {"max_force": None, "min_distance_fraction": 0.6, "label_beyond_stop": True}
    assert parse_learn_config({"select": custom}).select.label_beyond_stop
    for bad in (
        {"max_force": 0.0},
        {"max_force": -5.0},
        {"min_distance_fraction": 0.0},
        {"min_distance_fraction": 1.0},
        {"label_beyond_stops": True},
    ):
        with pytest.raises(MlpotInputError, match="select"):
            parse_learn_config({"select": bad})
