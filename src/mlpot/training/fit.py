"""Fitting a run's model, one of three ways: one model from scratch, a committee of such
models (each on a bootstrap sample, each resumable), or fine-tuning a checkpoint."""

from __future__ import annotations

import copy
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlpot.data.dataset import Sample
from mlpot.data.graph import Graph
from mlpot.data.loader import iterate_batches
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import load_model, save_model, torch_dtype
from mlpot.models.ensembles import Committee
from mlpot.processes import die_with_parent
from mlpot.training import distributed
from mlpot.training.config import TrainConfig
from mlpot.training.finetune import FinetuneStart, ReplaySampler, ewc_penalty, replay_count
from mlpot.training.initial_model import build_initial_model, refit_offsets
from mlpot.training.metrics import evaluate
from mlpot.training.samples import to_graphs
from mlpot.training.trainer import MODEL_FILE, STATE_FILE, TrainResult, train


@dataclass
class Fitted:
    """The training result, and for fine-tuning the errors on new and old data before and
    after (``comparison``) and the old graphs (replayed ones join the Fisher information)."""

    result: TrainResult
    comparison: dict | None = None
    old_graphs: list[Graph] | None = None


def train_one(
    config: TrainConfig,
    train_set: list[Sample],
    validation: list[Sample],
    output: Path,
    *,
    resume: bool,
    metadata: dict,
    checkpoint_fields: dict | None = None,
    start: EnergyModel | None = None,
) -> TrainResult:
    """One model trained into ``output``: from scratch
    (:func:`~mlpot.training.initial_model.build_initial_model`), or from a copy of
    ``start`` (its weights, reference energies and normalisation) when given."""
    dtype = torch_dtype(config.training.dtype)
    if start is not None:
        model = copy.deepcopy(start).to(dtype)
        train_graphs = to_graphs(
            train_set, model, dtype, "train graphs", progress=config.training.progress
        )
        refit_offsets(model, train_set, train_graphs)
        model.extend_domain(train_graphs)
    else:
        model, train_graphs = build_initial_model(config, train_set)
    val_graphs = to_graphs(
        validation, model, dtype, "validation graphs", progress=config.training.progress
    )
    return train(
        model,
        train_graphs,
        val_graphs,
        options=config.training,
        loss=config.loss,
        output_dir=output,
        resume=resume,
        metadata=metadata,
        checkpoint_fields=checkpoint_fields,
    )


def bootstrap(samples: list[Sample], seed: int) -> list[Sample]:
    """``len(samples)`` samples drawn with replacement (seeded)."""
    picks = np.random.default_rng(seed).integers(0, len(samples), len(samples))
    return [samples[k] for k in picks]


def train_committee(
    config: TrainConfig,
    train_set: list[Sample],
    validation: list[Sample],
    output: Path,
    *,
    resume: bool,
    metadata: dict,
    checkpoint_fields: dict | None = None,
    starts: list[EnergyModel] | None = None,
) -> TrainResult:
    """Train ``ensemble.size`` members in ``output/member_k`` and save their committee. A
    member finished before a kill is loaded, an unfinished one resumed. With
    ``ensemble.workers > 1`` the members train at once, each in a process of its own.
    ``starts``: one model per member to start from (warm start) instead of from scratch."""
    if starts is not None and len(starts) != config.ensemble.size:
        raise ValueError(f"{len(starts)} start models for {config.ensemble.size} members")
    jobs = []
    for k in range(config.ensemble.size):
        member_config = config.model_copy(deep=True)
        member_config.training.seed = config.training.seed + k
        member_dir = output / f"member_{k}"
        if (member_dir / "done").exists():
            continue
        member_train = (
            bootstrap(train_set, config.training.seed + k)
            if config.ensemble.bootstrap
            else train_set
        )
        member_resume = resume and (member_dir / STATE_FILE).exists()
        jobs.append(
            (member_config, member_train, validation, member_dir, member_resume,
             {**metadata, "member": k}, checkpoint_fields, starts[k] if starts else None)
        )  # fmt: skip
    if config.ensemble.workers > 1 and distributed.current().parallel:
        raise MlpotInputError(
            "members train one after another, each data-parallel, under torchrun: "
            "set ensemble.workers to 1",
            field="ensemble.workers",
        )
    if config.ensemble.workers > 1 and len(jobs) > 1:
        outcomes = _in_processes(jobs, config.ensemble.workers)
    else:
        outcomes = [_train_member(*job, keep_model=True) for job in jobs]
    trained = {job[3]: outcome.model for job, outcome in zip(jobs, outcomes, strict=True)}
    members = []
    for k in range(config.ensemble.size):
        member_dir = output / f"member_{k}"
        model = trained.get(member_dir)
        members.append(model if model is not None else load_model(member_dir / MODEL_FILE))
    committee = Committee(members)
    if distributed.current().main:
        save_model(
            output / MODEL_FILE,
            committee,
            training={
                **metadata,
                "ensemble": {"size": config.ensemble.size, "bootstrap": config.ensemble.bootstrap},
            },
            **(checkpoint_fields or {}),
        )
    return TrainResult(
        committee,
        min((o.best_validation_loss for o in outcomes), default=float("nan")),
        max((o.epochs_run for o in outcomes), default=0),
        "committee of " + str(config.ensemble.size),
        outcomes[-1].history if outcomes else [],
    )


@dataclass
class _MemberOutcome:
    """A member's training; its model when it trained in this process (else it is read
    back from its directory)."""

    best_validation_loss: float
    epochs_run: int
    history: list
    model: EnergyModel | None = None


def _train_member(
    config: TrainConfig,
    train_set: list[Sample],
    validation: list[Sample],
    output: Path,
    resume: bool,
    metadata: dict,
    checkpoint_fields: dict | None,
    start: EnergyModel | None = None,
    *,
    keep_model: bool = False,
) -> _MemberOutcome:
    """One member into ``output`` (marked ``done`` when it finished), from ``start`` when
    given; its model comes back with ``keep_model``."""
    result = train_one(
        config,
        train_set,
        validation,
        output,
        resume=resume,
        metadata=metadata,
        checkpoint_fields=checkpoint_fields,
        start=start,
    )
    if distributed.current().main:
        (output / "done").write_text(result.stop_reason)
    distributed.barrier()
    model = result.model if keep_model else None
    return _MemberOutcome(result.best_validation_loss, result.epochs_run, result.history, model)


def _in_processes(jobs: list[tuple], workers: int) -> list[_MemberOutcome]:
    """Train the members of ``jobs`` in ``workers`` spawned processes that die with this
    one; each gets an equal share of this process's torch threads (at least one)."""
    threads = max(1, torch.get_num_threads() // workers)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=multiprocessing.get_context("spawn"),  # no forked torch state
        initializer=_member_process,
        initargs=(os.getpid(), threads),
    )
    try:
        return [future.result() for future in [pool.submit(_train_member, *j) for j in jobs]]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _member_process(parent: int, threads: int) -> None:
    """Initializer of a member's process: die with ``parent``, use ``threads`` threads."""
    die_with_parent(parent, threads)
    torch.set_num_threads(threads)


def _errors(model: EnergyModel, graphs: list[Graph]) -> dict | None:
    return evaluate(model, iterate_batches(graphs, 16)) if graphs else None


def finetune(
    config: TrainConfig,
    start: FinetuneStart,
    train_set: list[Sample],
    validation: list[Sample],
    old: list[Sample],
    output: Path,
    *,
    resume: bool,
    metadata: dict,
    checkpoint_fields: dict,
) -> Fitted:
    """Fine-tune ``start.model`` on the new data (EWC penalty or replay of ``old``), with
    the errors on the new validation set and the old data before and after."""
    tune, dtype = config.finetune, torch_dtype(config.training.dtype)
    model = start.model
    graphs = to_graphs(train_set, model, dtype, "train graphs", progress=config.training.progress)
    val_graphs = to_graphs(
        validation, model, dtype, "validation graphs", progress=config.training.progress
    )
    old_graphs = to_graphs(old, model, dtype, "old graphs", progress=config.training.progress)
    before = {"new_validation": _errors(model, val_graphs), "old": _errors(model, old_graphs)}
    model.extend_domain(graphs)  # after "before": the errors of the model as it was given
    replay = None
    if tune.method == "replay":
        replay = ReplaySampler(
            old_graphs, replay_count(tune.replay_fraction, len(graphs), len(old_graphs))
        )
    result = train(
        model,
        graphs,
        val_graphs,
        options=config.training,
        loss=config.loss,
        output_dir=output,
        resume=resume,
        metadata={**metadata, "finetune": tune.model_dump()},
        penalty=ewc_penalty(tune, start) if tune.method == "ewc" else None,
        replay=replay,
        checkpoint_fields=checkpoint_fields,
    )
    after = {
        "new_validation": _errors(result.model, val_graphs),
        "old": _errors(result.model, old_graphs),
    }
    comparison = {"method": tune.method, "before": before, "after": after}
    return Fitted(result, comparison, old_graphs)
