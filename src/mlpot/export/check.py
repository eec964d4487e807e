"""Does an exported model give what the eager mlpot model gives?

:func:`check_export` evaluates both on probe structures made from the model's elements (a
cluster in vacuum, the same atoms in a sheared periodic cell, a slab periodic in two
directions, and the three as one batch) and compares energy, forces, stress (3D-periodic
cells) and, for an ensemble, the energy uncertainty. The probes are random but sane: no two
atoms closer than 1.1 Å, so both evaluations stay in the range where float noise is small.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from mlpot.calculators.ase_calculator import MlpotCalculator
from mlpot.physics import outputs

#: Largest relative difference accepted between the exported and the eager model.
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}


@dataclass(frozen=True)
class Difference:
    """Largest relative difference of one quantity on one probe (relative to the largest
    magnitude of the eager values, at least 1 eV, eV/Å or eV/Å³ x 1e-3 for stress)."""

    probe: str
    quantity: str
    relative: float


def probe_structures(elements: list[int], cutoff: float, seed: int = 0) -> dict[str, Atoms]:
    """Three small structures with every element of the model (two atoms each, at least 6),
    atoms at least 1.1 Å apart and everything within one cutoff of something."""
    rng = np.random.default_rng(seed)
    numbers = [z for z in elements for _ in range(2)]
    while len(numbers) < 6:
        numbers.append(elements[len(numbers) % len(elements)])
    side = max(2.6, 1.25 * len(numbers) ** (1 / 3) * 1.4)
    positions: list[np.ndarray] = []
    while len(positions) < len(numbers):
        trial = rng.uniform(0.0, side, 3)
        if all(np.linalg.norm(trial - p) >= 1.1 for p in positions):
            positions.append(trial)
    cluster = Atoms(numbers=numbers, positions=positions)
    cluster.center(vacuum=2.0)
    length = max(side + 1.5, 0.6 * cutoff)
    cell = np.array([[length, 0.0, 0.0], [0.4 * length, length, 0.0], [0.2, -0.3, length]])
    crystal = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    crystal.wrap()
    slab = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=[True, True, False])
    return {"cluster": cluster, "sheared cell": crystal, "slab": slab}


def _eager(calc: MlpotCalculator, atoms: Atoms) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    result = {"energy": np.array(atoms.get_potential_energy()), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        result["stress"] = atoms.get_stress(voigt=False)
    if calc.model.n_members:
        result["energy_uncertainty"] = np.array(calc.get_property(outputs.ENERGY_STD, atoms))
    return result


def _exported(calc, atoms_list: list[Atoms], ensemble: bool) -> list[dict[str, np.ndarray]]:
    """Energies through ``run_model`` (batched), forces and stress by autograd as the ASE
    calculator of metatomic derives them (positions and cell strained)."""
    from metatomic.torch import ModelOutput

    requested = {"energy": ModelOutput(quantity="", unit="eV", sample_kind="system")}
    if ensemble:
        requested["energy_uncertainty"] = ModelOutput(quantity="", unit="eV", sample_kind="system")
    batch = calc.run_model(atoms_list, requested)
    results = []
    for k, atoms in enumerate(atoms_list):
        copy = atoms.copy()
        copy.calc = calc
        with warnings.catch_warnings():
            # metatomic-ase derives a stress for every structure, dividing by a zero volume
            # for a free molecule (numpy warns; that stress is never read)
            warnings.simplefilter("ignore", RuntimeWarning)
            energy = copy.get_potential_energy()
        result = {
            "energy": np.array(energy),
            "forces": copy.get_forces(),
            "batched energy": batch["energy"].block().values[k, 0].detach().cpu().numpy(),
        }
        if atoms.pbc.all():
            result["stress"] = copy.get_stress(voigt=False)
        if ensemble:
            values = batch["energy_uncertainty"].block().values
            result["energy_uncertainty"] = values[k, 0].detach().cpu().numpy()
        results.append(result)
    return results


def compare_export(eager: MlpotCalculator, exported, probes: dict[str, Atoms]) -> list[Difference]:
    """Relative differences of every quantity on every probe (batched energies included)."""
    ensemble = bool(eager.model.n_members)
    got = _exported(exported, list(probes.values()), ensemble)
    differences = []
    for (name, atoms), out in zip(probes.items(), got, strict=True):
        ref = _eager(eager, atoms)
        ref["batched energy"] = ref["energy"]
        for quantity, value in ref.items():
            floor = 1e-3 if quantity == "stress" else 1.0
            scale = max(float(np.abs(value).max()), floor)
            relative = float(np.abs(np.asarray(out[quantity]) - value).max()) / scale
            differences.append(Difference(name, quantity, relative))
    return differences
