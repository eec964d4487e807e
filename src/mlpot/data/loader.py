"""Shuffled mini-batches of precomputed graphs."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mlpot.data.graph import Graph, collate


def iterate_batches(
    graphs: list[Graph], batch_size: int, *, generator: torch.Generator | None = None
) -> Iterator[Graph]:
    """Yield batches of ``batch_size`` graphs; shuffled when a generator is given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(graphs)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else range(n)
    order = list(order)
    for start in range(0, n, batch_size):
        yield collate([graphs[k] for k in order[start : start + batch_size]])
