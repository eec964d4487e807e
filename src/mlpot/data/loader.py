"""Shuffled mini-batches of precomputed graphs."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mlpot.data.graph import Graph, collate


def iterate_batches(
    graphs: list[Graph], batch_size: int, *, generator: torch.Generator | None = None
) -> Iterator[Graph]:
    """Yield batches of ``batch_size`` graphs; shuffled when a generator is given."""
    for batch in iterate_shards(graphs, batch_size, generator=generator):
        yield collate(batch)


def iterate_shards(
    graphs: list[Graph],
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world: int = 1,
) -> Iterator[list[Graph]]:
    """The graphs of process ``rank`` (of ``world``) in every batch of ``batch_size``:
    every ``world``-th graph of the batch from ``rank`` on (possibly none). All processes
    draw the same order from generators in the same state."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(graphs)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else range(n)
    order = list(order)
    for start in range(0, n, batch_size):
        yield [graphs[k] for k in order[start : start + batch_size][rank::world]]
