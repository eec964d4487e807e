"""Training loss: energy per atom, forces, stress, and the net-force (momentum) term.

With label noise levels ``σ_E`` (eV/atom), ``σ_F`` (eV/Å) and ``σ_S`` (eV/Å³) the weights
``1/σ²`` make the loss the negative log-likelihood of Gaussian label noise, which is the
principled choice; explicit weights override them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as validated

from mlpot.data.graph import ENERGY, FORCES, N_ATOMS, STRESS, STRESS_MASK, Graph
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict, structure_sum
from mlpot.physics.ensemble import predict_members


@validated(config=ConfigDict(extra="forbid"))
class LossWeights:
    """Weights of the loss terms.

    Args:
        energy, forces, stress: weights of the mean squared errors of energy per atom
            (eV²), force components (eV²/Å²) and stress components (eV²/Å⁶).
        energy_noise, forces_noise, stress_noise: label noise levels; when given, the
            corresponding weight becomes ``1/noise²`` (explicit weights are then ignored).
        net_force: weight of the squared net force per atom of each structure,
            ``|Σ_i F_i|² / N``. Exactly zero for a conservative, translation-invariant model
            (as every mlpot model is); it guards models or terms that are not.
        ensemble_nll: weight of the Gaussian negative log-likelihood of the energy per atom
            under the spread of a shallow ensemble's heads (mean held fixed): it trains the
            spread to match the errors of the mean. Used only by models with heads, in the
            training steps (the validation loss, which selects the model, leaves it out).
    """

    energy: float = 1.0
    forces: float = 10.0
    # σ_S/σ_F = √(10/100) ≈ 0.3 Å⁻²: a stress error of the size force errors of order δF
    # make (δF · bond length / volume per atom ≈ 0.2-0.3 δF for condensed matter). With a
    # weight of 1 stress (eV/Å³ values of ~0.01) hardly entered the loss.
    stress: float = 100.0
    net_force: float = 0.0
    ensemble_nll: float = 1.0
    energy_noise: float | None = None
    forces_noise: float | None = None
    stress_noise: float | None = None

    def resolved(self) -> dict[str, float]:
        def pick(weight: float, noise: float | None) -> float:
            if noise is None:
                return float(weight)
            if noise <= 0:
                raise ValueError(f"noise levels must be positive, got {noise}")
            return 1.0 / noise**2

        return {
            "energy": pick(self.energy, self.energy_noise),
            "forces": pick(self.forces, self.forces_noise),
            "stress": pick(self.stress, self.stress_noise),
            "net_force": float(self.net_force),
            "ensemble_nll": float(self.ensemble_nll),
        }


@dataclass
class LossTerms:
    total: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    net_force: torch.Tensor
    ensemble_nll: torch.Tensor | None = None


def _masked_sse(diff: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of squares of ``diff`` where ``mask`` holds, and how many entries that is."""
    if not bool(mask.any()):
        return diff.new_zeros(()), 0
    return diff[mask].pow(2).sum(), int(mask.sum())


def predict_for_loss(
    model: torch.nn.Module, batch: Graph, *, stress: bool, create_graph: bool = False
) -> dict[str, torch.Tensor]:
    """Energy, forces (and stress) for the loss; for a model with ensemble members also
    every member's energy ``MEMBER_ENERGY (K, S)``, from the same forward pass."""
    if model.n_members:
        return predict_members(
            model, batch, stress=stress, member_forces=False, create_graph=create_graph
        )
    return predict(model, batch, forces=True, stress=stress, create_graph=create_graph)


def _ensemble_nll_sum(pred: dict[str, torch.Tensor], batch: Graph) -> tuple[torch.Tensor, int]:
    """Sum of ``0.5 (r² / v + log v)`` over structures, with ``r`` the error of the members'
    mean energy per atom (held fixed) and ``v`` the members' variance of it (eV²); and the
    number of structures with an energy label."""
    n_atoms = batch[N_ATOMS].to(pred[outputs.ENERGY].dtype)
    members = pred[outputs.MEMBER_ENERGY] / n_atoms  # (K, S)
    residual = members.mean(0).detach() - batch[ENERGY] / n_atoms  # (S,)
    variance = members.var(0) + 1e-12  # (S,); the floor keeps identical heads finite
    keep = torch.isfinite(residual)
    if not bool(keep.any()):
        return residual.new_zeros(()), 0
    terms = 0.5 * (residual[keep] ** 2 / variance[keep] + variance[keep].log())
    return terms.sum(), int(keep.sum())


def ensemble_nll(pred: dict[str, torch.Tensor], batch: Graph) -> torch.Tensor:
    """Mean ``0.5 (r² / v + log v)`` over structures with an energy label (see
    :func:`_ensemble_nll_sum`)."""
    total, count = _ensemble_nll_sum(pred, batch)
    return total / max(count, 1)


#: The loss terms, each a sum over entries divided by their number (see compute_loss).
TERMS = ("energy", "forces", "stress", "net_force", "ensemble_nll")


def loss_sums(
    pred: dict[str, torch.Tensor], batch: Graph, weights: dict[str, float]
) -> dict[str, tuple[torch.Tensor, int]]:
    """Every loss term as ``(sum over its entries, number of entries)``; labels that are
    NaN (absent) are left out. Data-parallel training adds the counts of all processes
    before dividing (:func:`compute_loss`'s ``counts``)."""
    n_atoms = batch[N_ATOMS].to(pred[outputs.ENERGY].dtype)
    e_diff = (pred[outputs.ENERGY] - batch[ENERGY]) / n_atoms
    zero = e_diff.new_zeros(())
    sums = {term: (zero, 0) for term in TERMS}
    sums["energy"] = _masked_sse(e_diff, torch.isfinite(e_diff))
    if outputs.FORCES in pred:
        f_diff = pred[outputs.FORCES] - batch[FORCES]
        sums["forces"] = _masked_sse(f_diff, torch.isfinite(f_diff))
        net = structure_sum(pred[outputs.FORCES], batch)  # (S, 3)
        sums["net_force"] = ((net.pow(2).sum(-1) / n_atoms).sum(), int(n_atoms.shape[0]))
    if outputs.STRESS in pred and STRESS_MASK in batch:
        mask = batch[STRESS_MASK]
        sums["stress"] = _masked_sse(
            pred[outputs.STRESS] - batch[STRESS], mask[:, None, None].expand(-1, 3, 3)
        )
    if outputs.MEMBER_ENERGY in pred and weights.get("ensemble_nll", 0.0) > 0:
        sums["ensemble_nll"] = _ensemble_nll_sum(pred, batch)
    return sums


def compute_loss(
    pred: dict[str, torch.Tensor],
    batch: Graph,
    weights: dict[str, float],
    *,
    counts: dict[str, int] | None = None,
) -> LossTerms:
    """Weighted sum of the terms, each the mean of its entries: mean squared errors of the
    energy per atom, force and stress components, mean squared net force per atom, mean
    ensemble NLL. Labels that are NaN (absent) are left out. ``counts``: the number of
    entries of each term to divide by (default: this batch's); data-parallel training
    passes those of the whole global batch, so that the processes' losses add up to the
    global batch's loss."""
    return loss_from_sums(loss_sums(pred, batch, weights), weights, counts=counts)


def loss_from_sums(
    sums: dict[str, tuple[torch.Tensor, int]],
    weights: dict[str, float],
    *,
    counts: dict[str, int] | None = None,
) -> LossTerms:
    """:func:`compute_loss` from the terms' sums (:func:`loss_sums`), each divided by
    ``counts`` (default: its own number of entries)."""
    means = {
        term: total / max(counts[term] if counts is not None else count, 1)
        for term, (total, count) in sums.items()
    }
    total = (
        weights["energy"] * means["energy"]
        + weights["forces"] * means["forces"]
        + weights["stress"] * means["stress"]
        + weights["net_force"] * means["net_force"]
    )
    spread = None
    if sums["ensemble_nll"][1] > 0 or (counts is not None and counts["ensemble_nll"] > 0):
        spread = means["ensemble_nll"]
        total = total + weights["ensemble_nll"] * spread
    return LossTerms(
        total, means["energy"], means["forces"], means["stress"], means["net_force"], spread
    )
