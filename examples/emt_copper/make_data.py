"""Write cu.xyz: rattled, strained copper cells with and without a vacancy, labelled by EMT."""

import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

frames = []
rng = np.random.default_rng(0)
for k in range(60):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    if k % 3 == 0:
        del atoms[0]  # vacancy
    strain = np.eye(3) + rng.normal(scale=0.015, size=(3, 3))
    atoms.set_cell(atoms.cell @ (0.5 * (strain + strain.T)), scale_atoms=True)
    atoms.rattle(0.06, seed=k)
    atoms.calc = EMT()
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    atoms.calc = SinglePointCalculator(atoms, **results)
    frames.append(atoms)
ase.io.write("cu.xyz", frames)
print(f"wrote cu.xyz: {len(frames)} structures")
