"""``mlpot train`` as a library call: data -> splits -> reference energies -> model -> fit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mlpot.data.dataset import LabelKeys, Sample, elements_of, read_dataset, sample_to_graph
from mlpot.data.graph import Graph
from mlpot.data.loader import iterate_batches
from mlpot.data.reference import fit_reference_energies
from mlpot.data.splits import split_indices
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.models.offsets import AtomicOffsets
from mlpot.models.registry import build_model
from mlpot.models.sum import SumModel
from mlpot.training.config import TrainConfig, with_elements
from mlpot.training.metrics import evaluate
from mlpot.training.trainer import MODEL_FILE, STATE_FILE, TrainResult, train


@dataclass
class RunResult:
    model_path: Path
    train: TrainResult
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


def reference_offsets(samples: list[Sample], elements: list[int]) -> AtomicOffsets:
    counts = np.array([[np.sum(s.atoms.numbers == z) for z in elements] for s in samples])
    energies = np.array([s.energy for s in samples])
    return AtomicOffsets(elements, fit_reference_energies(counts, energies, elements).tolist())


def to_graphs(
    samples: list[Sample], model: EnergyModel, dtype: torch.dtype, desc: str
) -> list[Graph]:
    return [
        sample_to_graph(s, model.cutoff, dtype=dtype, elements=model.elements)
        for s in tqdm(samples, desc=desc, unit="structure", leave=False, disable=len(samples) < 200)
    ]


def build_initial_model(config: TrainConfig, train_set: list[Sample]) -> EnergyModel:
    """Offsets fitted by least squares + the configured learned model, statistics fitted."""
    torch.manual_seed(config.training.seed)
    learned = build_model(with_elements(config.model, elements_of(train_set)))
    model = SumModel([reference_offsets(train_set, learned.elements), learned])
    dtype = getattr(torch, config.training.dtype)
    model = model.to(dtype)
    graphs = to_graphs(train_set, model, dtype, "statistics")
    model.fit_statistics(graphs)
    return model


def run_training(config: TrainConfig, *, resume: bool = False) -> RunResult:
    """Train as the config says; writes model.pt, training_state.pt, history and metrics."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    resume = resume and (output / STATE_FILE).exists()
    if not resume and (output / STATE_FILE).exists():
        raise MlpotInputError(
            "a training run is already here; resume it with --resume or "
            "choose another output directory",
            source=str(output),
        )
    train_set, validation, test = split_samples(config)
    dtype = getattr(torch, config.training.dtype)
    model = build_initial_model(config, train_set)
    train_graphs = to_graphs(train_set, model, dtype, "train graphs")
    val_graphs = to_graphs(validation, model, dtype, "validation graphs")
    metadata = {
        "n_train": len(train_set),
        "n_validation": len(validation),
        "n_test": len(test),
        "data": config.data.model_dump(),
    }
    result = train(
        model,
        train_graphs,
        val_graphs,
        options=config.training,
        loss=config.loss,
        output_dir=output,
        resume=resume,
        metadata=metadata,
    )
    test_metrics = None
    if test:
        test_graphs = to_graphs(test, result.model, dtype, "test graphs")
        test_metrics = evaluate(result.model, iterate_batches(test_graphs, 16))
    summary = {
        "stop_reason": result.stop_reason,
        "epochs": result.epochs_run,
        "best_validation_loss": result.best_validation_loss,
        "validation": result.history[-1]["validation"] if result.history else None,
        "test": test_metrics,
    }
    (output / "metrics.json").write_text(json.dumps(summary, indent=2))
    return RunResult(output / MODEL_FILE, result, test_metrics)
