"""Derivative checks: forces and stress are the exact derivatives of the energy (against
ASE's central finite differences of the same calculator, in float64), and forces conserve
momentum."""

from __future__ import annotations

import numpy as np
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from mlpot.testing.case import ConformanceCase, assert_close, require


def check_forces_finite_difference(case: ConformanceCase) -> None:
    """F = -∂E/∂x: the calculator's forces equal central finite differences of its energy
    (:func:`ase.calculators.fd.calculate_numerical_forces`), on every structure."""
    settings = case.settings

    def one(name: str) -> None:
        atoms = case.structures[name].copy()
        atoms.calc = case.calculator
        numeric = calculate_numerical_forces(
            atoms, eps=settings.fd_displacement, force_consistent=True
        )
        analytic = case.reference[name].forces
        require(
            np.abs(analytic).max() > 1e-4,
            "forces too small (< 1e-4 eV/Å) for a meaningful check: choose other structures",
        )
        assert_close(analytic, numeric, rtol=settings.fd_rtol, what="forces vs finite differences")

    case.for_each(case.structures, one)


def check_stress_finite_difference(case: ConformanceCase) -> None:
    """σ = (1/V) ∂E/∂ε: the calculator's stress equals finite differences of its energy
    under strain, on every structure periodic in three directions."""
    settings = case.settings

    def one(name: str) -> None:
        atoms = case.structures[name].copy()
        atoms.calc = case.calculator
        numeric = calculate_numerical_stress(
            atoms, eps=settings.fd_strain, voigt=False, force_consistent=True
        )
        analytic = case.reference[name].stress
        require(
            np.abs(analytic).max() > 1e-6,
            "stress too small (< 1e-6 eV/Å³) for a meaningful check: choose other structures",
        )
        assert_close(analytic, numeric, rtol=settings.fd_rtol, what="stress vs finite differences")

    case.for_each(case.periodic(fully=True), one)


def check_momentum_conservation(case: ConformanceCase) -> None:
    """Σ F_i = 0 (translation invariance) on every structure; Σ r_i × F_i = 0 (rotation
    invariance) for a structure without periodicity."""
    rtol = case.settings.exact_rtol

    def one(name: str) -> None:
        atoms, forces = case.structures[name], case.reference[name].forces
        scale = float(np.abs(forces).max())
        assert_close(forces.sum(0), np.zeros(3), rtol=rtol, scale=scale, what="net force")
        if not atoms.pbc.any():
            centred = atoms.positions - atoms.positions.mean(0)
            torque = np.cross(centred, forces).sum(0)
            torque_scale = scale * float(np.abs(centred).max())
            assert_close(torque, np.zeros(3), rtol=rtol, scale=torque_scale, what="net torque")

    case.for_each(case.structures, one)
