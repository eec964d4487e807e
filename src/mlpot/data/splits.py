"""Seeded train/validation/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    train: list[int]
    validation: list[int]
    test: list[int]


def split_indices(n: int, *, validation: float, test: float = 0.0, seed: int = 0) -> Split:
    """Shuffle ``range(n)`` with ``seed`` and cut off fractions for validation and test.

    Each non-zero fraction gets at least one item; training keeps at least one.
    """
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise ValueError(f"bad split fractions: validation={validation}, test={test}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = max(1, round(validation * n)) if validation > 0 else 0
    n_test = max(1, round(test * n)) if test > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} structures are too few for this split")
    return Split(
        train=sorted(order[n_val + n_test :]),
        validation=sorted(order[:n_val]),
        test=sorted(order[n_val : n_val + n_test]),
    )
