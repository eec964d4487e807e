"""The i-PI driver through which i-PI asks mlpot (or any ASE calculator) for forces.

i-PI loads this file as a ``custom`` PES of an ``<ffdirect>`` force field (in the same
process, no socket): its ``<parameters>`` name a ``template`` structure file and the
``calculator`` key under which :func:`register` put an ASE calculator before the
simulation started. Energies in eV and forces in eV/Å are converted to i-PI's atomic units
by i-PI's own ASE driver, which this class extends.
"""

from __future__ import annotations

from ase.calculators.calculator import Calculator

try:  # i-PI is an extra: the module is importable without it, the driver class is not
    from ipi.pes._ase import ASEDriver
except ImportError:  # pragma: no cover - exercised only without i-PI
    ASEDriver = object

__DRIVER_NAME__ = "mlpot"
__DRIVER_CLASS__ = "MlpotDriver"

_CALCULATORS: dict[str, Calculator] = {}


def register(key: str, calculator: Calculator) -> None:
    """Make ``calculator`` available to i-PI force fields whose ``calculator`` is ``key``."""
    _CALCULATORS[key] = calculator


def unregister(key: str) -> None:
    _CALCULATORS.pop(key, None)


class MlpotDriver(ASEDriver):
    """i-PI's ASE driver with the calculator registered under ``calculator``; energy and
    forces only (no stress: the runs are at constant volume)."""

    def __init__(self, template, calculator, *args, **kwargs):
        self.calculator_key = str(calculator)
        super().__init__(template, *args, has_stress=False, **kwargs)

    def check_parameters(self):
        super().check_parameters()
        # i-PI executes this file as a module of its own: the registry is the one of the
        # imported mlpot module
        from mlpot.apps.ipi_driver import _CALCULATORS as registry

        if self.calculator_key not in registry:
            raise KeyError(f"no calculator registered under {self.calculator_key!r}")
        self.ase_calculator = registry[self.calculator_key]

    def compute(self, cell, pos):
        """One bead, or (i-PI's batched mode) all beads at once through the calculator's
        ``energies_and_forces`` (one batched model pass)."""
        if not isinstance(cell, list):
            return self.compute_structure(cell, pos)
        import numpy as np
        from ipi.utils.units import unit_to_internal

        structures = []
        for c, p in zip(cell, pos, strict=True):
            c, p = self.convert_units(c, p)
            structure = self.template_ase.copy()
            structure.positions[:] = p
            structure.cell[:] = c
            structures.append(structure)
        return [
            (
                np.float64(unit_to_internal("energy", "electronvolt", energy)),
                np.asarray(unit_to_internal("force", "ev/ang", forces), np.float64),
                np.zeros((3, 3)),
                "",
            )
            for energy, forces in self.ase_calculator.energies_and_forces(structures)
        ]

    def compute_structure(self, cell, pos):
        """Energy and forces of one bead in i-PI's units, zero virial."""
        import numpy as np
        from ase.calculators.calculator import all_changes
        from ipi.utils.units import unit_to_internal

        cell, pos = self.convert_units(cell, pos)
        structure = self.template_ase
        structure.positions[:] = pos
        structure.cell[:] = cell
        # every bead is a new structure: calculate directly, without ASE's comparison
        # of the structure with the calculator's last one
        self.ase_calculator.calculate(structure, ["energy", "forces"], all_changes)
        energy = self.ase_calculator.results["energy"]
        forces = self.ase_calculator.results["forces"]
        return (
            np.float64(unit_to_internal("energy", "electronvolt", energy)),
            np.asarray(unit_to_internal("force", "ev/ang", forces), np.float64),
            np.zeros((3, 3)),
            "",
        )
