"""Harmonic restraints on a collective variable, and a calculator that adds one to a
potential.

W(ξ) = ½ k (ξ − ξ₀)², with k in eV/unit² (eV/Å² for distances, eV/rad² for angles), the
difference wrapped for a dihedral. :class:`Restrained` wraps any ASE calculator: its
energy and forces are the potential's plus the restraint's (so MD with it samples the
biased ensemble exactly), and its results keep the unbiased potential energy
(``unbiased_energy``), the restraint energy (``bias``), the CV value (``cv``) and the
potential's ``energy_std`` and ``member_energy`` when it gives them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from mlpot.apps.colvars import CollectiveVariable


@dataclass(frozen=True)
class HarmonicRestraint:
    """½ k (ξ − centre)² on ``cv``; ``k`` in eV per CV unit squared."""

    cv: CollectiveVariable
    centre: float
    k: float

    def energy(self, values) -> np.ndarray:
        """W at CV ``values`` (an array), eV."""
        return 0.5 * self.k * self.cv.difference(values, self.centre) ** 2

    def evaluate(self, atoms: Atoms) -> tuple[float, float, np.ndarray]:
        """(CV value, W in eV, forces −∇W in eV/Å)."""
        value, gradient = self.cv.evaluate(atoms)
        delta = float(self.cv.difference(value, self.centre))
        return value, 0.5 * self.k * delta**2, -self.k * delta * gradient

    def to_json(self, path: str | Path) -> None:
        data = asdict(self)
        data["cv"] = {"kind": self.cv.kind, "indices": list(self.cv.indices)}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def from_json(cls, path: str | Path) -> HarmonicRestraint:
        data = json.loads(Path(path).read_text())
        cv = CollectiveVariable(data["cv"]["kind"], tuple(data["cv"]["indices"]))
        return cls(cv, float(data["centre"]), float(data["k"]))


class RestraintCalculator(Calculator):
    """The restraint alone as an ASE calculator (energy and forces; e.g. a force field of
    its own in i-PI, acting on the ring-polymer centroid)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, restraint: HarmonicRestraint) -> None:
        super().__init__()
        self.restraint = restraint

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        value, energy, forces = self.restraint.evaluate(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "cv": value}


class Restrained(Calculator):
    """``potential`` plus ``restraint``: one pass of the potential per call."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, potential: Calculator, restraint: HarmonicRestraint) -> None:
        super().__init__()
        self.potential, self.restraint = potential, restraint

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        # each call is a new structure: no need for ASE's comparison with the last one
        self.potential.calculate(self.atoms, ["energy", "forces"], all_changes)
        energy = float(self.potential.results["energy"])
        forces = np.asarray(self.potential.results["forces"])
        value, bias, bias_forces = self.restraint.evaluate(self.atoms)
        self.results = {
            "energy": energy + bias,
            "free_energy": energy + bias,
            "forces": forces + bias_forces,
            "unbiased_energy": energy,
            "bias": bias,
            "cv": value,
        }
        std = self.potential.results.get("energy_std")
        if std is not None:
            self.results["energy_std"] = float(std)
        if "member_energy" in self.potential.results:
            self.results["member_energy"] = np.asarray(self.potential.results["member_energy"])
