"""The physics conformance suite (:mod:`mlpot.testing`) applied to every shipped model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from mlpot.data.graph import FORCES, atoms_to_graph
from mlpot.models.registry import build_model
from mlpot.physics.derivatives import predict
from mlpot.testing import PhysicsConformance, dimer, evaluate

CU, AG, AR = 29, 47, 18

BPNN_SPEC = {"name": "bpnn", "elements": [CU, AG], "cutoff": 4.5, "hidden": [16, 16]}
OFFSETS_SPEC = {"name": "offsets", "elements": [AG, CU], "energies": [-2.83, -3.71]}
LJ_SPEC = {"name": "lj", "elements": [AR], "sigma": 3.4, "epsilon": 0.0104, "cutoff": 8.0}


def fitted(model, structures, seed: int):
    """Fit the normalisation on the test structures, with random force labels so that the
    energy scale is not one: the model's outputs become non-trivial functions of the input.
    """
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for atoms in structures.values():
        graph = atoms_to_graph(atoms, model.cutoff)
        graph[FORCES] = 0.7 * torch.randn(len(atoms), 3, generator=generator, dtype=torch.float64)
        graphs.append(graph)
    model.fit_statistics(graphs)
    return model


class TestBehlerParrinello(PhysicsConformance):
    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(0)
        model = build_model(BPNN_SPEC).double()
        return fitted(model, self.make_structures(model), seed=1)


class TestBehlerParrinelloAngularCutoff(PhysicsConformance):
    """Angular terms on a shorter cutoff than the radial ones, other hyperparameters."""

    lattice_constant = 3.7
    rattle = 0.1
    inner_cutoffs = (3.4,)

    def make_model(self):
        torch.manual_seed(1)
        spec = {
            **BPNN_SPEC,
            "angular_cutoff": 3.4,
            "radial_count": 8,
            "angular_etas": [0.01, 0.2],
            "zetas": [1, 3],
            "lambdas": [-1, 1],
            "activation": "tanh",
        }
        model = build_model(spec).double()
        return fitted(model, self.make_structures(model), seed=3)


class TestLennardJones(PhysicsConformance):
    lattice_constant = 5.26
    rattle = 0.15

    def make_model(self):
        return build_model({**LJ_SPEC, "smooth": True}).double()


class TestLennardJonesShifted(PhysicsConformance):
    """Shifted (not switched) LJ: everything holds except force continuity at the cutoff."""

    lattice_constant = 5.26
    rattle = 0.15
    cutoff_margin = 1e-3
    continuous_forces = False

    def make_model(self):
        return build_model({**LJ_SPEC, "smooth": False}).double()

    def test_cutoff_smoothness(self):
        """By design (as ASE's): energy continuous at r_c, force jumps by -u'(r_c)."""
        model = self.case.model
        sigma, epsilon, rc = LJ_SPEC["sigma"], LJ_SPEC["epsilon"], LJ_SPEC["cutoff"]
        du = 4 * epsilon * (-12 * sigma**12 / rc**13 + 6 * sigma**6 / rc**7)
        direction = np.array([0.6, 0.2, -0.4])
        unit = direction / np.linalg.norm(direction)
        for delta in (1e-4, 1e-7):
            inside = evaluate(model, dimer(AR, AR, rc - delta, direction))
            outside = evaluate(model, dimer(AR, AR, rc + delta, direction))
            assert abs(inside.energy) <= 10 * delta * abs(du)
            assert outside.energy == 0.0 and np.all(outside.forces == 0.0)
            assert float(inside.forces[1] @ unit) == pytest.approx(-du, rel=1e-3)


class TestOffsetsPlusBehlerParrinello(PhysicsConformance):
    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(0)
        model = build_model({"name": "sum", "terms": [OFFSETS_SPEC, BPNN_SPEC]}).double()
        return fitted(model, self.make_structures(model), seed=2)

    def test_terms_add_up(self):
        """The sum equals its terms evaluated separately; a lone atom gets its offset plus
        the network's constant for an empty environment.
        """
        model = self.case.model
        offsets, network = model.terms
        for atoms in self.case.structures.values():
            # terms share the graph built with the largest cutoff (the offsets have none)
            graph = atoms_to_graph(atoms, model.cutoff)
            total, learned = predict(model, graph), predict(network, graph)
            constant = predict(offsets, graph, forces=False)
            for key in ("energy", "local_energies"):
                np.testing.assert_allclose(
                    total[key].detach(),
                    (constant[key] + learned[key]).detach(),
                    rtol=1e-12,
                    atol=1e-12,
                )
            np.testing.assert_allclose(total["forces"], learned["forces"], rtol=1e-12, atol=0)
            expected = sum({CU: -3.71, AG: -2.83}[int(z)] for z in atoms.numbers)
            assert float(constant["energy"][0]) == pytest.approx(expected, rel=1e-14)
        for z, offset in ((CU, -3.71), (AG, -2.83)):
            lone = evaluate(network, Atoms([z], positions=[[0.0, 0.0, 0.0]])).energy
            assert self.case.isolated[z] == pytest.approx(offset + lone, rel=1e-13)
