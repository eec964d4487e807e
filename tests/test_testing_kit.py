"""The shipped conformance suite (:mod:`mlpot.testing`) on a user's own energy terms: a
correct one passes, and each kind of broken one is caught by the check made for it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mlpot.data.graph import BATCH, EDGE_INDEX, N_ATOMS, NUMBERS, edge_vectors
from mlpot.models.base import EnergyModel
from mlpot.testing import (
    CHECKS,
    ConformanceError,
    PhysicsConformance,
    check_energy_model,
)

CUTOFF = 4.0


class SmoothPair(EnergyModel):
    """A user's pair term: u(r) = A e^{-r} (1 - r/r_c)³, split between the two atoms."""

    name = "smooth_pair"

    def __init__(self) -> None:
        super().__init__([29, 47], CUTOFF)
        self.amplitude = torch.nn.Parameter(torch.tensor(3.0, dtype=torch.float64))

    def pair_energy(self, vectors: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Energy of each edge ``(E,)`` from its vector ``(E, 3)`` and length ``(E,)``."""
        return self.amplitude * torch.exp(-r) * (1.0 - r / self.cutoff) ** 3

    def forward(self, graph):
        vectors = edge_vectors(graph)  # (E, 3)
        r = vectors.norm(dim=-1)  # (E,)
        pair = torch.where(r < self.cutoff, self.pair_energy(vectors, r), torch.zeros_like(r))
        local = r.new_zeros(graph[NUMBERS].shape[0])
        return local.index_add(0, graph[EDGE_INDEX][0], 0.5 * pair)  # (N,)


class NotConservative(SmoothPair):
    """Part of the energy hides from autograd: forces are not -dE/dx."""

    def pair_energy(self, vectors, r):
        return super().pair_energy(vectors, r) * (1.0 + 0.5 * r.detach())


class NotRotationInvariant(SmoothPair):
    """The pair energy depends on the bond's direction relative to x."""

    def pair_energy(self, vectors, r):
        return super().pair_energy(vectors, r) * (1.0 + 0.3 * (vectors[:, 0] / r) ** 2)


class HardCutoff(SmoothPair):
    """Truncated without switching: energy and force jump at the cutoff."""

    def pair_energy(self, vectors, r):
        return self.amplitude * torch.exp(-r)


class NotExtensive(SmoothPair):
    """Local energies divided by the number of atoms of their structure."""

    def forward(self, graph):
        return super().forward(graph) / graph[N_ATOMS][graph[BATCH]]


def test_a_correct_term_passes_every_check():
    model = SmoothPair()
    report = check_energy_model(model)
    assert report.ok and report.passed == list(CHECKS) and not report.skipped
    assert model.amplitude.dtype == torch.float64


def test_the_model_checked_is_a_copy():
    model = SmoothPair().float()
    check_energy_model(model, checks=["rotation"])
    assert model.amplitude.dtype == torch.float32


@pytest.mark.parametrize(
    ("model", "caught_by", "passes"),
    [
        (NotConservative(), {"forces_finite_difference", "stress_finite_difference"}, "rotation"),
        (NotRotationInvariant(), {"rotation", "reflection"}, "translation"),
        (HardCutoff(), {"cutoff_smoothness", "cutoff_smoothness_in_environment"}, "rotation"),
        (NotExtensive(), {"supercell_extensivity"}, "batched_equals_single"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, EnergyModel) else None,
)
def test_a_broken_term_is_caught(model, caught_by, passes):
    checks = [*caught_by, passes]
    report = check_energy_model(model, checks=checks, raise_on_failure=False)
    assert set(report.failed) == caught_by, str(report)
    assert report.passed == [passes]
    with pytest.raises(ConformanceError, match=sorted(caught_by)[0]):
        check_energy_model(model, checks=checks)


def test_failures_name_the_structure_and_the_error():
    report = check_energy_model(NotRotationInvariant(), checks=["rotation"], raise_on_failure=False)
    message = report.failed["rotation"]
    for name in ("bulk", "small_cell", "slab", "molecule"):
        assert f"{name}: energy: max abs error" in message
    assert "FAIL rotation: bulk" in str(report)


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown check"):
        check_energy_model(SmoothPair(), skip=["rotations"])


class TestMixinOnABrokenTerm(PhysicsConformance):
    """The pytest mixin runs the same checks: its tests fail on a broken term."""

    rattle = 0.08

    def make_model(self):
        return NotRotationInvariant()

    def test_rotation(self):
        with pytest.raises(ConformanceError, match="bulk: energy: max abs error"):
            super().test_rotation()

    def test_reflection(self):
        with pytest.raises(ConformanceError):
            super().test_reflection()

    def test_momentum_conservation(self):
        """Net force zero (pairwise), but a torque on the free molecule."""
        with pytest.raises(ConformanceError, match="molecule: net torque"):
            super().test_momentum_conservation()

    def test_settings_come_from_class_attributes(self):
        assert self.case.settings.rattle == 0.08
        assert self.case.settings.lattice_constant == 3.7
        assert np.isclose(self.case.model.cutoff, CUTOFF)


def test_the_kit_does_not_need_pytest():
    code = "import sys, mlpot.testing; assert 'pytest' not in sys.modules, 'pytest imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
