"""i-PI drives an exported mlpot model through its metatomic driver (no mlpot at run time):
the potential it sees is the eager model's, and its NVE dynamics conserves energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write

pytest.importorskip("metatomic.torch")
ipi_scripting = pytest.importorskip("ipi.scripting")

from mlpot.calculators.ase_calculator import load_calculator  # noqa: E402
from mlpot.export.export import export_model  # noqa: E402
from mlpot.models.checkpoint import save_model  # noqa: E402
from mlpot.models.registry import build_model  # noqa: E402

MPNN = {"name": "mpnn", "elements": [1, 6, 8], "cutoff": 3.5, "channels": 8, "layers": 2}


@pytest.fixture
def exported(tmp_path, monkeypatch):
    """A gentle random mpnn (energies scaled down to a few eV/Å of force) and its export."""
    monkeypatch.chdir(tmp_path)  # i-PI writes its outputs to the working directory
    torch.manual_seed(3)
    model = build_model(MPNN).double()
    model.energy_scale.fill_(0.02)
    save_model(tmp_path / "model.pt", model)
    export_model(tmp_path / "model.pt", tmp_path / "exported.pt")
    return tmp_path


def test_ipi_runs_the_exported_model_and_conserves_energy(exported):
    atoms = molecule("CH3CH2OH")
    atoms.set_cell([20.0, 20.0, 20.0])  # i-PI's cell: a box larger than the interaction range
    atoms.center()
    write(exported / "template.xyz", atoms)
    forcefield = ipi_scripting.forcefield_xml(
        "mlpot",
        mode="direct",
        pes="metatomic",
        parameters={"template": "template.xyz", "model": "exported.pt"},
    )
    motion = (
        "<motion mode='dynamics'><dynamics mode='nve'>"
        "<timestep units='femtosecond'> 0.25 </timestep></dynamics></motion>"
    )
    xml = ipi_scripting.simulation_xml(atoms, forcefield, motion, prefix="nve")
    simulation = ipi_scripting.InteractiveSimulation(xml)
    simulation.thermalize_momenta(temperature_K=300.0)

    reference = atoms.copy()
    reference.calc = load_calculator(exported / "model.pt")
    # eV (the scripting API reports ASE units); i-PI's atomic units and its conversion
    # constants (not ASE's) round positions and energies at ~1e-8 relative
    assert simulation.properties("potential") == pytest.approx(
        reference.get_potential_energy(), rel=1e-6
    )
    potential, conserved = [], []
    for _ in range(80):
        simulation.run(1)
        potential.append(simulation.properties("potential"))
        conserved.append(simulation.properties("conserved"))
    potential, conserved = np.array(potential), np.array(conserved)
    assert np.ptp(potential) > 0.05  # the atoms move on the model's surface
    assert np.ptp(conserved) < 0.02 * np.ptp(potential)
    # i-PI's last geometry gives, in the eager model, the potential i-PI reported for it
    final = simulation.get_structures()
    final.calc = reference.calc
    assert final.get_potential_energy() == pytest.approx(potential[-1], rel=1e-6)
