"""mlpot models in TorchSim: batched energies, forces and stress equal the ASE calculator's,
TorchSim's own interface checks pass, and its NVE integrator conserves energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

ts = pytest.importorskip("torch_sim")

from torch_sim.models.interface import validate_model_outputs  # noqa: E402

from mlpot.calculators.ase_calculator import MlpotCalculator  # noqa: E402
from mlpot.calculators.torchsim_model import TorchSimModel  # noqa: E402
from mlpot.errors import MlpotInputError  # noqa: E402
from mlpot.models.registry import build_model  # noqa: E402

MPNN = {"name": "mpnn", "cutoff": 4.0, "channels": 8, "layers": 2}


def _cells():
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
    crystal.rattle(0.05, seed=1)
    vacancy = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 2)
    del vacancy[3]
    vacancy.set_cell(
        vacancy.cell @ np.array([[1, 0.05, 0], [0, 1, 0], [0.02, 0, 0.98]]), scale_atoms=True
    )
    return [crystal, vacancy]


def test_batched_outputs_equal_the_ase_calculator():
    torch.manual_seed(0)
    model = build_model({**MPNN, "elements": [29]}).double()
    sim = TorchSimModel(model)
    cells = _cells()
    out = sim(ts.io.atoms_to_state(cells, torch.device("cpu"), torch.float64))
    start = 0
    for k, atoms in enumerate(cells):
        atoms = atoms.copy()
        atoms.calc = MlpotCalculator(model)
        n = len(atoms)
        assert float(out["energy"][k]) == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(
            out["forces"][start : start + n].numpy(), atoms.get_forces(), atol=1e-10
        )
        np.testing.assert_allclose(
            out["stress"][k].numpy(), atoms.get_stress(voigt=False), atol=1e-10
        )
        start += n


def test_torchsim_interface_checks_pass():
    torch.manual_seed(0)
    model = build_model({**MPNN, "elements": [14, 26]}).double()
    validate_model_outputs(TorchSimModel(model), torch.device("cpu"), torch.float64)


def test_unknown_element_is_a_clear_error():
    sim = TorchSimModel(build_model({**MPNN, "elements": [29]}).double())
    state = ts.io.atoms_to_state(
        [bulk("Si", "diamond", a=5.43)], torch.device("cpu"), torch.float64
    )
    with pytest.raises(MlpotInputError, match=r"atomic numbers \[14\]"):
        sim(state)


def test_torchsim_nve_conserves_energy_for_many_copies():
    lj = build_model(
        {
            "name": "lj",
            "elements": [29],
            "sigma": 2.3,
            "epsilon": 0.4,
            "cutoff": 5.5,
            "smooth": True,
        }
    )
    sim = TorchSimModel(lj.double())
    cells = [bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2) for _ in range(4)]
    state = ts.io.atoms_to_state(cells, torch.device("cpu"), torch.float64)
    kT = torch.tensor(300.0 * ts.units.MetalUnits.temperature, dtype=torch.float64)
    dt = torch.tensor(0.002 * ts.units.MetalUnits.time, dtype=torch.float64)
    init, update = ts.nve(model=sim, dt=dt, kT=kT, seed=3)
    state = init(state)
    totals = []
    for _ in range(100):
        state = update(state)
        kinetic = ts.calc_kinetic_energy(
            masses=state.masses, momenta=state.momenta, system_idx=state.system_idx
        )
        totals.append((state.energy + kinetic).numpy())
    totals = np.array(totals)  # (steps, systems)
    kinetic_scale = 1.5 * 32 * 300.0 * 8.617e-5  # eV: the kinetic energy of 32 atoms at 300 K
    assert np.ptp(totals, axis=0).max() < 0.01 * kinetic_scale


def test_evaluation_in_parts_equals_one_evaluation():
    torch.manual_seed(0)
    model = build_model({**MPNN, "elements": [29]}).double()
    state = ts.io.atoms_to_state(_cells() * 2, torch.device("cpu"), torch.float64)
    whole = TorchSimModel(model, max_atoms=None)(state)
    parts = TorchSimModel(model, max_atoms=20)(state)  # one system per evaluation
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(parts[key], whole[key], rtol=1e-12, atol=1e-12)
