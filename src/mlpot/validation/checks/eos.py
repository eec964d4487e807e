"""Equation of state: equilibrium volume and bulk modulus by ASE's Birch-Murnaghan fit.

The cell of the system is scaled isotropically over ``±eos_strain`` in volume; energies of
the model and of the oracle on the same structures are fitted with
:class:`ase.eos.EquationOfState`.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase.eos import EquationOfState
from ase.units import GPa

from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "eos"


def run(ctx: ValidationContext) -> CheckResult:
    s, tol = ctx.settings, ctx.tolerances
    reference = ctx.system.atoms
    n_atoms = len(reference)
    factors = np.linspace(1.0 - s.eos_strain, 1.0 + s.eos_strain, s.eos_points)
    structures = []
    for factor in factors:
        atoms = reference.copy()
        atoms.set_cell(reference.cell.array * factor ** (1.0 / 3.0), scale_atoms=True)
        structures.append(atoms)
    volumes = np.array([a.get_volume() for a in structures])
    fits, energies, notes = {}, {}, []
    for which in (MODEL, ORACLE):
        energies[which] = np.array([ctx.energy(a, which) for a in structures])
        eos = EquationOfState(volumes, energies[which], eos="birchmurnaghan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ASE warns of a minimum outside the volumes
            fits[which] = eos.fit()  # (V0 Å³, E0 eV, B eV/Å³)
        if not volumes.min() <= fits[which][0] <= volumes.max():
            notes.append(f"the {which}'s minimum lies outside the volumes (extrapolated fit)")
    (v_m, e_m, b_m), (v_o, e_o, b_o) = fits[MODEL], fits[ORACLE]
    figures = {
        "bulk_modulus_model_GPa": b_m / GPa,
        "bulk_modulus_oracle_GPa": b_o / GPa,
        "bulk_modulus_relative_error": (b_m - b_o) / b_o,
        "volume_model_A3_per_atom": v_m / n_atoms,
        "volume_oracle_A3_per_atom": v_o / n_atoms,
        "volume_relative_error": (v_m - v_o) / v_o,
        "energy_min_model_eV_per_atom": e_m / n_atoms,
        "energy_min_oracle_eV_per_atom": e_o / n_atoms,
    }
    tb, tv = tol.bulk_modulus_relative, tol.volume_relative
    tolerance = {
        "bulk_modulus_relative_error": Bound(tb, -tb),
        "volume_relative_error": Bound(tv, -tv),
    }
    details = {
        "volume_A3_per_atom": volumes / n_atoms,
        "energy_model_eV_per_atom": energies[MODEL] / n_atoms,
        "energy_oracle_eV_per_atom": energies[ORACLE] / n_atoms,
    }
    if notes:
        details["note"] = "; ".join(notes)
    return judged(NAME, figures, tolerance, details)
