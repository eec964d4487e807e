"""The physics conformance suite (:mod:`mlpot.testing`) applied to the long-range and
physical pair terms.

Electrostatic terms have no cutoff by design, so the three locality checks of the mixin
(isolated atom, additivity of separated atoms, switching off at the cutoff) are replaced by
their long-range counterparts; everything else (symmetries, finite-difference forces and
stress, batching, extensivity) is inherited unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from test_conformance_models import fitted

from mlpot.models.registry import build_model
from mlpot.nn.electrostatics import COULOMB_CONSTANT
from mlpot.testing import PhysicsConformance, dimer, evaluate

NA, CL, CU, AG = 11, 17, 29, 47

# Ewald to round-off (accuracy 1e-12), so exact identities such as extensivity hold to 1e-10
EXACT_EWALD = {"smearing": 1.0, "accuracy": 1e-12}
COULOMB_SPEC = {"name": "coulomb", "elements": [NA, CL], "charges": [0.8, -0.8], **EXACT_EWALD}
QEQ_SPEC = {"name": "qeq", "elements": [NA, CL], "cutoff": 4.0, "hidden": [8], **EXACT_EWALD}
BPNN_SPEC = {"name": "bpnn", "elements": [NA, CL], "cutoff": 4.0, "hidden": [8, 8]}


class LongRangeConformance(PhysicsConformance):
    """Conformance of a term without a cutoff: locality checks replaced."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_structures(self, model):
        """The default structures; a term without a cutoff gets them as for a 4 Å one."""
        return self.conformance_settings().structures(model.elements, max(model.cutoff, 4.0))

    def test_isolated_atom(self):
        """A lone atom in vacuum has no electrostatic energy and no force."""
        for z in self.case.model.elements:
            result = self.case.evaluate(Atoms([z], positions=[[1.3, -4.2, 7.7]]))
            assert abs(result.energy) < 1e-12
            assert np.abs(result.forces).max() < 1e-12

    def test_separated_atoms_are_additive(self):
        pytest.skip("long range by design: far atoms interact (see test_far_dimer)")

    def test_cutoff_smoothness(self):
        pytest.skip("long range by design: no cutoff where the energy must vanish")


class TestCoulombLongRange(LongRangeConformance):
    def make_model(self):
        return build_model(COULOMB_SPEC).double()

    def test_cutoff_smoothness_in_environment(self):
        pytest.skip("no cutoff: the kernel erf(r/√2σ)/r is smooth everywhere")

    def test_far_dimer(self):
        """Two ions of a free molecule: ε = k_e q_a q_b erf(d/√2σ)/d, even far apart."""
        for distance in (2.0, 7.5, 40.0):
            result = self.case.evaluate(dimer(NA, CL, distance, [0.3, -0.5, 0.8]))
            expected = COULOMB_CONSTANT * -0.64 * math.erf(distance / math.sqrt(2.0)) / distance
            assert result.energy == pytest.approx(expected, rel=1e-13)


class TestCoulombFull(TestCoulombLongRange):
    """The unsplit Coulomb energy (Ewald real + reciprocal space, direct for molecules)."""

    def make_model(self):
        return build_model({**COULOMB_SPEC, "range_separated": False, "cutoff": 7.0}).double()

    def test_far_dimer(self):
        for distance in (2.0, 7.5, 40.0):
            result = self.case.evaluate(dimer(NA, CL, distance, [0.3, -0.5, 0.8]))
            assert result.energy == pytest.approx(COULOMB_CONSTANT * -0.64 / distance, 1e-13)


class TestChargeEquilibration(LongRangeConformance):
    """QEq alone; its descriptor cutoff is crossed smoothly (inherited environment test)."""

    def make_model(self):
        torch.manual_seed(3)
        model = build_model(QEQ_SPEC).double()
        return fitted(model, self.make_structures(model), seed=4)

    def test_isolated_atom(self):
        """A lone neutral atom carries no charge: zero energy, zero force (to round-off)."""
        for z in self.case.model.elements:
            for atoms in (
                Atoms([z], positions=[[1.3, -4.2, 7.7]]),
                Atoms([z], positions=[[0.4, 0.9, 0.2]], cell=[9.0, 9.5, 8.7], pbc=True),
            ):
                result = self.case.evaluate(atoms)
                assert abs(result.energy) < 1e-12
                assert np.abs(result.forces).max() < 1e-12


class TestShortRangePlusQEq(TestChargeEquilibration):
    """The full model: learned short range (BPNN) + QEq long range, exact forces and stress."""

    def make_model(self):
        torch.manual_seed(5)
        model = build_model({"name": "sum", "terms": [BPNN_SPEC, QEQ_SPEC]}).double()
        return fitted(model, self.make_structures(model), seed=6)

    def test_isolated_atom(self):
        """A lone atom: the network's constant, no force."""
        network = self.case.model.terms[0]
        for z in self.case.model.elements:
            atoms = Atoms([z], positions=[[1.3, -4.2, 7.7]])
            expected = evaluate(network, atoms).energy
            result = self.case.evaluate(atoms)
            assert result.energy == pytest.approx(expected, rel=1e-12, abs=1e-12)
            assert np.abs(result.forces).max() < 1e-12


class TestZBL(PhysicsConformance):
    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        return build_model({"name": "zbl", "elements": [CU, AG], "cutoff": 3.5, "onset": 1.0})


class TestZBLCovalent(PhysicsConformance):
    """The switch of each pair scaled by its covalent-radius sum (Cu-Cu 2.64 Å, Ag-Ag
    2.90 Å; from 0.6 to 1.2 of it): the fcc neighbours at 2.6 Å, rattled, sit inside the
    switch."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        spec = {"name": "zbl", "elements": [CU, AG], "cutoff": 1.2, "onset": 0.6}
        return build_model({**spec, "covalent": True})


class TestDispersion(PhysicsConformance):
    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        spec = {
            "name": "dispersion",
            "elements": [AG, CU],
            "c6": [40.0, 25.0],
            "damping_radius": [2.5, 2.2],
            "cutoff": 5.5,
        }
        return build_model(spec).double()
