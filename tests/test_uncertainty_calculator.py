"""The ASE calculator's uncertainty and domain outputs, from one evaluation per configuration."""

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from uncertainty_models import committee_path, data_files, one_thread, shallow_path

from mlpot.calculators import MlpotCalculator, load_calculator
from mlpot.data.graph import atoms_to_graph
from mlpot.models.checkpoint import load_model
from mlpot.models.registry import build_model
from mlpot.physics.derivatives import predict

pytestmark = pytest.mark.usefixtures("one_thread")
assert one_thread  # the fixture is used through pytestmark

UNCERTAINTY = (
    "energy_std",
    "forces_std",
    "stress_std",
    "mahalanobis",
    "d_min",
    "hull_distance",
    "in_domain",
)


def _cell():
    return ase.io.read(data_files()["calibration"], index=1)


@pytest.mark.parametrize("path", [committee_path, shallow_path], ids=["committee", "shallow"])
def test_calculator_reports_mean_spread_and_domain(path):
    atoms = _cell()
    atoms.calc = load_calculator(path())
    n = len(atoms)
    values = {name: atoms.calc.get_property(name, atoms) for name in UNCERTAINTY}
    assert values["forces_std"].shape == (n,) and np.all(values["forces_std"] > 0)
    assert values["mahalanobis"].shape == (n,) and values["d_min"].shape == (n,)
    assert values["hull_distance"].shape == (n,)
    assert values["energy_std"] > 0 and values["stress_std"] > 0
    assert isinstance(values["in_domain"], bool)
    model = load_model(path())
    mean = predict(model, atoms_to_graph(atoms, model.cutoff), forces=True, stress=True)
    np.testing.assert_allclose(atoms.get_forces(), mean["forces"].detach().numpy(), atol=1e-10)
    assert atoms.get_potential_energy() == pytest.approx(float(mean["energy"][0]), abs=1e-9)


def test_one_evaluation_of_every_member_per_configuration():
    committee = load_model(committee_path())
    calls = []
    for member in committee.members:
        member.register_forward_hook(lambda *args: calls.append(1))
    atoms = _cell()
    atoms.calc = MlpotCalculator(committee)
    atoms.get_forces()
    atoms.get_potential_energy()
    atoms.get_stress()
    atoms.calc.get_property("energy_std", atoms)
    atoms.calc.get_property("forces_std", atoms)
    assert len(calls) == len(committee.members)
    heads = []
    atoms.calc = load_calculator(shallow_path())  # with domain statistics
    last_layer = atoms.calc.model.terms[1].networks[0][-1]
    last_layer.register_forward_hook(lambda *args: heads.append(1))
    for name in ("energy", "forces", "stress", *UNCERTAINTY):
        atoms.calc.get_property(name, atoms)
    assert len(heads) == 1  # every head from one pass of the shared network


def test_molecule_has_no_stress_std():
    atoms = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]])
    atoms.calc = load_calculator(committee_path())
    assert atoms.calc.get_property("forces_std", atoms).shape == (4,)
    with pytest.raises(PropertyNotImplementedError):
        atoms.calc.get_property("stress_std", atoms)


def test_single_model_and_force_uncertainty_off():
    torch.manual_seed(0)
    single = build_model({"name": "bpnn", "elements": [29], "cutoff": 4.0}).double()
    atoms = _cell()
    atoms.calc = MlpotCalculator(single)
    assert "energy_std" not in atoms.calc.implemented_properties
    with pytest.raises(PropertyNotImplementedError):
        atoms.calc.get_property("energy_std", atoms)
    atoms.calc = load_calculator(shallow_path(), force_uncertainty=False)
    assert atoms.calc.get_property("energy_std", atoms) > 0
    with pytest.raises(PropertyNotImplementedError):
        atoms.calc.get_property("forces_std", atoms)
    atoms.calc = load_calculator(shallow_path(), domain_scores=False)
    assert atoms.calc.get_property("forces_std", atoms).shape == (len(atoms),)
    with pytest.raises(PropertyNotImplementedError):
        atoms.calc.get_property("in_domain", atoms)
