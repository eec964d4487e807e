"""The labelled structures of a training run: files named in the config and structures
given in memory, split into training, validation and test sets, and made into graphs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from ase import Atoms
from tqdm.auto import tqdm

from mlpot.data.dataset import LabelKeys, Sample, read_dataset, sample_to_graph, samples_from_atoms
from mlpot.data.graph import Graph
from mlpot.data.splits import split_indices
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel
from mlpot.training.config import TrainConfig

#: Structures in memory: ``ase.Atoms`` with their labels (e.g. in a ``SinglePointCalculator``,
#: looked up as in files) or :class:`~mlpot.data.dataset.Sample` objects.
Structures = Sequence[Atoms | Sample]


@dataclass
class Splits:
    """Training, validation and test samples, and the earlier task's samples a fine-tuning
    run replays or is measured on (``old``)."""

    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]
    old: list[Sample] = field(default_factory=list)

    def parts(self) -> tuple[list[Sample], ...]:
        return self.train, self.validation, self.test, self.old


def label_keys(config: TrainConfig) -> LabelKeys:
    return LabelKeys(**config.data.keys.model_dump())


def read_samples(paths: list[str], keys: LabelKeys) -> list[Sample]:
    """Every labelled structure of the files (or databases) ``paths``."""
    samples = []
    for path in paths:
        samples += read_dataset(path, keys)
    return samples


def _gather(paths: list[str], structures: Structures, keys: LabelKeys, name: str) -> list[Sample]:
    """The samples of the files ``paths``, then those given in memory."""
    in_memory = samples_from_atoms(structures, keys, source=f"{name} (in memory)")
    return read_samples(paths, keys) + in_memory


def split_samples(
    config: TrainConfig,
    *,
    train: Structures = (),
    validation: Structures = (),
    test: Structures = (),
) -> Splits:
    """Training, validation and test samples: the config's files plus the structures in
    memory; a set that neither gives is a seeded fraction of the training pool."""
    data, keys = config.data, label_keys(config)
    pool = _gather(data.train, train, keys, "train")
    validation_set = _gather(data.validation, validation, keys, "validation")
    test_set = _gather(data.test, test, keys, "test")
    try:
        split = split_indices(
            len(pool),
            validation=0.0 if validation_set else data.validation_fraction,
            test=0.0 if test_set else data.test_fraction,
            seed=data.split_seed,
        )
    except ValueError as err:
        where = ", ".join(data.train) or "train (in memory)"
        raise MlpotInputError(f"cannot split {len(pool)} structures: {err}", source=where) from None
    return Splits(
        [pool[k] for k in split.train],
        validation_set or [pool[k] for k in split.validation],
        test_set or [pool[k] for k in split.test],
    )


def to_graphs(
    samples: list[Sample], model: EnergyModel, dtype: torch.dtype, desc: str, *, progress: bool
) -> list[Graph]:
    """Labelled graphs of ``samples`` for ``model`` (its cutoff and elements) in ``dtype``;
    a progress bar (``desc``) for 200 structures or more when ``progress``."""
    quiet = not progress or len(samples) < 200
    return [
        sample_to_graph(s, model.cutoff, dtype=dtype, elements=model.elements)
        for s in tqdm(samples, desc=desc, unit="structure", leave=False, disable=quiet)
    ]
