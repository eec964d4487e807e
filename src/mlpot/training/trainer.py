"""The training loop: AdamW, plateau learning-rate schedule, EMA weights, early stopping,
and a training state written after every epoch so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from mlpot.data.graph import STRESS_MASK, Graph, collate, graph_to
from mlpot.data.loader import iterate_batches, iterate_shards
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import atomic_save, save_model, torch_dtype
from mlpot.models.registry import build_model_from_file, model_spec
from mlpot.physics.derivatives import predict
from mlpot.training import distributed
from mlpot.training.loss import (
    TERMS,
    LossWeights,
    compute_loss,
    loss_from_sums,
    loss_sums,
    predict_for_loss,
)
from mlpot.training.metrics import evaluate
from mlpot.training.options import TrainingOptions

STATE_FILE = "training_state.pt"
_STATE_KEYS = ("model_spec", "model", "ema", "optimizer", "scheduler", "generator", "state")
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.jsonl"


@dataclass
class TrainResult:
    """What training produced: the EMA model at its best validation loss, and the history."""

    model: EnergyModel
    best_validation_loss: float
    epochs_run: int
    stop_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _State:
    epoch: int = 0
    best_loss: float = float("inf")
    bad_epochs: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def _any_stress(graphs: list[Graph]) -> bool:
    return any(bool(g[STRESS_MASK].any()) for g in graphs)


def _validation_loss(model, graphs, weights, options, *, stress: bool) -> tuple[float, dict]:
    total, count = 0.0, 0
    for batch in iterate_batches(graphs, options.batch_size):
        batch = graph_to(batch, options.device)
        pred = predict(model, batch, forces=True, stress=stress)
        terms = compute_loss(pred, batch, weights)
        n = int(batch["n_atoms"].shape[0])
        total, count = total + float(terms.total.detach()) * n, count + n
    metrics = evaluate(
        model, (graph_to(b, options.device) for b in iterate_batches(graphs, options.batch_size))
    )
    return total / count, metrics


Penalty = Callable[[torch.nn.Module], torch.Tensor]
Replay = Callable[[torch.Generator], list[Graph]]


class Trainer:
    """Fits an energy model to labelled graphs; see :func:`train` for the one-call form.

    ``penalty(model)`` (e.g. elastic weight consolidation) is added to every training
    step's loss; ``replay(generator)`` returns extra graphs mixed into each epoch (old
    data); ``checkpoint_fields`` are written into every saved model (e.g. ``baseline``).
    """

    def __init__(
        self,
        model: EnergyModel,
        options: TrainingOptions,
        loss: LossWeights,
        output_dir: str | Path,
        *,
        metadata: dict[str, Any] | None = None,
        penalty: Penalty | None = None,
        replay: Replay | None = None,
        checkpoint_fields: dict[str, Any] | None = None,
    ) -> None:
        self.options = options
        self.penalty, self.replay = penalty, replay
        self.checkpoint_fields = checkpoint_fields or {}
        self.weights = loss.resolved()
        self.output_dir = Path(output_dir)
        self.metadata = metadata or {}
        self.dtype = torch_dtype(options.dtype)
        self.model = model.to(device=options.device, dtype=self.dtype)
        self.ema = (
            AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(options.ema_decay), use_buffers=True
            )
            if options.ema_decay > 0
            else None
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=options.lr_factor, patience=options.lr_patience
        )
        self.generator = torch.Generator().manual_seed(options.seed)
        self.state = _State()
        self.ranks = distributed.current()
        if self.ranks.parallel:  # one starting point (the seeds agree; this makes sure)
            distributed.broadcast_module(self.model)
            if self.ema is not None:
                distributed.broadcast_module(self.ema)

    @property
    def averaged(self) -> EnergyModel:
        return self.ema.module if self.ema is not None else self.model

    # ---- persistence -------------------------------------------------------------------
    def save_state(self) -> None:
        if not self.ranks.main:
            return
        atomic_save(
            {
                "model_spec": model_spec(self.model),
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "state": {
                    k: getattr(self.state, k)
                    for k in ("epoch", "best_loss", "bad_epochs", "elapsed_s", "history")
                },
            },
            self.output_dir / STATE_FILE,
        )

    @classmethod
    def resume(
        cls,
        output_dir: str | Path,
        options: TrainingOptions,
        loss: LossWeights,
        *,
        metadata: dict[str, Any] | None = None,
        **hooks: Any,
    ) -> Trainer:
        path = Path(output_dir) / STATE_FILE
        if not path.exists():
            raise MlpotInputError("no training state to resume from", source=str(path))
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise MlpotInputError(
                f"unreadable training state ({err.__class__.__name__}: {err}); "
                "delete it to start afresh",
                source=str(path),
            ) from None
        missing = [k for k in _STATE_KEYS if not isinstance(saved, dict) or k not in saved]
        if missing:
            raise MlpotInputError(
                f"not an mlpot training state (missing {missing})", source=str(path)
            )
        if not isinstance(saved["model_spec"], dict):
            raise MlpotInputError("must be a dict", source=str(path), field="model_spec")
        try:
            model = build_model_from_file(saved["model_spec"])  # registry: no code in the file
        except MlpotInputError as err:
            raise MlpotInputError(err.reason, source=str(path), field=err.field) from None
        model = model.to(torch_dtype(options.dtype))
        try:
            model.load_state_dict(saved["model"])
        except (RuntimeError, TypeError) as err:
            raise MlpotInputError(
                f"weights do not fit the model config: {err}", source=str(path), field="model"
            ) from None
        trainer = cls(model, options, loss, output_dir, metadata=metadata, **hooks)
        try:
            if trainer.ema is not None and saved["ema"] is not None:
                trainer.ema.load_state_dict(saved["ema"])
            trainer.optimizer.load_state_dict(saved["optimizer"])
            trainer.scheduler.load_state_dict(saved["scheduler"])
            trainer.generator.set_state(saved["generator"])
            trainer.state = _State(**saved["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise MlpotInputError(
                f"training state does not fit this run ({err.__class__.__name__}: {err})",
                source=str(path),
            ) from None
        return trainer

    # ---- loop --------------------------------------------------------------------------
    def _train_epoch(self, graphs: list[Graph], stress: bool) -> float:
        self.model.train()
        if self.replay is not None:
            graphs = graphs + self.replay(self.generator)
        ranks = self.ranks
        total, count = 0.0, 0
        shards = iterate_shards(
            graphs,
            self.options.batch_size,
            generator=self.generator,
            rank=ranks.rank,
            world=ranks.world,
        )
        for shard in shards:
            loss, n = self._shard_loss(shard, stress)
            if ranks.parallel:  # the global batch's loss and size, the same everywhere
                loss_value = distributed.sum_tensor(loss)
                n = int(distributed.sum_tensor(torch.tensor(float(n), device=loss.device)))
            else:
                loss_value = loss.detach()
            if not torch.isfinite(loss_value):
                raise FloatingPointError(
                    f"training loss became {float(loss_value)} at epoch {self.state.epoch + 1}; "
                    "lower learning_rate or check the labels"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if ranks.parallel:
                distributed.sum_gradients(self.model)
            if self.options.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.clip_grad_norm)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total, count = total + float(loss_value) * n, count + n
        return total / max(count, 1)

    def _shard_loss(self, shard: list[Graph], stress: bool) -> tuple[torch.Tensor, int]:
        """This process's part of a global batch's loss (all of it in one process), and
        its number of structures. In parallel, every term divides by the global batch's
        number of entries, so the parts add up to the global loss."""
        if not shard:  # a batch smaller than the number of processes: nothing here
            distributed.sum_counts(dict.fromkeys(TERMS, 0), self.options.device)
            zero = torch.zeros((), dtype=self.dtype, device=self.options.device)
            return zero.requires_grad_(), 0
        batch = graph_to(collate(shard), self.options.device)
        pred = predict_for_loss(self.model, batch, stress=stress, create_graph=True)
        sums = loss_sums(pred, batch, self.weights)
        counts = None
        if self.ranks.parallel:
            local = {term: n for term, (_, n) in sums.items()}
            counts = distributed.sum_counts(local, self.options.device)
        loss = loss_from_sums(sums, self.weights, counts=counts).total
        if self.penalty is not None and self.ranks.main:  # once per global step
            loss = loss + self.penalty(self.model)
        return loss, int(batch["n_atoms"].shape[0])

    def fit(self, train_graphs: list[Graph], val_graphs: list[Graph]) -> TrainResult:
        opts, state = self.options, self.state
        stress = _any_stress(train_graphs)
        torch.manual_seed(opts.seed + state.epoch)
        reason = "epochs"
        bar = tqdm(
            total=opts.epochs,
            initial=state.epoch,
            desc="training",
            unit="epoch",
            disable=not (opts.progress and self.ranks.main),
        )
        while state.epoch < opts.epochs:
            start = time.perf_counter()
            train_loss = self._train_epoch(train_graphs, stress)
            val_loss, metrics, elapsed = None, None, None
            if self.ranks.main:
                val_loss, metrics = _validation_loss(
                    self.averaged.eval(), val_graphs, self.weights, opts, stress=stress
                )
                elapsed = time.perf_counter() - start
            if self.ranks.parallel:  # process 0's figures decide for everyone
                val_loss, metrics, elapsed = distributed.broadcast((val_loss, metrics, elapsed))
            self.scheduler.step(val_loss)
            state.epoch += 1
            state.elapsed_s += elapsed
            record = {
                "epoch": state.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "elapsed_s": state.elapsed_s,
                "validation": metrics,
            }
            state.history.append(record)
            self._log(record, bar)
            if val_loss < state.best_loss:
                state.best_loss, state.bad_epochs = val_loss, 0
                self.save_model(self.output_dir / MODEL_FILE)
            else:
                state.bad_epochs += 1
            self.save_state()
            if state.bad_epochs >= opts.early_stopping_patience:
                reason = "early stopping"
            elif self.optimizer.param_groups[0]["lr"] < opts.min_learning_rate:
                reason = "learning rate below minimum"
            elif opts.max_time_s is not None and state.elapsed_s >= opts.max_time_s:
                reason = "time budget"
            if reason != "epochs":
                break
        bar.close()
        distributed.barrier()  # process 0 has written the best model
        from mlpot.models.checkpoint import load_model

        best = load_model(self.output_dir / MODEL_FILE, dtype=self.dtype, device=opts.device)
        return TrainResult(best, state.best_loss, state.epoch, reason, state.history)

    def _log(self, record: dict[str, Any], bar) -> None:
        if not self.ranks.main:
            return
        with open(self.output_dir / HISTORY_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        forces = record["validation"].get("forces", {}).get("rmse", float("nan"))
        energy = record["validation"].get("energy_per_atom", {}).get("rmse", float("nan"))
        bar.set_postfix(
            val_loss=f"{record['val_loss']:.3g}",
            E_rmse=f"{energy * 1e3:.2f}meV",
            F_rmse=f"{forces:.3f}eV/A",
        )
        bar.update(1)

    def save_model(self, path: Path) -> None:
        if not self.ranks.main:
            return
        meta = {
            **self.metadata,
            "epoch": self.state.epoch,
            "best_validation_loss": self.state.best_loss,
            "loss_weights": self.weights,
            "options": {k: getattr(self.options, k) for k in self.options.__dataclass_fields__},
        }
        save_model(path, self.averaged, training=meta, **self.checkpoint_fields)


def train(
    model: EnergyModel,
    train_graphs: list[Graph],
    val_graphs: list[Graph],
    *,
    options: TrainingOptions,
    loss: LossWeights,
    output_dir: str | Path,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    penalty: Penalty | None = None,
    replay: Replay | None = None,
    checkpoint_fields: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` (already statistics-fitted) and return the best EMA model.

    Writes ``model.pt`` (best so far), ``training_state.pt`` (every epoch) and
    ``history.jsonl`` to ``output_dir``. ``resume=True`` continues from the saved state.
    ``penalty``, ``replay`` and ``checkpoint_fields``: see :class:`Trainer`.
    """
    hooks = {"penalty": penalty, "replay": replay, "checkpoint_fields": checkpoint_fields}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not val_graphs:
        raise MlpotInputError(
            "no validation structures: give a validation set or a validation fraction > 0",
            field="data",
        )
    if resume:
        trainer = Trainer.resume(output_dir, options, loss, metadata=metadata, **hooks)
    else:
        torch.manual_seed(options.seed)
        trainer = Trainer(model, options, loss, output_dir, metadata=metadata, **hooks)
    dtype = torch_dtype(options.dtype)
    train_graphs = [graph_to(g, "cpu", dtype) for g in train_graphs]
    val_graphs = [graph_to(g, "cpu", dtype) for g in val_graphs]
    return trainer.fit(train_graphs, val_graphs)
