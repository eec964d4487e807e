"""What every check reads: model, oracle, system, settings, and results shared between checks.

The thermal checks share two Langevin runs (one driven by the model, one by the oracle), and
the defect and NEB checks share relaxed structures; :class:`ValidationContext` computes each
once, on first use. Both Langevin runs use the same seed, so the same initial velocities and
thermostat noise: these common random numbers keep the model-oracle differences (RDF,
errors) from being swamped by sampling noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.optimize import LBFGS

from mlpot.calculators import MlpotCalculator
from mlpot.data.systems import System
from mlpot.md import MDUnstable
from mlpot.models.base import EnergyModel
from mlpot.validation.md import NVTRun, run_nvt
from mlpot.validation.oracle import Oracle
from mlpot.validation.settings import Tolerances, ValidationSettings

MODEL, ORACLE = "model", "oracle"


@dataclass
class Relaxed:
    """A relaxed structure (calculator detached) and its energy, eV."""

    atoms: Atoms
    energy: float
    converged: bool


@dataclass
class ValidationContext:
    """Inputs of the checks and their shared, lazily computed results.

    Attributes:
        model: the energy model, float64, evaluation mode.
        oracle: the reference.
        system: the structure to validate on.
        temperature_K: target temperature, K.
        settings, tolerances: see :mod:`mlpot.validation.settings`.
        progress: show progress bars of long steps.
        uncertainty_scale: calibration factor of committee standard deviations.
        baseline: oracle spec of a delta-learned model's baseline (its calculator runs it
            and adds it; see :mod:`mlpot.training.delta`), None otherwise.
        trust_code: allow a baseline that names code (``module:factory``) to run.
        device: torch device of the model (and of its calculators).
        response: a dipole model (:class:`mlpot.models.response.DipoleModel`) for the IR
            check, or None.
    """

    model: EnergyModel
    oracle: Oracle
    system: System
    temperature_K: float
    settings: ValidationSettings
    tolerances: Tolerances
    progress: bool = False
    uncertainty_scale: float = 1.0
    baseline: dict[str, Any] | None = None
    trust_code: bool = False
    device: str = "cpu"
    response: Any = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def calculator(self, which: str) -> BaseCalculator:
        """The model's ASE calculator (``"model"``) or the oracle's (``"oracle"``)."""
        if which == MODEL:
            if MODEL not in self._cache:
                self._cache[MODEL] = self._model_calculator()
            return self._cache[MODEL]
        return self.oracle.calc

    def fresh_calculator(self, which: str) -> BaseCalculator:
        """A calculator of its own for one structure among several (NEB images), so results
        stay cached per structure; a given oracle instance is shared."""
        if which == MODEL:
            return self._model_calculator()
        return self.oracle.fresh()

    def _model_calculator(self) -> MlpotCalculator:
        return MlpotCalculator(
            self.model, device=self.device, baseline=self.baseline, trust_code=self.trust_code
        )

    def baseline_calculator(self) -> BaseCalculator | None:
        """A fresh calculator of the delta-learned model's baseline (None without one)."""
        if self.baseline is None:
            return None
        from mlpot.calculators.oracles import make_oracle

        return make_oracle(
            self.baseline["name"], trust_code=self.trust_code, **self.baseline.get("params", {})
        )

    @property
    def kT(self) -> float:
        """``k_B T`` at the target temperature, eV."""
        from ase.units import kB

        return kB * self.temperature_K

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key; an unstable MD is remembered and raised again."""
        if key not in self._cache:
            try:
                self._cache[key] = compute()
            except MDUnstable as err:
                self._cache[key] = err
        value = self._cache[key]
        if isinstance(value, MDUnstable):
            raise value
        return value

    def nvt(self, which: str) -> NVTRun:
        """The Langevin run at the target temperature driven by ``which`` (cached)."""
        s = self.settings
        stress = self.system.is_crystal and (which == MODEL or self.oracle.has_stress)
        return self.cached(
            f"nvt/{which}",
            lambda: run_nvt(
                self.system.atoms,
                self.calculator(which),
                temperature_K=self.temperature_K,
                timestep_fs=s.timestep_fs,
                friction_per_fs=s.friction_per_fs,
                equilibration_steps=s.equilibration_steps,
                steps=s.md_steps,
                sample_interval=s.sample_interval,
                structure_interval=s.structure_interval,
                seed=s.seed,
                stress=stress,
                max_temperature_factor=s.max_temperature_factor,
                label=f"{which} NVT",
                progress=self.progress,
            ),
        )

    def relax(self, atoms: Atoms, which: str) -> Relaxed:
        """Relax positions (cell fixed) with ``which``'s calculator; L-BFGS to ``settings.fmax``."""
        atoms = atoms.copy()
        atoms.calc = self.calculator(which)
        optimizer = LBFGS(atoms, logfile=None)
        converged = bool(
            optimizer.run(fmax=self.settings.fmax, steps=self.settings.max_relax_steps)
        )
        energy = float(atoms.get_potential_energy())
        atoms.calc = None
        return Relaxed(atoms, energy, converged)

    def relaxed(self, key: str, atoms: Atoms, which: str) -> Relaxed:
        """:meth:`relax`, cached under ``key`` (e.g. ``vacancy``) and ``which``."""
        return self.cached(f"relaxed/{key}/{which}", lambda: self.relax(atoms, which))

    def energy(self, atoms: Atoms, which: str) -> float:
        """Potential energy of ``atoms`` with ``which``'s calculator, eV."""
        atoms = atoms.copy()
        atoms.calc = self.calculator(which)
        return float(atoms.get_potential_energy())
