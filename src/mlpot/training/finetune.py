"""Fine-tuning a trained model on new data without forgetting the old.

Two remedies against catastrophic forgetting, chosen by ``finetune.method``:

* ``ewc`` — elastic weight consolidation (Kirkpatrick et al., PNAS 2017): the loss on the
  new data plus ``λ/2 Σ_i F_i (θ_i - θ*_i)²``, with ``θ*`` the checkpoint's weights and
  ``F`` the diagonal Fisher information of the per-structure loss (energy per atom and
  forces) on the original training data, stored in the checkpoint;
* ``replay`` — a random share of the old structures is mixed into every epoch;
* ``plain`` — neither (the baseline to compare against).

The loss ``L = w_E (ΔE/N)² + w_F mean(ΔF²)`` is, up to a constant, the negative
log-likelihood of Gaussian label noise with variances ``σ_E² = 1/(2 w_E)`` (energy per
atom) and ``σ_F² = n_F/(2 w_F)`` (each of the ``n_F`` force components). ``F`` is the Fisher
information of that model: the mean over structures of the squared gradient of ``L`` at
labels *drawn* from it (prediction + noise of those variances), one draw per structure. Its
expectation is the Gauss–Newton curvature of the old mean loss, whatever the old model's
remaining error (the "empirical" Fisher, at the real labels, shrinks with that error). So
``λ/2 Σ F Δθ²`` approximates ``λ`` times the rise of the old data's mean loss, and ``λ`` is
the weight of the old data relative to the new: 1 (the default) weighs them alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from mlpot.data.graph import ENERGY, FORCES, N_ATOMS, Graph, graph_to
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import load_checkpoint, model_from_payload, update_checkpoint
from mlpot.physics import outputs
from mlpot.training.loss import compute_loss, predict_for_loss

FISHER_KIND = "diagonal Fisher of the per-structure loss (energy per atom + forces), sampled labels"


class FisherOptions(BaseModel):
    """The ``fisher:`` section: Fisher information stored when training ends.

    Args:
        structures: training structures it is averaged over (a seeded random subset when
            the training set is larger); 0 stores none.
        seed: seed of that subset and of the sampled labels.
    """

    model_config = ConfigDict(extra="forbid")
    structures: int = Field(512, ge=0)
    seed: int = 0


class FinetuneConfig(BaseModel):
    """The ``finetune:`` section: start from a checkpoint and fit the new ``data``.

    Args:
        checkpoint: the trained model (``model.pt``) to start from; its model config,
            normalisation, reference energies and baseline are kept.
        method: ``ewc``, ``replay`` or ``plain``.
        ewc_lambda: EWC strength λ: the weight of the old data's mean loss relative to the
            new data's (see the module docstring).
        replay_data: old structures (files or databases). Mixed into training by
            ``replay``; under every method, the errors on them before and after fine-tuning
            are reported in ``metrics.json``.
        replay_fraction: share of each epoch's structures drawn (anew each epoch) from
            ``replay_data``: ``n_old = ceil(f / (1 - f) · n_new)``, at most all of them.
    """

    model_config = ConfigDict(extra="forbid")
    checkpoint: str
    method: Literal["ewc", "replay", "plain"] = "ewc"
    ewc_lambda: float = Field(1.0, ge=0)
    replay_data: list[str] = []
    replay_fraction: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _replay_has_data(self):
        if self.method == "replay" and not self.replay_data:
            raise ValueError("method 'replay' needs replay_data (the old structures)")
        return self


# ---- Fisher information ----------------------------------------------------------------
def fisher_weights(loss_weights: dict[str, float]) -> dict[str, float]:
    """The loss of the Fisher information: energy and forces terms only."""
    return {
        "energy": float(loss_weights.get("energy", 1.0)),
        "forces": float(loss_weights.get("forces", 10.0)),
        "stress": 0.0,
        "net_force": 0.0,
        "ensemble_nll": 0.0,
    }


def diagonal_fisher(
    model: EnergyModel,
    graphs: list[Graph],
    loss_weights: dict[str, float],
    *,
    device: str = "cpu",
    progress: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Diagonal Fisher information of the per-structure loss (module docstring): the mean
    over ``graphs`` of the squared parameter gradient of each structure's loss at labels
    sampled from the model's Gaussian noise model. Returns the checkpoint's ``fisher``
    field (``mean_loss``: the mean loss at the real labels, for the record)."""
    if model.member_models():
        raise MlpotInputError(
            "Fisher information of a committee is not supported; fine-tune single models",
            field="model",
        )
    if not graphs:
        raise MlpotInputError("no structures to compute the Fisher information on")
    weights = fisher_weights(loss_weights)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    generator = torch.Generator().manual_seed(seed)
    total_loss = 0.0
    was_training = model.training
    model.eval()
    for graph in tqdm(graphs, desc="Fisher information", unit="structure", disable=not progress):
        batch = graph_to(graph, device)
        pred = predict_for_loss(model, batch, stress=False, create_graph=True)
        total_loss += float(compute_loss(pred, batch, weights).total.detach())
        loss = compute_loss(pred, sampled_labels(pred, batch, weights, generator), weights)
        grads = torch.autograd.grad(loss.total, list(params.values()), allow_unused=True)
        for (name, _), grad in zip(params.items(), grads, strict=True):
            if grad is not None:
                sums[name] += grad.detach().double() ** 2
    model.train(was_training)
    return {
        "kind": FISHER_KIND,
        "values": {n: (s / len(graphs)).cpu() for n, s in sums.items()},
        "n_structures": len(graphs),
        "mean_loss": total_loss / len(graphs),
        "loss_weights": weights,
    }


def sampled_labels(
    pred: dict[str, torch.Tensor],
    batch: Graph,
    weights: dict[str, float],
    generator: torch.Generator,
) -> Graph:
    """``batch`` with energy and force labels drawn from ``N(prediction, σ²)``, the noise
    variances the loss weights imply (module docstring)."""
    energy, forces = pred[outputs.ENERGY].detach(), pred[outputs.FORCES].detach()
    n_atoms = batch[N_ATOMS].to(energy.dtype)
    sigma_e = math.sqrt(0.5 / weights["energy"]) if weights["energy"] > 0 else 0.0
    sigma_f = math.sqrt(0.5 * forces.numel() / weights["forces"]) if weights["forces"] > 0 else 0.0

    def noise(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)

    return {
        **batch,
        ENERGY: energy + sigma_e * n_atoms * noise(energy),
        FORCES: forces + sigma_f * noise(forces),
    }


def fisher_subset(graphs: list[Graph], options: FisherOptions) -> list[Graph]:
    """At most ``options.structures`` graphs, a seeded random choice when there are more."""
    if len(graphs) <= options.structures:
        return list(graphs)
    picks = np.random.default_rng(options.seed).choice(len(graphs), options.structures, False)
    return [graphs[k] for k in sorted(picks)]


def combine_fisher(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Online EWC: after an EWC fine-tune the consolidated information is old + new."""
    if old is None:
        return new
    values = {n: new["values"][n] + old["values"].get(n, 0.0) for n in new["values"]}
    return {**new, "values": values, "n_structures": old["n_structures"] + new["n_structures"]}


# ---- fine-tuning pieces the trainer uses -------------------------------------------------
class EWCPenalty:
    """``λ/2 Σ_i F_i (θ_i - θ*_i)²`` over the named parameters of a model (eV²-like units
    of the training loss)."""

    def __init__(self, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], strength):
        missing = sorted(set(fisher) - set(anchor))
        if missing:
            raise MlpotInputError(
                f"Fisher information names parameters the model lacks: {missing[:3]}",
                field="fisher",
            )
        self.fisher, self.anchor, self.strength = fisher, anchor, float(strength)

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        total = None
        for name, param in model.named_parameters():
            if name not in self.fisher:
                continue
            f = self.fisher[name].to(param)
            term = (f * (param - self.anchor[name].to(param)) ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return 0.5 * self.strength * total


@dataclass
class ReplaySampler:
    """Draws ``count`` old graphs per epoch with the trainer's generator."""

    graphs: list[Graph]
    count: int

    def __call__(self, generator: torch.Generator) -> list[Graph]:
        order = torch.randperm(len(self.graphs), generator=generator)[: self.count]
        return [self.graphs[k] for k in order.tolist()]


def replay_count(fraction: float, n_new: int, n_old: int) -> int:
    """Old structures per epoch so that they make ``fraction`` of it (at most ``n_old``)."""
    return min(n_old, math.ceil(fraction / (1.0 - fraction) * n_new))


@dataclass
class FinetuneStart:
    """The model to fine-tune and what came with it in its checkpoint."""

    model: EnergyModel
    payload: dict[str, Any]
    source: str
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)


def load_start(
    config: FinetuneConfig, dtype: torch.dtype, *, trust_code: bool = False
) -> FinetuneStart:
    """Load and check the checkpoint to start from (before any data is read). Its baseline,
    which fine-tuning runs, may name code only with ``trust_code``."""
    source = config.checkpoint
    if not Path(source).exists():
        raise MlpotInputError("checkpoint to fine-tune not found", source=source)
    payload = load_checkpoint(source, trust_code=trust_code)
    model = model_from_payload(payload, source=source).to(dtype)
    if model.member_models():
        raise MlpotInputError(
            "fine-tuning a committee is not supported; fine-tune its members",
            source=source,
            field="finetune.checkpoint",
        )
    if config.method == "ewc" and payload.get("fisher") is None:
        raise MlpotInputError(
            "method 'ewc' needs Fisher information in the checkpoint; store it with "
            "`mlpot fisher MODEL.pt OLD_DATA...`",
            source=source,
            field="fisher",
        )
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    return FinetuneStart(model, payload, source, anchor)


def ewc_penalty(config: FinetuneConfig, start: FinetuneStart) -> EWCPenalty:
    return EWCPenalty(start.payload["fisher"]["values"], start.anchor, config.ewc_lambda)


def store_fisher_from_files(
    model_path: str | Path,
    paths: list[str],
    *,
    options: FisherOptions | None = None,
    progress: bool = True,
    trust_code: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """``mlpot fisher``: compute the Fisher information of a saved model on labelled files
    (its original training data), on the torch ``device``, and store it in the checkpoint
    (on the CPU). Uses the loss weights the model was trained with, and the checkpoint's
    baseline for delta-learned models (one that names code runs only with ``trust_code``)."""
    from mlpot.data.dataset import read_dataset, sample_to_graph
    from mlpot.models.base import model_dtype
    from mlpot.training.delta import delta_targets

    options = options or FisherOptions()
    payload = load_checkpoint(model_path, trust_code=trust_code)
    model = model_from_payload(payload, source=str(model_path))
    samples = [s for path in paths for s in read_dataset(path)]
    if payload.get("baseline") is not None:
        samples = delta_targets(
            samples, payload["baseline"], progress=progress, trust_code=trust_code
        )
    dtype = model_dtype(model)
    graphs = [
        sample_to_graph(s, model.cutoff, dtype=dtype, elements=model.elements) for s in samples
    ]
    weights = (payload.get("training") or {}).get("loss_weights") or {}
    subset = fisher_subset(graphs, options)
    fisher = diagonal_fisher(
        model.to(device), subset, weights, device=device, progress=progress, seed=options.seed
    )
    update_checkpoint(model_path, fisher=fisher)
    return fisher
