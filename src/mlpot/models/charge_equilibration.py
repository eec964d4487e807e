"""Charge equilibration (QEq) with environment-dependent electronegativities.

A small network per element maps the atom's normalised ACSF descriptor to an
electronegativity ``χ_i`` (eV/e) and a hardness ``J_i = softplus(·)`` (eV/e², positive).
The charges minimise, at fixed total charge ``Q`` of each structure,

    E_QEq(q) = Σ_i (χ_i q_i + ½ J_i q_i²) + ½ k_e Σ_ij q_i q_j γ_ij

where ``γ`` is the *long-range* Coulomb kernel of :mod:`mlpot.models.coulomb` (smearing
``σ``): ``γ_ij = Σ_n' erf(r_ij,n/√2σ)/r_ij,n`` over periodic images or pairs of a
molecule, plus the Gaussian self-energy ``γ_ii += √(2/π)/σ``
(:func:`~mlpot.nn.electrostatics.coulomb_matrix`). In a cell it is written as a matrix
directly from the Ewald sum, ``γ = cos W cosᵀ + sin W sinᵀ - 2πσ²/V`` with ``cos_ik =
cos(k·r_i)`` over the half sphere of wave vectors set by ``accuracy`` (one ``(n, K) @ (K,
n)`` product, whatever ``method``: a mesh would need one convolution per atom). With the
self term ``γ`` is positive semi-definite on neutral charge vectors and ``J > 0``, so the
constrained minimum is unique. It is found exactly from the linear (KKT) system

    [ J + k_e γ   1 ] [ q ]   [ -χ ]
    [ 1ᵀ          0 ] [ λ ] = [  Q ]

a dense ``O(n³)`` solve per structure (with the ``O(n² K)`` matrix: fine for the hundreds
of atoms of training sets; thousands of atoms would need an iterative solver with PME
products). The per-atom energy is
``ε_i = χ_i q_i + ½ J_i q_i² + ½ k_e q_i (γ q)_i`` at the solution. Everything (descriptor,
network, Coulomb matrix, solve) is differentiated by autograd, so forces and stress are the
exact gradients of this energy. The erfc short-range remainder of the Coulomb interaction
is not here: the learned short-range model it is added to learns it (range separation).

The total charge is ``total_charge`` (config, default neutral) or, when present, the
graph's per-structure ``"total_charge" (S,)``.
"""

from __future__ import annotations

import torch

from mlpot.data.graph import CELL, PBC, POSITIONS, Graph
from mlpot.models.arguments import (
    Activation,
    Count,
    Elements,
    Fraction,
    InterpolationNodes,
    Lambda,
    NonNegative,
    Positive,
    Real,
    SumMethod,
)
from mlpot.models.base import EnergyModel
from mlpot.models.behler_parrinello import BehlerParrinello
from mlpot.nn.electrostatics import (
    COULOMB_CONSTANT,
    coulomb_matrix,
    structure_slices,
)
from mlpot.nn.mlp import mlp
from mlpot.nn.reciprocal import LongRangeSettings

#: Optional graph key: total charge of each structure ``(S,)``, e.
TOTAL_CHARGE = "total_charge"


class ChargeEquilibration(EnergyModel):
    """QEq charges from the local environment and their electrostatic + QEq energy (eV).

    Args:
        elements: atomic numbers.
        cutoff: ACSF descriptor cutoff, Å.
        smearing: range-separation width ``σ`` of the Coulomb kernel, Å.
        total_charge: charge of every structure, e (default 0: neutral).
        radial_count, angular_etas, zetas, lambdas: ACSF settings (see
            :class:`~mlpot.nn.acsf.ACSF`).
        hidden: hidden widths of each element's network. activation: its nonlinearity.
        method, accuracy, lr_wavelength, mesh_spacing, interpolation_nodes: periodic
            summation (see :class:`~mlpot.nn.reciprocal.LongRangeSettings`; the QEq
            matrix always comes from the Ewald sphere set by ``accuracy`` or
            ``lr_wavelength``).
    """

    name = "qeq"

    def __init__(
        self,
        elements: Elements,
        cutoff: Positive = 4.5,
        smearing: Positive = 1.0,
        total_charge: Real = 0.0,
        radial_count: Count = 8,
        angular_etas: list[NonNegative] = (0.03,),
        zetas: list[Count] = (1, 2),
        lambdas: list[Lambda] = (1, -1),
        hidden: list[Count] = (16,),
        activation: Activation = "silu",
        method: SumMethod = "ewald",
        lr_wavelength: Positive | None = None,
        mesh_spacing: Positive | None = None,
        interpolation_nodes: InterpolationNodes = 5,
        accuracy: Fraction | None = None,
    ) -> None:
        super().__init__(
            elements,
            cutoff,
            smearing=float(smearing),
            total_charge=float(total_charge),
            radial_count=int(radial_count),
            angular_etas=list(angular_etas),
            zetas=list(zetas),
            lambdas=list(lambdas),
            hidden=list(hidden),
            activation=activation,
            method=method,
            lr_wavelength=lr_wavelength,
            mesh_spacing=mesh_spacing,
            interpolation_nodes=int(interpolation_nodes),
            accuracy=accuracy,
        )
        self.settings = LongRangeSettings(
            smearing, method, lr_wavelength, mesh_spacing, interpolation_nodes, accuracy
        )
        self.total_charge = float(total_charge)
        # the environment network: a Behler–Parrinello body (ACSF, per-element
        # normalisation and networks) with two outputs per atom, χ and the raw hardness
        self.environment = BehlerParrinello(
            self.elements,
            cutoff,
            radial_count=radial_count,
            angular_etas=angular_etas,
            zetas=zetas,
            lambdas=lambdas,
            hidden=hidden,
            activation=activation,
        )
        n_features = self.environment.descriptor.n_features
        self.environment.networks = torch.nn.ModuleList(
            mlp(n_features, list(hidden), 2, activation) for _ in self.elements
        )

    def fit_statistics(self, graphs: list[Graph]) -> None:
        """Per-element mean and standard deviation of the descriptors."""
        self.environment.fit_statistics(graphs)

    def electronegativity_hardness(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """``χ (N,)`` in eV/e and ``J (N,)`` in eV/e² from each atom's environment."""
        out = self.environment.element_outputs(graph)  # (N, 2)
        return out[:, 0], torch.nn.functional.softplus(out[:, 1])

    def _total_charges(self, graph: Graph) -> list[float]:
        n_structures = graph[CELL].shape[0]
        if TOTAL_CHARGE in graph:
            return [float(c) for c in graph[TOTAL_CHARGE]]
        return [self.total_charge] * n_structures

    def solve(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """Equilibrated charges ``q (N,)`` (e) and per-atom energies ``ε (N,)`` (eV)."""
        chi, hardness = self.electronegativity_hardness(graph)
        totals = self._total_charges(graph)
        charges, energies = [], []
        for s, atoms in enumerate(structure_slices(graph)):
            x = graph[POSITIONS][atoms]
            n = x.shape[0]
            gamma = coulomb_matrix(x, graph[CELL][s], graph[PBC][s].to(torch.bool), self.settings)
            gamma = 0.5 * (gamma + gamma.T)  # (n, n), symmetric to round-off
            ones = x.new_ones(n, 1)
            matrix = torch.cat(
                [
                    torch.cat([COULOMB_CONSTANT * gamma + torch.diag(hardness[atoms]), ones], 1),
                    torch.cat([ones.T, x.new_zeros(1, 1)], 1),
                ]
            )  # (n + 1, n + 1) KKT matrix
            rhs = torch.cat([-chi[atoms], x.new_tensor([totals[s]])])
            q = torch.linalg.solve(matrix, rhs)[:n]  # (n,)
            phi = COULOMB_CONSTANT * (gamma @ q)  # (n,) V, Gaussian self-energy included
            energies.append(chi[atoms] * q + 0.5 * hardness[atoms] * q * q + 0.5 * q * phi)
            charges.append(q)
        return torch.cat(charges), torch.cat(energies)

    def charges(self, graph: Graph) -> torch.Tensor:
        """Equilibrated charges ``(N,)``, e."""
        return self.solve(graph)[0]

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.solve(graph)[1]  # (N,)
