"""The model's Hessian by automatic differentiation, and harmonic frequencies.

Forces come from :func:`mlpot.physics.derivatives.predict` (with ``create_graph=True``) on
a wrapper that adds a displacement ``u`` to the positions; the Hessian is
``H = d²E/dx² = -dF/du``, one backward pass per row, or all rows at once when the model
supports batched gradients. A model containing a module without second derivatives in the
positions (a module with ``second_derivatives = False``: featomic's SOAP) gets central
differences of its exact forces instead, since autograd would silently drop those terms.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.vibrations import Vibrations, VibrationsData

from mlpot.data.graph import POSITIONS, Graph, atoms_to_graph, graph_to
from mlpot.models.base import EnergyModel, model_device
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict


class _Displaced(torch.nn.Module):
    """``model`` evaluated at positions ``x + u``, with ``u`` ``(N, 3)`` Å requiring grad."""

    def __init__(self, model: EnergyModel, displacement: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.displacement = displacement

    def forward(self, graph: Graph) -> torch.Tensor:
        graph = dict(graph)
        graph[POSITIONS] = graph[POSITIONS] + self.displacement
        return self.model(graph)


def has_second_derivatives(model: torch.nn.Module) -> bool:
    """Whether autograd gives the model's second derivatives in the positions: False when
    a submodule declares ``second_derivatives = False``."""
    return all(getattr(module, "second_derivatives", True) for module in model.modules())


def model_hessian(model: EnergyModel, atoms: Atoms, *, delta: float = 1e-3) -> np.ndarray:
    """Hessian ``(3N, 3N)`` eV/Å² of the model at ``atoms`` (float64, symmetrised),
    computed on the model's device: by autograd, or by central differences (``delta`` Å,
    error ``O(delta²)``) of the model's exact forces where autograd has no second
    derivatives (:func:`has_second_derivatives`)."""
    device = model_device(model)
    if not has_second_derivatives(model):
        return _force_differences(model, atoms, delta, device)
    graph = atoms_to_graph(atoms, model.cutoff, dtype=torch.float64, elements=model.elements)
    graph = graph_to(graph, device)
    n = 3 * len(atoms)
    displacement = torch.zeros(
        (len(atoms), 3), dtype=torch.float64, device=device, requires_grad=True
    )
    out = predict(_Displaced(model, displacement), graph, forces=True, create_graph=True)
    forces = out[outputs.FORCES].reshape(-1)  # (3N,)
    eye = torch.eye(n, dtype=torch.float64, device=device)
    try:
        (rows,) = torch.autograd.grad(
            forces, displacement, eye, retain_graph=True, is_grads_batched=True
        )
    except RuntimeError:  # an operation without a batching rule: one row at a time
        rows = torch.stack(
            [torch.autograd.grad(forces[k], displacement, retain_graph=True)[0] for k in range(n)]
        )
    hessian = -rows.reshape(n, n).detach().cpu().numpy()
    return 0.5 * (hessian + hessian.T)


def _force_differences(model: EnergyModel, atoms: Atoms, delta: float, device) -> np.ndarray:
    """``-(F(x + δe_j) − F(x − δe_j)) / 2δ`` row by row, symmetrised."""

    def forces(moved: Atoms) -> np.ndarray:
        graph = atoms_to_graph(moved, model.cutoff, dtype=torch.float64, elements=model.elements)
        out = predict(model, graph_to(graph, device), forces=True)
        return out[outputs.FORCES].detach().cpu().numpy().reshape(-1)

    n = 3 * len(atoms)
    hessian = np.empty((n, n))
    for j in range(n):
        pair = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[j // 3, j % 3] += sign * delta
            pair.append(forces(moved))
        hessian[j] = -(pair[0] - pair[1]) / (2.0 * delta)
    return 0.5 * (hessian + hessian.T)


def signed_frequencies(data: VibrationsData) -> np.ndarray:
    """Frequencies in cm⁻¹, imaginary ones as negative numbers, ``(3N,)`` sorted by value."""
    complex_freq = data.get_frequencies()
    real = np.where(np.abs(complex_freq.imag) > 0, -np.abs(complex_freq.imag), complex_freq.real)
    return np.sort(real)


def rigid_modes(atoms: Atoms) -> int:
    """Zero modes: 3 translations for periodic structures; 3 + 2 or 3 rotations otherwise."""
    if atoms.pbc.any() or len(atoms) == 1:
        return 3
    positions = atoms.positions - atoms.get_center_of_mass()
    moments = np.linalg.svd(positions, compute_uv=False)
    linear = len(atoms) == 2 or moments[1] < 1e-3 * moments[0]
    return 5 if linear else 6


def vibrational_frequencies(data: VibrationsData, atoms: Atoms) -> np.ndarray:
    """Sorted frequencies (cm⁻¹, imaginary negative) without the rigid-body modes."""
    freq = signed_frequencies(data)
    drop = np.argsort(np.abs(freq))[: rigid_modes(atoms)]
    return np.sort(np.delete(freq, drop))


def finite_difference_hessian(atoms: Atoms, calc, delta: float) -> np.ndarray:
    """``(3N, 3N)`` Hessian, eV/Å², from ASE's central differences of ``calc``'s forces."""
    atoms = atoms.copy()
    atoms.calc = calc
    with tempfile.TemporaryDirectory(prefix="mlpot-vib-") as tmp:
        vib = Vibrations(atoms, name=str(Path(tmp) / "vib"), delta=delta)
        vib.run()
        return vib.get_vibrations().get_hessian_2d()
