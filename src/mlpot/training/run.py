"""``mlpot train`` as a library call: data -> splits -> reference energies -> model -> fit.

The labelled structures come from the files the config names and/or from memory
(:mod:`mlpot.training.samples`); the model is fitted one of three ways
(:mod:`mlpot.training.fit`). With a ``baseline`` the targets are label - baseline
(:mod:`mlpot.training.delta`); with ``finetune`` the model starts from a checkpoint
(:mod:`mlpot.training.finetune`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mlpot.calculators.oracles import ORACLES, check_oracle_name
from mlpot.data.dataset import Sample
from mlpot.data.graph import Graph
from mlpot.data.loader import iterate_batches
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import torch_dtype, update_checkpoint
from mlpot.training import distributed
from mlpot.training.config import RESPONSE_KINDS, TrainConfig
from mlpot.training.delta import CACHE_FILE, delta_splits
from mlpot.training.finetune import (
    FinetuneStart,
    combine_fisher,
    diagonal_fisher,
    fisher_subset,
    load_start,
)
from mlpot.training.fit import Fitted, finetune, train_committee, train_one
from mlpot.training.metrics import evaluate
from mlpot.training.samples import (
    Splits,
    Structures,
    label_keys,
    read_samples,
    split_samples,
    to_graphs,
)
from mlpot.training.trainer import MODEL_FILE, STATE_FILE, TrainResult
from mlpot.uncertainty.domain import fit_domain


@dataclass
class RunResult:
    """Where the model is, how training went, and the best model's errors."""

    model_path: Path
    train: TrainResult
    validation_metrics: dict
    test_metrics: dict | None


def store_domain(
    model: EnergyModel,
    train_set: list[Sample],
    path: Path,
    dtype: torch.dtype,
    *,
    progress: bool = False,
) -> None:
    """Fit the domain-of-applicability statistics of ``model`` on the training set and
    store them in the checkpoint at ``path`` (models without features have none)."""
    graphs = to_graphs(train_set, model, dtype, "domain statistics", progress=progress)
    domain = fit_domain(model, graphs)
    if domain is not None:
        update_checkpoint(path, domain=domain.to_dict())


def store_fisher(
    config: TrainConfig,
    model: EnergyModel,
    graphs: list[Graph],
    path: Path,
    previous: dict | None = None,
) -> None:
    """Compute the Fisher information of ``model`` on (a subset of) ``graphs`` and store it
    in the checkpoint at ``path`` (added to ``previous`` for online EWC)."""
    if config.fisher.structures == 0 or model.member_models() or not graphs:
        return
    fisher = diagonal_fisher(
        model,
        fisher_subset(graphs, config.fisher),
        config.loss.resolved(),
        device=config.training.device,
        progress=config.training.progress,
        seed=config.fisher.seed,
    )
    update_checkpoint(path, fisher=combine_fisher(previous, fisher))


def _output_directory(config: TrainConfig, *, resume: bool, log: Callable[[str], None]) -> Path:
    """The run's directory, created; refuses a run already there unless ``resume``."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    started = (output / STATE_FILE).exists() or (output / "member_0").exists()
    if started and not resume:
        raise MlpotInputError(
            "a training run is already here; resume it with --resume or "
            "choose another output directory",
            source=str(output),
        )
    if resume and not started:
        log(f"nothing to resume in {output}: starting fresh")
    return output


def _baseline_spec(config: TrainConfig, start: FinetuneStart | None) -> dict | None:
    """The baseline of this run: the config's, or the fine-tuned checkpoint's (equal if both)."""
    spec = config.baseline.spec() if config.baseline is not None else None
    if start is not None and start.payload.get("baseline") is not None:
        stored = start.payload["baseline"]
        if spec is not None and spec != stored:
            raise MlpotInputError(
                f"baseline {spec} differs from the checkpoint's {stored}",
                source=start.source,
                field="baseline",
            )
        spec = stored
    return spec


def _checked_baseline(
    config: TrainConfig, start: FinetuneStart | None, *, trust_code: bool
) -> dict | None:
    """:func:`_baseline_spec`, refused when it names code and ``trust_code`` is False."""
    baseline = _baseline_spec(config, start)
    if baseline is not None and baseline["name"] not in ORACLES:
        try:
            check_oracle_name(baseline["name"], trust_code=trust_code)
        except MlpotInputError as err:
            raise MlpotInputError(
                f"delta-learning baseline: {err.reason}", field="baseline"
            ) from None
    return baseline


def _baseline_cache(config: TrainConfig, output: Path) -> Path:
    if config.baseline is not None and config.baseline.cache is not None:
        return Path(config.baseline.cache)
    return output / CACHE_FILE


def _samples(
    config: TrainConfig,
    given: dict[str, Structures],
    start: FinetuneStart | None,
    baseline: dict | None,
    output: Path,
    *,
    trust_code: bool,
) -> Splits:
    """The run's samples (files and ``given`` structures in memory), the fine-tuning's old
    data, all with ``label - baseline`` targets when there is a baseline."""
    splits = split_samples(config, **given)
    if start is not None and config.finetune.replay_data:
        splits.old = read_samples(config.finetune.replay_data, label_keys(config))
    if baseline is not None:
        splits = Splits(
            *delta_splits(
                splits.parts(),
                baseline,
                cache=_baseline_cache(config, output),
                progress=config.training.progress,
                trust_code=trust_code,
            )
        )
    return splits


def _fit(
    config: TrainConfig,
    splits: Splits,
    start: FinetuneStart | None,
    output: Path,
    *,
    resume: bool,
    metadata: dict,
    fields: dict,
    warm_start: list[EnergyModel] | None = None,
) -> Fitted:
    """Train a committee, fine-tune ``start``, or train one model, as the config says."""
    resume_one = resume and (output / STATE_FILE).exists()
    common = {"metadata": metadata, "checkpoint_fields": fields}
    data = (splits.train, splits.validation)
    if config.ensemble.size > 1:
        return Fitted(
            train_committee(config, *data, output, resume=resume, starts=warm_start, **common)
        )
    if start is not None:
        return finetune(config, start, *data, splits.old, output, resume=resume_one, **common)
    return Fitted(train_one(config, *data, output, resume=resume_one, **common))


def _store_statistics(
    config: TrainConfig,
    fitted: Fitted,
    splits: Splits,
    start: FinetuneStart | None,
    path: Path,
) -> None:
    """Domain statistics into the checkpoint at ``path``; for a single model also its
    Fisher information (with the replayed old data; added to the start's for online EWC)."""
    model, dtype = fitted.result.model, torch_dtype(config.training.dtype)
    store_domain(model, splits.train, path, dtype, progress=config.training.progress)
    method = config.finetune.method if config.finetune is not None else None
    if config.fisher.structures and not model.member_models():
        store_fisher(
            config,
            model,
            to_graphs(splits.train, model, dtype, "train graphs", progress=config.training.progress)
            + (fitted.old_graphs if method == "replay" else []),
            path,
            previous=start.payload["fisher"] if method == "ewc" else None,
        )


def _metrics(
    config: TrainConfig, fitted: Fitted, splits: Splits, baseline: dict | None, output: Path
) -> dict:
    """The best model's errors on the validation and test sets (and the fine-tuning's
    comparison), written to ``output/metrics.json``."""
    result, dtype = fitted.result, torch_dtype(config.training.dtype)
    val_graphs = to_graphs(
        splits.validation,
        result.model,
        dtype,
        "validation graphs",
        progress=config.training.progress,
    )
    summary = {
        "stop_reason": result.stop_reason,
        "epochs": result.epochs_run,
        "best_validation_loss": result.best_validation_loss,
        "validation": evaluate(result.model, iterate_batches(val_graphs, 16)),
        "test": None,
    }
    if splits.test:
        test_graphs = to_graphs(
            splits.test, result.model, dtype, "test graphs", progress=config.training.progress
        )
        summary["test"] = evaluate(result.model, iterate_batches(test_graphs, 16))
    if fitted.comparison is not None:
        summary["finetune"] = fitted.comparison
    if baseline is not None:
        summary["baseline"] = baseline
    (output / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run_response(config, train, validation, test, *, resume: bool, log) -> RunResult:
    """A response model (dipole, polarisability): trained in one go into ``OUTPUT``."""
    from mlpot.training.response import train_response

    output = Path(config.output)
    if (output / MODEL_FILE).exists() and not resume:
        raise MlpotInputError(
            "a training run is already here; resume it with --resume or choose another "
            "output directory",
            source=str(output),
        )
    if resume:
        log("a response model trains in one go: starting afresh")
    model, summary, val_metrics, test_metrics = train_response(
        config, train=train, validation=validation, test=test, log=log
    )
    result = TrainResult(model, summary["validation_rmse"], summary["epochs"], "fitted")
    return RunResult(output / MODEL_FILE, result, val_metrics, test_metrics)


def run_training(
    config: TrainConfig,
    *,
    train: Structures = (),
    validation: Structures = (),
    test: Structures = (),
    resume: bool = False,
    trust_code: bool = False,
    log: Callable[[str], None] = print,
    warm_start: list[EnergyModel] | None = None,
) -> RunResult:
    """Train as the config says; writes model.pt, training state, history and metrics.json.

    The labelled structures are those of the files in ``config.data`` and those given in
    memory as ``train``, ``validation`` and ``test`` (``ase.Atoms`` with their labels, e.g.
    in a ``SinglePointCalculator``, or :class:`~mlpot.data.dataset.Sample` objects), files
    first. A set given neither way is a fraction of the training pool.

    With ``ensemble.size > 1`` the members are trained one after another (each resumable)
    and ``model.pt`` is their :class:`~mlpot.models.ensembles.Committee`. With ``baseline``
    the model learns label - baseline and its checkpoint names the baseline; with
    ``finetune`` it starts from a checkpoint, and ``metrics.json`` gains the errors on new
    and old data before and after. A single model's checkpoint gets its Fisher information.

    ``resume=True`` with no run in the output directory starts afresh (and says so through
    ``log``); resuming needs the same structures as the killed run. A baseline (the
    config's, or the fine-tuned checkpoint's) that names code (``module:factory``) runs
    only with ``trust_code=True``; that is checked before any data is read.

    ``warm_start``: one model per committee member (e.g. the members of an earlier
    committee on part of the same data) that training continues from instead of from
    scratch; their reference energies and normalisation are kept.
    """
    if config.model.get("name") in RESPONSE_KINDS:
        return _run_response(config, train, validation, test, resume=resume, log=log)
    if warm_start is not None and config.ensemble.size < 2:
        raise ValueError("warm_start needs a committee (ensemble.size > 1)")
    if not (config.data.train or train):
        raise MlpotInputError(
            "no training structures: name files in data.train or pass them in memory",
            field="data.train",
        )
    output = _output_directory(config, resume=resume, log=log)
    dtype = torch_dtype(config.training.dtype)
    start = (
        load_start(config.finetune, dtype, trust_code=trust_code)
        if config.finetune is not None
        else None
    )
    baseline = _checked_baseline(config, start, trust_code=trust_code)
    given = {"train": train, "validation": validation, "test": test}
    splits = _samples(config, given, start, baseline, output, trust_code=trust_code)
    metadata = {
        "n_train": len(splits.train),
        "n_validation": len(splits.validation),
        "n_test": len(splits.test),
        "data": config.data.model_dump(),
        "baseline": baseline,
    }
    if any(given.values()):
        metadata["in_memory"] = {name: len(items) for name, items in given.items()}
    fitted = _fit(
        config,
        splits,
        start,
        output,
        resume=resume,
        metadata=metadata,
        fields={"baseline": baseline},
        warm_start=warm_start,
    )
    if not distributed.current().main:  # under torchrun process 0 writes the statistics
        return RunResult(output / MODEL_FILE, fitted.result, {}, None)
    _store_statistics(config, fitted, splits, start, output / MODEL_FILE)
    summary = _metrics(config, fitted, splits, baseline, output)
    return RunResult(output / MODEL_FILE, fitted.result, summary["validation"], summary["test"])
