"""How the checks run (:class:`ValidationSettings`) and what they must meet (:class:`Tolerances`).

Both are keyword-argument dataclasses, validated on construction: a config section
``validation: {settings: {...}, tolerances: {...}}`` maps one to one onto them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as validated

from mlpot.config_io import format_validation_error
from mlpot.errors import MlpotInputError


@validated(config=ConfigDict(extra="forbid"))
class ValidationSettings:
    """Lengths, steps and seeds of the checks.

    Args:
        timestep_fs: MD time step, fs (NVE and NVT).
        equilibration_steps: NVT steps discarded before sampling.
        md_steps: NVT production steps (model and oracle runs each).
        nve_steps: NVE steps, started from the end of the model's NVT run.
        sample_interval: steps between frames kept for the errors (labelled by both).
        structure_interval: steps between structures kept for the RDF.
        friction_per_fs: Langevin friction, 1/fs.
        rdf_rmax: largest distance of the RDF, Å.
        rdf_bins: RDF histogram bins.
        fmax: force threshold of relaxations, eV/Å.
        max_relax_steps: most optimiser steps per relaxation.
        neb_images: intermediate NEB images.
        neb_fmax: force threshold of the climbing-image NEB, eV/Å.
        neb_steps: most NEB optimiser steps.
        vib_delta: finite-difference displacement of the oracle Hessian, Å.
        vib_max_atoms: larger systems skip the vibrations check (6N+1 oracle calls).
        strain: strain amplitude of the stress-strain elastic constants.
        eos_strain: largest relative volume change of the equation of state.
        eos_points: volumes of the equation of state.
        dimer_points: distances on each dimer curve.
        max_temperature_factor: MD counts as unstable above this many times the target T.
        seed: seed of velocities, thermostat noise and symmetry-breaking displacements.
    """

    timestep_fs: float = Field(1.0, gt=0)
    equilibration_steps: int = Field(200, ge=0)
    md_steps: int = Field(1000, ge=10)
    nve_steps: int = Field(1000, ge=10)
    sample_interval: int = Field(20, ge=1)
    structure_interval: int = Field(5, ge=1)
    friction_per_fs: float = Field(0.02, gt=0)
    rdf_rmax: float = Field(5.0, gt=0)
    rdf_bins: int = Field(100, ge=10)
    fmax: float = Field(0.01, gt=0)
    max_relax_steps: int = Field(500, ge=1)
    neb_images: int = Field(5, ge=1)
    neb_fmax: float = Field(0.03, gt=0)
    neb_steps: int = Field(400, ge=1)
    vib_delta: float = Field(0.01, gt=0)
    vib_max_atoms: int = Field(100, ge=1)
    strain: float = Field(0.005, gt=0, lt=0.1)
    eos_strain: float = Field(0.06, gt=0, lt=0.5)
    eos_points: int = Field(7, ge=5)
    dimer_points: int = Field(60, ge=10)
    max_temperature_factor: float = Field(10.0, gt=1)
    seed: int = 0


@validated(config=ConfigDict(extra="forbid"))
class Tolerances:
    """What each check must meet. Thermal errors are set against ``kT``.

    Args:
        energy_per_atom_kT: energy RMSE per atom, in units of kT.
        forces_relative: force RMSE over the RMS oracle force; by equipartition this is the
            force error times the thermal displacement, in units of kT.
        stress_kT: stress RMSE times the volume per atom, in units of kT.
        nve_drift: |energy drift| of NVE MD, meV/atom/ps.
        nve_fluctuation: standard deviation of the NVE total energy over that of the
            kinetic energy (the integration error at this time step).
        nvt_z: mean and variance of the NVT temperature within this many standard errors of
            the canonical values ``T`` and ``2T²/(3N)``.
        rdf_distance: ∫|g_model - g_oracle| dr / ∫ g_oracle dr (where the runs are too
            short for it, the check allows twice the distance their sampling noise gives).
        defect_energy: |ΔE_f| of vacancy and interstitial, eV.
        barrier: |Δ barrier| of the NEB, eV.
        neb_smoothness: largest |Δ²E_model/B_model - Δ²E_oracle/B_oracle| along the NEB
            images (second differences of the energy profiles over their barriers).
        neb_perpendicular_force: largest oracle force perpendicular to the model's path,
            per atom, eV/Å.
        frequency_relative: mean |Δω|/ω of the vibrational frequencies.
        ir_relative: largest error of the harmonic IR intensities relative to the strongest
            band, over the bands above a tenth of it, relative to the oracle's (needs a
            dipole model: ``response``).
        elastic_relative: largest |ΔC_ij| over the largest |C_ij| of the oracle.
        bulk_modulus_relative: |ΔB|/B.
        volume_relative: |ΔV0|/V0 of the equation of state.
        dimer_wall: least height of the dimer curve at the shortest distance above the
            separated atoms, eV.
    """

    energy_per_atom_kT: float = Field(0.2, gt=0)
    forces_relative: float = Field(0.15, gt=0)
    stress_kT: float = Field(0.5, gt=0)
    nve_drift: float = Field(1.0, gt=0)
    nve_fluctuation: float = Field(0.1, gt=0)
    nvt_z: float = Field(3.0, gt=0)
    rdf_distance: float = Field(0.1, gt=0)
    defect_energy: float = Field(0.05, gt=0)
    barrier: float = Field(0.05, gt=0)
    neb_smoothness: float = Field(0.25, gt=0)
    neb_perpendicular_force: float = Field(0.15, gt=0)
    frequency_relative: float = Field(0.05, gt=0)
    ir_relative: float = Field(0.2, gt=0)
    elastic_relative: float = Field(0.1, gt=0)
    bulk_modulus_relative: float = Field(0.1, gt=0)
    volume_relative: float = Field(0.01, gt=0)
    dimer_wall: float = Field(1.0, gt=0)


#: Shorter runs for a first look (and for tests): about 0.3 ps of MD, three NEB images.
QUICK = {
    "equilibration_steps": 100,
    "md_steps": 300,
    "nve_steps": 300,
    "sample_interval": 15,
    "neb_images": 3,
    "dimer_points": 30,
    "eos_points": 5,
}


def _build(cls: type, value: Any, key: str):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise MlpotInputError(f"must be a mapping of {cls.__name__} arguments", field=key)
    try:
        return cls(**value)
    except ValidationError as err:
        problems = format_validation_error(err, prefix=key)
        raise MlpotInputError(f"invalid {key}: {problems}", field=key) from None
    except TypeError as err:
        raise MlpotInputError(f"invalid {key}: {err}", field=key) from None


def make_settings(value: ValidationSettings | dict | None) -> ValidationSettings:
    """Settings from an instance, a dict of its arguments, or defaults."""
    return _build(ValidationSettings, value, "settings")


def make_tolerances(value: Tolerances | dict | None) -> Tolerances:
    """Tolerances from an instance, a dict of its arguments, or defaults."""
    return _build(Tolerances, value, "tolerances")


def as_dict(options: ValidationSettings | Tolerances) -> dict[str, Any]:
    """The arguments that rebuild ``options``."""
    return asdict(options)
