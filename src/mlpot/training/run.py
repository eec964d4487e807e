"""``mlpot train`` as a library call: data -> splits -> reference energies -> model -> fit.

With a ``baseline`` the targets are label - baseline (:mod:`mlpot.training.delta`); with
``finetune`` the model starts from a checkpoint (:mod:`mlpot.training.finetune`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mlpot.calculators.oracles import ORACLES, check_oracle_name
from mlpot.data.dataset import LabelKeys, Sample, elements_of, read_dataset, sample_to_graph
from mlpot.data.graph import Graph
from mlpot.data.loader import iterate_batches
from mlpot.data.reference import fit_reference_energies
from mlpot.data.splits import split_indices
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import load_model, save_model, torch_dtype, update_checkpoint
from mlpot.models.committee import Committee
from mlpot.models.offsets import AtomicOffsets
from mlpot.models.registry import build_model
from mlpot.models.sum import SumModel
from mlpot.physics.derivatives import predict
from mlpot.physics.outputs import ENERGY
from mlpot.training.config import TrainConfig, with_elements
from mlpot.training.delta import CACHE_FILE, delta_splits
from mlpot.training.finetune import (
    FinetuneStart,
    ReplaySampler,
    combine_fisher,
    diagonal_fisher,
    ewc_penalty,
    fisher_subset,
    load_start,
    replay_count,
)
from mlpot.training.metrics import evaluate
from mlpot.training.trainer import MODEL_FILE, STATE_FILE, TrainResult, train
from mlpot.uncertainty.domain import fit_domain


@dataclass
class RunResult:
    """Where the model is, how training went, and the best model's errors."""

    model_path: Path
    train: TrainResult
    validation_metrics: dict
    test_metrics: dict | None


def read_samples(paths: list[str], keys: LabelKeys) -> list[Sample]:
    samples = []
    for path in paths:
        samples += read_dataset(path, keys)
    return samples


def split_samples(config: TrainConfig) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Training, validation and test samples: given files, or seeded fractions of train."""
    data = config.data
    keys = LabelKeys(**data.keys.model_dump())
    pool = read_samples(data.train, keys)
    validation = read_samples(data.validation, keys)
    test = read_samples(data.test, keys)
    try:
        split = split_indices(
            len(pool),
            validation=0.0 if validation else data.validation_fraction,
            test=0.0 if test else data.test_fraction,
            seed=data.split_seed,
        )
    except ValueError as err:
        raise MlpotInputError(
            f"cannot split {len(pool)} structures: {err}", source=", ".join(data.train)
        ) from None
    train_set = [pool[k] for k in split.train]
    validation = validation or [pool[k] for k in split.validation]
    test = test or [pool[k] for k in split.test]
    return train_set, validation, test


def reference_offsets(
    samples: list[Sample], elements: list[int], known: np.ndarray | float = 0.0
) -> AtomicOffsets:
    """Per-element energies, least squares on the labels minus ``known`` energies per
    structure (those of the parameter-free terms, see :func:`fixed_terms`)."""
    counts = np.array([[np.sum(s.atoms.numbers == z) for z in elements] for s in samples])
    energies = np.array([s.energy for s in samples]) - known
    return AtomicOffsets(elements, fit_reference_energies(counts, energies, elements).tolist())


def fixed_terms(model: EnergyModel) -> list[EnergyModel]:
    """The terms of ``model`` without trainable parameters (a fixed-charge Coulomb, ZBL,
    dispersion, ...): their energies are known before training, so the reference energies
    are fitted to what is left, and nothing is counted twice."""
    terms = list(model.terms) if isinstance(model, SumModel) else [model]
    return [t for t in terms if not any(p.requires_grad for p in t.parameters())]


def fixed_energies(terms: list[EnergyModel], graphs: list[Graph]) -> np.ndarray:
    """Energy ``(n_structures,)`` of the given terms on each graph, eV."""
    return np.array(
        [sum(float(predict(t, g, forces=False)[ENERGY]) for t in terms) for g in graphs]
    )


def to_graphs(
    samples: list[Sample], model: EnergyModel, dtype: torch.dtype, desc: str
) -> list[Graph]:
    return [
        sample_to_graph(s, model.cutoff, dtype=dtype, elements=model.elements)
        for s in tqdm(samples, desc=desc, unit="structure", leave=False, disable=len(samples) < 200)
    ]


def build_initial_model(
    config: TrainConfig, train_set: list[Sample]
) -> tuple[EnergyModel, list[Graph]]:
    """Least-squares offsets + the configured learned model, with statistics fitted on the
    training graphs (returned too, so they are built once)."""
    torch.manual_seed(config.training.seed)
    learned = build_model(with_elements(config.model, elements_of(train_set)))
    dtype = torch_dtype(config.training.dtype)
    learned = learned.to(dtype)
    graphs = to_graphs(train_set, learned, dtype, "train graphs")
    fixed = fixed_terms(learned)
    known = fixed_energies(fixed, graphs) if fixed else 0.0
    model = SumModel([reference_offsets(train_set, learned.elements, known), learned]).to(dtype)
    model.fit_statistics(graphs)
    return model, graphs


def _train_one(
    config: TrainConfig,
    train_set,
    validation,
    output: Path,
    *,
    resume: bool,
    metadata: dict,
    checkpoint_fields: dict | None = None,
) -> TrainResult:
    model, train_graphs = build_initial_model(config, train_set)
    dtype = torch_dtype(config.training.dtype)
    val_graphs = to_graphs(validation, model, dtype, "validation graphs")
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


def _bootstrap(samples: list[Sample], seed: int) -> list[Sample]:
    picks = np.random.default_rng(seed).integers(0, len(samples), len(samples))
    return [samples[k] for k in picks]


def _train_committee(
    config: TrainConfig,
    train_set,
    validation,
    output: Path,
    *,
    resume: bool,
    metadata: dict,
    checkpoint_fields: dict | None = None,
) -> TrainResult:
    """Train ``ensemble.size`` members in ``output/member_k`` and save their committee."""
    members, results = [], []
    for k in range(config.ensemble.size):
        member_config = config.model_copy(deep=True)
        member_config.training.seed = config.training.seed + k
        member_dir = output / f"member_{k}"
        done = (member_dir / "done").exists()
        member_train = (
            _bootstrap(train_set, config.training.seed + k)
            if config.ensemble.bootstrap
            else train_set
        )
        if done:
            members.append(load_model(member_dir / MODEL_FILE))
            continue
        result = _train_one(
            member_config,
            member_train,
            validation,
            member_dir,
            resume=resume and (member_dir / STATE_FILE).exists(),
            metadata={**metadata, "member": k},
            checkpoint_fields=checkpoint_fields,
        )
        (member_dir / "done").write_text(result.stop_reason)
        members.append(result.model)
        results.append(result)
    committee = Committee(members)
    save_model(
        output / MODEL_FILE,
        committee,
        training={
            **metadata,
            "ensemble": {"size": config.ensemble.size, "bootstrap": config.ensemble.bootstrap},
        },
        **(checkpoint_fields or {}),
    )
    history = results[-1].history if results else []
    return TrainResult(
        committee,
        min((r.best_validation_loss for r in results), default=float("nan")),
        max((r.epochs_run for r in results), default=0),
        "committee of " + str(config.ensemble.size),
        history,
    )


def store_domain(
    model: EnergyModel, train_set: list[Sample], path: Path, dtype: torch.dtype
) -> None:
    """Fit the domain-of-applicability statistics of ``model`` on the training set and
    store them in the checkpoint at ``path`` (models without features have none)."""
    domain = fit_domain(model, to_graphs(train_set, model, dtype, "domain statistics"))
    if domain is not None:
        update_checkpoint(path, domain=domain.to_dict())


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


def _baseline_cache(config: TrainConfig, output: Path) -> Path:
    if config.baseline is not None and config.baseline.cache is not None:
        return Path(config.baseline.cache)
    return output / CACHE_FILE


def _errors(model: EnergyModel, graphs: list[Graph]) -> dict | None:
    return evaluate(model, iterate_batches(graphs, 16)) if graphs else None


def _finetune(
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
) -> tuple[TrainResult, dict, list[Graph]]:
    """Fine-tune ``start.model`` on the new data; returns the result, the old/new errors
    before and after, and the old graphs."""
    tune, dtype = config.finetune, torch_dtype(config.training.dtype)
    model = start.model
    graphs = to_graphs(train_set, model, dtype, "train graphs")
    val_graphs = to_graphs(validation, model, dtype, "validation graphs")
    old_graphs = to_graphs(old, model, dtype, "old graphs")
    before = {"new_validation": _errors(model, val_graphs), "old": _errors(model, old_graphs)}
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
    return result, {"method": tune.method, "before": before, "after": after}, old_graphs


def store_fisher(
    config: TrainConfig,
    model: EnergyModel,
    graphs: list[Graph],
    path: Path,
    previous: dict | None = None,
) -> None:
    """Compute the Fisher information of ``model`` on (a subset of) ``graphs`` and store it
    in the checkpoint at ``path`` (added to ``previous`` for online EWC)."""
    if config.fisher.structures == 0 or isinstance(model, Committee) or not graphs:
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


def run_training(
    config: TrainConfig,
    *,
    resume: bool = False,
    trust_code: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train as the config says; writes model.pt, training state, history and metrics.json.

    With ``ensemble.size > 1`` the members are trained one after another (each resumable)
    and ``model.pt`` is their :class:`~mlpot.models.committee.Committee`. With ``baseline``
    the model learns label - baseline and its checkpoint names the baseline; with
    ``finetune`` it starts from a checkpoint, and ``metrics.json`` gains the errors on new
    and old data before and after. A single model's checkpoint gets its Fisher information.

    ``resume=True`` with no run in the output directory starts afresh (and says so through
    ``log``). A baseline (the config's, or the fine-tuned checkpoint's) that names code
    (``module:factory``) runs only with ``trust_code=True``; that is checked before any
    data is read.
    """
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
    dtype = torch_dtype(config.training.dtype)
    start = (
        load_start(config.finetune, dtype, trust_code=trust_code)
        if config.finetune is not None
        else None
    )
    baseline = _baseline_spec(config, start)
    if baseline is not None and baseline["name"] not in ORACLES:
        try:
            check_oracle_name(baseline["name"], trust_code=trust_code)
        except MlpotInputError as err:
            raise MlpotInputError(
                f"delta-learning baseline: {err.reason}", field="baseline"
            ) from None
    train_set, validation, test = split_samples(config)
    old = []
    if start is not None and config.finetune.replay_data:
        old = read_samples(config.finetune.replay_data, LabelKeys(**config.data.keys.model_dump()))
    if baseline is not None:
        train_set, validation, test, old = delta_splits(
            (train_set, validation, test, old),
            baseline,
            cache=_baseline_cache(config, output),
            progress=config.training.progress,
            trust_code=trust_code,
        )
    metadata = {
        "n_train": len(train_set),
        "n_validation": len(validation),
        "n_test": len(test),
        "data": config.data.model_dump(),
        "baseline": baseline,
    }
    fields = {"baseline": baseline}
    resume_one = resume and (output / STATE_FILE).exists()
    tuned, old_graphs = None, []
    if config.ensemble.size > 1:
        result = _train_committee(
            config,
            train_set,
            validation,
            output,
            resume=resume,
            metadata=metadata,
            checkpoint_fields=fields,
        )
    elif start is not None:
        result, tuned, old_graphs = _finetune(
            config,
            start,
            train_set,
            validation,
            old,
            output,
            resume=resume_one,
            metadata=metadata,
            checkpoint_fields=fields,
        )
    else:
        result = _train_one(
            config,
            train_set,
            validation,
            output,
            resume=resume_one,
            metadata=metadata,
            checkpoint_fields=fields,
        )
    store_domain(result.model, train_set, output / MODEL_FILE, dtype)
    method = config.finetune.method if config.finetune is not None else None
    if config.fisher.structures and not isinstance(result.model, Committee):
        store_fisher(
            config,
            result.model,
            to_graphs(train_set, result.model, dtype, "train graphs")
            + (old_graphs if method == "replay" else []),
            output / MODEL_FILE,
            previous=start.payload["fisher"] if method == "ewc" else None,
        )
    val_graphs = to_graphs(validation, result.model, dtype, "validation graphs")
    summary = {
        "stop_reason": result.stop_reason,
        "epochs": result.epochs_run,
        "best_validation_loss": result.best_validation_loss,
        "validation": evaluate(result.model, iterate_batches(val_graphs, 16)),
        "test": None,
    }
    if test:
        test_graphs = to_graphs(test, result.model, dtype, "test graphs")
        summary["test"] = evaluate(result.model, iterate_batches(test_graphs, 16))
    if tuned is not None:
        summary["finetune"] = tuned
    if baseline is not None:
        summary["baseline"] = baseline
    (output / "metrics.json").write_text(json.dumps(summary, indent=2))
    return RunResult(output / MODEL_FILE, result, summary["validation"], summary["test"])
