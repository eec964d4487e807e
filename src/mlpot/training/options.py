"""Options of the training loop (the ``training:`` section of a config)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as validated


@validated(config=ConfigDict(extra="forbid"))
class TrainingOptions:
    """How to fit.

    Args:
        epochs: maximum passes over the training set.
        batch_size: structures per optimiser step.
        learning_rate: initial AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        lr_factor, lr_patience: multiply the learning rate by ``lr_factor`` after
            ``lr_patience`` epochs without a better validation loss.
        min_learning_rate: stop once the learning rate falls below this.
        ema_decay: decay of the exponential moving average of the weights (0 disables);
            validation and the saved model use the averaged weights.
        clip_grad_norm: largest norm of the gradient (all parameters together) an
            optimiser step takes; a larger one is scaled down to it (None: no clipping).
        early_stopping_patience: stop after this many epochs without improvement.
        max_time_s: wall-clock budget in seconds (None: no limit).
        seed: seed of weight initialisation and batch order.
        dtype: ``float32`` or ``float64``.
        device: torch device, e.g. ``cpu`` or ``cuda``.
        progress: show a progress bar.
    """

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_factor: float = Field(0.5, gt=0, lt=1)
    lr_patience: int = Field(10, ge=0)
    min_learning_rate: float = Field(1e-6, ge=0)
    ema_decay: float = Field(0.99, ge=0, lt=1)
    clip_grad_norm: float | None = Field(None, gt=0)
    early_stopping_patience: int = Field(40, ge=1)
    max_time_s: float | None = Field(None, gt=0)
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "cpu"
    progress: bool = True


@validated(config=ConfigDict(extra="forbid"))
class EnsembleOptions:
    """A committee of independently trained models (the ``ensemble:`` section).

    Args:
        size: number of members (1: a single model). Member ``k`` uses seed ``seed + k``.
        bootstrap: train each member on a bootstrap resample of the training set
            (drawn with replacement), on top of its own initialisation.
        workers: members trained at once, each in a process of its own (spawned, dying
            with this one) with an equal share of the torch threads; small structures
            train fastest on one thread, so on a machine with several cores this divides
            a committee's wall time by up to ``workers``.
    """

    size: int = Field(1, ge=1)
    bootstrap: bool = False
    workers: int = Field(1, ge=1)
