"""Training a multi-state (diabatic) model on adiabatic labels: energies, optionally the
forces on every state and nonadiabatic coupling vectors (compared up to sign per structure,
``nac_phase="structure"``, or with consistent signs, ``"global"``). See
:mod:`mlpot.apps.diabatic` for the model's outputs, the labels and the phase convention."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from mlpot.apps.diabatic import (
    NAC_PHASES,
    StateLabels,
    predict_adiabatic,
    read_labels,
    structure_graph,
)
from mlpot.data.graph import BATCH, N_ATOMS, NUMBERS, POSITIONS, Graph, collate, graph_to
from mlpot.errors import MlpotInputError
from mlpot.models.base import model_device, model_dtype
from mlpot.models.diabatic import DiabaticModel


@dataclass(frozen=True)
class DiabaticFit:
    """What :func:`fit_diabatic` did.

    Attributes:
        epochs: epochs run.
        loss: the last epoch's mean training loss (dimensionless).
        train: training-set errors: ``energy_rmse`` eV and, where labelled, ``force_rmse``
            eV/Å and ``nac_rmse`` 1/Å (coupling vectors compared up to their sign).
        validation: the same on the validation set, or None.
    """

    epochs: int
    loss: float
    train: dict[str, float]
    validation: dict[str, float] | None


@dataclass(frozen=True)
class _Batch:
    """Collated graphs and labels (``B`` structures, ``N`` atoms, ``Q`` pairs ``m < n``);
    unlabelled entries are zeros with a False mask."""

    graph: Graph
    energies: torch.Tensor  # (B, n) eV
    forces: torch.Tensor  # (n, N, 3) eV/Å
    force_mask: torch.Tensor  # (N,) bool
    couplings: torch.Tensor  # (Q, N, 3) eV/Å: (E_n - E_m) d_mn
    coupling_mask: torch.Tensor  # (Q, B) bool


def _pairs(n_states: int) -> list[tuple[int, int]]:
    """The pairs ``m < n`` in order."""
    return [(m, n) for m in range(n_states) for n in range(m + 1, n_states)]


def _coupling_labels(label: StateLabels, n_atoms: int, pairs) -> tuple[np.ndarray, np.ndarray]:
    """``(E_n - E_m) d_mn`` ``(Q, N, 3)`` eV/Å of one structure, and which pairs have it."""
    out = np.zeros((len(pairs), n_atoms, 3))
    for q, (m, n) in enumerate(pairs):
        if (m, n) in label.nac:
            out[q] = label.nac[(m, n)] * (label.energies[n] - label.energies[m])
    return out, np.array([pair in label.nac for pair in pairs])


def _batch(
    graphs: list[Graph],
    labels: list[StateLabels],
    n_states: int,
    min_gap: float = 0.0,
    device: torch.device | str = "cpu",
) -> _Batch:
    """Collate graphs and their labels, on ``device``; forces and couplings of structures
    with a labelled gap below ``min_gap`` (eV) are left out (masked)."""
    graph = collate(graphs)
    dtype, pairs = graph[POSITIONS].dtype, _pairs(n_states)
    forces, force_mask, couplings, coupling_mask = [], [], [], []
    for g, label in zip(graphs, labels, strict=True):
        n_atoms = g[POSITIONS].shape[0]
        separated = bool(np.all(np.diff(label.energies) >= min_gap))
        known = label.forces is not None and separated
        forces.append(
            label.forces if label.forces is not None else np.zeros((n_states, n_atoms, 3))
        )
        force_mask.append(np.full(n_atoms, known))
        values, mask = _coupling_labels(label, n_atoms, pairs)
        couplings.append(values)
        coupling_mask.append(mask & separated)
    return _Batch(
        graph_to(graph, device),
        torch.as_tensor(np.stack([lab.energies for lab in labels]), dtype=dtype, device=device),
        torch.as_tensor(np.concatenate(forces, axis=1), dtype=dtype, device=device),
        torch.as_tensor(np.concatenate(force_mask), device=device),
        torch.as_tensor(np.concatenate(couplings, axis=1), dtype=dtype, device=device),
        torch.as_tensor(np.stack(coupling_mask, axis=1), device=device),
    )


@dataclass(frozen=True)
class _Scales:
    """Label spreads that make the loss terms dimensionless (eV, eV/Å, eV/Å)."""

    energy: float
    force: float
    coupling: float


def _scales(batch: _Batch, model: DiabaticModel) -> _Scales:
    """RMS spreads of the labels (1 where a kind of label is absent); the energies' about
    the model's per-state, per-element offsets (so composition does not count)."""

    def rms(values: torch.Tensor) -> float:
        value = float(values.pow(2).mean().sqrt()) if values.numel() else 0.0
        return value if value > 1e-12 else 1.0

    graph = batch.graph
    offsets = model.state_shift[model.species(graph[NUMBERS])].to(batch.energies.dtype)  # (N, n)
    baseline = torch.zeros_like(batch.energies).index_add(0, graph[BATCH], offsets)  # (B, n)
    coupled = batch.coupling_mask[:, graph[BATCH]]  # (Q, N)
    return _Scales(
        rms(batch.energies - baseline),
        rms(batch.forces[:, batch.force_mask]),
        rms(batch.couplings[coupled]),
    )


def _phase_free_errors(
    predicted: torch.Tensor, label: torch.Tensor, batch: _Batch, mask: torch.Tensor, phase: str
) -> torch.Tensor:
    """Squared errors ``(Q, B)`` of coupling vectors ``(Q, N, 3)`` per pair and structure,
    against ``+label`` or ``-label``, whichever fits better: per structure (``phase =
    "structure"``: labels of unrelated phases) or once per pair over the structures in
    ``mask (Q, B)`` (``"global"``: labels with consistent phases)."""
    atoms, n_structures = batch.graph[BATCH], batch.energies.shape[0]

    def per_structure(values: torch.Tensor) -> torch.Tensor:  # (Q, N, 3) -> (Q, B)
        summed = values.pow(2).sum(-1)  # (Q, N)
        return summed.new_zeros(summed.shape[0], n_structures).index_add(1, atoms, summed)

    minus, plus = per_structure(predicted - label), per_structure(predicted + label)
    if phase == "structure":
        return torch.minimum(minus, plus)
    zero = torch.zeros_like(minus)
    flip = torch.where(mask, plus, zero).sum(1) < torch.where(mask, minus, zero).sum(1)  # (Q,)
    return torch.where(flip[:, None], plus, minus)


def _loss(model, batch: _Batch, scales: _Scales, weights: tuple[float, float, float], phase: str):
    """Weighted, dimensionless loss of one batch (energies, forces, coupling vectors)."""
    w_energy, w_force, w_nac = weights
    use_forces = w_force > 0 and bool(batch.force_mask.any())
    use_nac = w_nac > 0 and bool(batch.coupling_mask.any())
    prediction = predict_adiabatic(
        model, batch.graph, forces=use_forces or use_nac, nac=False, create_graph=True
    )
    loss = w_energy * (prediction.energies - batch.energies).pow(2).mean() / scales.energy**2
    if use_forces:
        error = (prediction.forces - batch.forces)[:, batch.force_mask]
        loss = loss + w_force * error.pow(2).mean() / scales.force**2
    if use_nac:
        pairs = _pairs(batch.energies.shape[1])
        predicted = torch.stack([prediction.couplings[m, n] for m, n in pairs])  # (Q, N, 3)
        mask = batch.coupling_mask
        error = _phase_free_errors(predicted, batch.couplings, batch, mask, phase)  # (Q, B)
        n_atoms = batch.graph[N_ATOMS].to(error.dtype)  # (B,)
        error = (error / (3 * n_atoms))[batch.coupling_mask]
        loss = loss + w_nac * error.mean() / scales.coupling**2
    return loss


def _labelled(model: DiabaticModel, frames: list[Atoms], source: str):
    """Graphs and checked labels of ``frames``."""
    graphs = [structure_graph(model, atoms, k, source) for k, atoms in enumerate(frames)]
    labels = [
        read_labels(atoms, model.n_states, frame=k, source=source) for k, atoms in enumerate(frames)
    ]
    return graphs, labels


def fit_diabatic(
    model: DiabaticModel,
    train: list[Atoms],
    validation: list[Atoms] | None = None,
    *,
    epochs: int = 2000,
    learning_rate: float = 5e-3,
    batch_size: int | None = None,
    energy_weight: float = 1.0,
    force_weight: float = 1.0,
    nac_weight: float = 1.0,
    nac_phase: str = "structure",
    min_gap: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    log_every: int = 200,
    device: str = "cpu",
) -> DiabaticFit:
    """Train ``model`` in place on adiabatic labels (module docstring): energies, and the
    forces and coupling vectors where given, with Adam and a cosine learning-rate decay.

    The loss is ``w_E <ΔE²>/σ_E² + w_F <ΔF²>/σ_F² + w_d <min_± |Δh|²>/σ_h²`` with ``h =
    (E_n - E_m) d_mn`` (eV/Å: finite at an avoided crossing, and its sign ignored) and
    ``σ`` the RMS spreads of the training labels. Only eigenvalues and Hellmann–Feynman
    contractions are differentiated, never a coupling divided by a small gap.

    Args:
        model: an untrained model (its normalisation is set here from ``train``).
        train, validation: labelled structures.
        epochs: passes over ``train``.
        learning_rate: Adam's initial step, decayed to 1 % along a cosine.
        batch_size: structures per step (None: all, one step per epoch).
        energy_weight, force_weight, nac_weight: weights ``w`` of the loss terms.
        nac_phase: ``"structure"``: the coupling labels' signs are unrelated from one
            structure to the next (each compared up to its sign; as quantum-chemistry
            programs give them); ``"global"``: their signs are consistent (phase-tracked
            along a path, or from a model), and only one overall sign per pair is free.
        min_gap: structures whose labelled gap between neighbouring states is below this
            (eV) train on their energies only: at a degeneracy the states' forces are not
            differentiable and the couplings are singular.
        seed: seed of the batch order.
        log: called with a progress line every ``log_every`` epochs.
        device: torch device of the training (the normalisation is set on the CPU first).
    """
    if not train:
        raise MlpotInputError("no training structures", field="train")
    if nac_phase not in NAC_PHASES:
        raise MlpotInputError(
            f"unknown nac_phase {nac_phase!r}; choose from {list(NAC_PHASES)}", field="nac_phase"
        )
    graphs, labels = _labelled(model, train, "train")
    n_states = model.n_states
    energies = torch.as_tensor(np.stack([lab.energies for lab in labels]))
    model.fit_statistics(graphs, energies.to(model_dtype(model)))
    scales = _scales(_batch(graphs, labels, n_states, min_gap), model)
    model.to(device)
    weights = (float(energy_weight), float(force_weight), float(nac_weight))
    size = len(graphs) if batch_size is None else max(1, int(batch_size))
    batches = None if size < len(graphs) else [_batch(graphs, labels, n_states, min_gap, device)]
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, max(1, epochs), eta_min=0.01 * learning_rate
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss_value = math.nan
    for epoch in range(1, epochs + 1):
        if batches is None or size < len(graphs):
            order = torch.randperm(len(graphs), generator=generator).tolist()
            batches = [
                _batch(
                    [graphs[k] for k in chunk],
                    [labels[k] for k in chunk],
                    n_states,
                    min_gap,
                    device,
                )
                for chunk in (order[i : i + size] for i in range(0, len(order), size))
            ]
        total = 0.0
        for batch in batches:
            optimizer.zero_grad()
            loss = _loss(model, batch, scales, weights, nac_phase)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"epoch {epoch}: the loss is {float(loss)} (states of the model degenerate "
                    "at a structure with force or coupling labels? raise min_gap or lower the "
                    "learning rate)"
                )
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        schedule.step()
        loss_value = total / len(batches)
        if log is not None and (epoch % log_every == 0 or epoch == epochs):
            log(f"epoch {epoch}: loss {loss_value:.4g}")
    model.eval()
    metrics = diabatic_errors(model, graphs, labels, nac_phase=nac_phase)
    checked = None
    if validation:
        checked = diabatic_errors(
            model, *_labelled(model, validation, "validation"), nac_phase=nac_phase
        )
    return DiabaticFit(epochs, loss_value, metrics, checked)


def diabatic_errors(
    model: DiabaticModel,
    graphs: list[Graph],
    labels: list[StateLabels],
    *,
    nac_phase: str = "structure",
) -> dict[str, float]:
    """RMS errors of ``model`` against labels: ``energy_rmse`` eV, ``force_rmse`` eV/Å
    and ``nac_rmse`` 1/Å (per component, degenerate pairs skipped; the labels' signs
    chosen per structure or per pair as in :func:`fit_diabatic`), where labelled."""
    batch = _batch(graphs, labels, model.n_states, device=model_device(model))
    prediction = predict_adiabatic(model, batch.graph, nac=True, allow_degenerate=True)
    out = {"energy_rmse": float((prediction.energies - batch.energies).pow(2).mean().sqrt())}
    if batch.force_mask.any():
        error = (prediction.forces - batch.forces)[:, batch.force_mask]
        out["force_rmse"] = float(error.pow(2).mean().sqrt())
    pairs = _pairs(model.n_states)
    gaps = torch.stack([batch.energies[:, n] - batch.energies[:, m] for m, n in pairs])  # (Q, B)
    usable = batch.coupling_mask & (gaps.abs() > 0)
    if usable.any():
        nac = torch.stack([prediction.nac[m, n] for m, n in pairs])  # (Q, N, 3)
        label = batch.couplings / gaps[:, batch.graph[BATCH], None]  # (Q, N, 3) 1/Å
        error = _phase_free_errors(nac, label, batch, usable, nac_phase)[usable]  # (K,)
        n_atoms = batch.graph[N_ATOMS][usable.nonzero()[:, 1]].to(error.dtype)
        out["nac_rmse"] = float((error.sum() / (3 * n_atoms.sum())).sqrt())
    return out
