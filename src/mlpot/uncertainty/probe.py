"""Extrapolation probe: push a structure where the training set is thinnest and watch the
error against a reference calculator grow.

1. The configuration's per-atom features ``x (N, F)`` and their Jacobian with respect to
   the positions, ``J = ∂x/∂R`` (``N·F × 3N``, central differences).
2. The training distribution of the features (per element, from the domain statistics):
   principal components with variances ``λ`` (eigen-decomposition of the covariance
   ``C``). Whitening, ``W = C^(-1/2) J``, weighs every component by ``1/√λ``: the
   least-covered (smallest-variance) components count most.
3. The SVD ``W = U S Vᵀ``: ``u_1`` is the least-covered descriptor direction the atoms can
   reach (largest Mahalanobis change per unit displacement), and the pseudo-inverse maps
   it back to atoms, ``δR = W⁺ u_1 s_1 = v_1``. Its sign is the one that increases ``T²``;
   it is scaled so the largest atomic displacement is 1 Å.
4. A scan ``R + a δR`` for amplitudes ``a`` (Å): model against the reference calculator
   (energy and force errors), with the model's uncertainty and domain scores; the same scan
   along a random direction of equal size is the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from mlpot.data.graph import NUMBERS, POSITIONS, Graph, atoms_to_graph, collate, graph_to
from mlpot.errors import MlpotInputError
from mlpot.models.base import model_device
from mlpot.physics import outputs
from mlpot.uncertainty.calibration import Calibration
from mlpot.uncertainty.domain import DomainStatistics
from mlpot.uncertainty.ensemble import predict_full
from mlpot.uncertainty.features import model_features


@dataclass
class Scan:
    """Errors and scores along one direction; arrays have one entry per amplitude."""

    amplitudes: np.ndarray  # (T,) Å, largest atomic displacement
    energy_error: np.ndarray  # (T,) eV, |E_model - E_reference|
    force_rmse: np.ndarray  # (T,) eV/Å over all components
    t2_max: np.ndarray  # (T,) largest per-atom Mahalanobis T²
    d_min_max: np.ndarray  # (T,) largest per-atom d_min
    forces_std_max: np.ndarray | None = None  # (T,) eV/Å, ensembles only

    @property
    def growth(self) -> float:
        """Least-squares slope of the force RMSE against amplitude, eV/Å per Å."""
        return float(np.polyfit(self.amplitudes, self.force_rmse, 1)[0])

    def to_dict(self) -> dict:
        out = {k: v.tolist() for k, v in self.__dict__.items() if isinstance(v, np.ndarray)}
        return {**out, "growth": self.growth}


@dataclass
class ProbeResult:
    """The probe direction ``(N, 3)`` (largest atomic displacement 1 Å); the growth rate of
    the Mahalanobis distance along it (``T²`` per Å² of unit-norm displacement) and the
    median rate over the other directions; the scans along it and a random direction."""

    direction: np.ndarray
    t2_rate: float
    median_t2_rate: float
    probe: Scan
    random: Scan
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "direction": self.direction.tolist(),
            "t2_rate": self.t2_rate,
            "median_t2_rate": self.median_t2_rate,
            "probe": self.probe.to_dict(),
            "random": self.random.to_dict(),
        }


def feature_jacobian(model: torch.nn.Module, graph: Graph, *, step: float = 1e-4) -> torch.Tensor:
    """``∂x/∂R`` of the per-atom features of one structure, ``(N·F, 3N)``.

    Central differences with ``step`` Å in float64, all ``6N`` displaced copies in one
    batched evaluation of the features (truncation error ~``step²``, about 1e-8 relative):
    forward-mode autograd through the descriptors costs ~3N separate slow passes. The
    neighbour list is the one of the undisplaced structure.
    """
    if not model.n_features:
        raise MlpotInputError("the model exposes no per-atom features to probe", field="model")
    positions = graph[POSITIONS].detach().to(torch.float64)  # (N, 3)
    n = positions.shape[0]
    eye = torch.eye(3 * n, dtype=torch.float64, device=positions.device)
    shifts = step * eye.reshape(3 * n, n, 3)  # (3N, N, 3)
    displaced = torch.cat([positions + shifts, positions - shifts])  # (6N, N, 3)
    batch = collate([{**graph, POSITIONS: p} for p in displaced])
    with torch.no_grad():
        x = model.features(batch)  # (6N·N, F)
    x = x.reshape(2, 3 * n, n, -1)  # (±, 3N, N, F)
    jac = (x[0] - x[1]) / (2 * step)  # (3N, N, F)
    return jac.permute(1, 2, 0).reshape(n * jac.shape[-1], 3 * n)


def _inverse_sqrt(covariance: np.ndarray) -> np.ndarray:
    """``C^(-1/2)`` of symmetric positive definite matrices ``(..., F, F)``."""
    values, vectors = np.linalg.eigh(covariance)
    return np.einsum("...ij,...j,...kj->...ik", vectors, values**-0.5, vectors)


def least_covered_direction(
    model: torch.nn.Module, domain: DomainStatistics, atoms: Atoms
) -> tuple[np.ndarray, float, float]:
    """Displacement ``(N, 3)`` along the least-covered reachable feature direction (largest
    atomic displacement 1 Å; see module docstring), and the growth rates of ``T²`` (per Å²
    of unit-norm displacement) along it and, for comparison, the median over the
    displacement directions (the other singular vectors)."""
    graph = atoms_to_graph(atoms, model.cutoff, dtype=torch.float64, elements=model.elements)
    species = domain.species(graph[NUMBERS]).numpy()
    graph = graph_to(graph, model_device(model))
    jac = feature_jacobian(model, graph).cpu().numpy()  # (N·F, 3N)
    n_atoms, n_features = len(atoms), domain.n_features
    if np.any(species < 0):
        raise MlpotInputError("structure has elements without training statistics")
    whitening = _inverse_sqrt(domain.covariance.numpy())[species]  # (N, F, F)
    whitened = np.einsum("nfg,ngk->nfk", whitening, jac.reshape(n_atoms, n_features, -1))
    _, s, vt = np.linalg.svd(whitened.reshape(n_atoms * n_features, -1), full_matrices=False)
    direction = vt[0].reshape(n_atoms, 3)
    with torch.no_grad():
        features = model_features(model, graph).double().cpu().numpy()
        offset = features - domain.mean.numpy()[species]
    slope = np.einsum(
        "nf,nfg,ngk,k->",
        offset,
        domain.precision.numpy()[species],
        jac.reshape(n_atoms, n_features, -1),
        vt[0],
    )  # dT²/da / 2
    if slope < 0:
        direction = -direction
    rates = s**2
    direction /= np.linalg.norm(direction, axis=1).max()
    return direction, float(rates[0]), float(np.median(rates[rates > rates[0] * 1e-12]))


def scan(
    model: torch.nn.Module,
    atoms: Atoms,
    direction: np.ndarray,
    amplitudes: np.ndarray,
    reference: Calculator,
    *,
    domain: DomainStatistics | None = None,
    calibration: Calibration | None = None,
) -> Scan:
    """Model against ``reference`` at ``atoms`` displaced by ``a · direction`` for each
    amplitude ``a`` (Å), on the model's device."""
    rows, device = [], model_device(model)
    for amplitude in amplitudes:
        moved = atoms.copy()
        moved.positions = atoms.positions + amplitude * direction
        graph = atoms_to_graph(moved, model.cutoff, dtype=torch.float64, elements=model.elements)
        out = predict_full(model, graph_to(graph, device), calibration=calibration, domain=domain)
        out = {key: value.cpu() for key, value in out.items()}
        moved.calc = reference
        force_error = out[outputs.FORCES].numpy() - moved.get_forces()
        rows.append(
            (
                abs(float(out[outputs.ENERGY][0]) - moved.get_potential_energy()),
                float(np.sqrt(np.mean(force_error**2))),
                float(out[outputs.MAHALANOBIS].max()) if domain else np.nan,
                float(out[outputs.D_MIN].max()) if domain else np.nan,
                float(out[outputs.FORCES_STD].max()) if outputs.FORCES_STD in out else np.nan,
            )
        )
    columns = np.array(rows).T  # (5, T)
    return Scan(
        np.asarray(amplitudes, dtype=float),
        *columns[:4],
        forces_std_max=None if np.all(np.isnan(columns[4])) else columns[4],
    )


def probe(
    model: torch.nn.Module,
    atoms: Atoms,
    reference: Calculator,
    domain: DomainStatistics,
    *,
    calibration: Calibration | None = None,
    max_amplitude: float = 0.3,
    steps: int = 7,
    seed: int = 0,
    device: str = "cpu",
) -> ProbeResult:
    """Find the least-covered direction at ``atoms`` and scan it and a random direction up
    to ``max_amplitude`` Å against the ``reference`` calculator (an ASE calculator). The
    model is moved to float64 on the torch ``device`` and evaluated there."""
    model = model.to(device=device, dtype=torch.float64).eval()
    direction, rate, median = least_covered_direction(model, domain, atoms)
    amplitudes = np.linspace(0.0, max_amplitude, steps)
    random = np.random.default_rng(seed).normal(size=direction.shape)
    random /= np.linalg.norm(random, axis=1).max()
    kwargs = dict(domain=domain, calibration=calibration)
    return ProbeResult(
        direction=direction,
        t2_rate=rate,
        median_t2_rate=median,
        probe=scan(model, atoms, direction, amplitudes, reference, **kwargs),
        random=scan(model, atoms, random, amplitudes, reference, **kwargs),
    )
