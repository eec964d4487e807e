"""Choosing which flagged configurations to label: a batch strategy over the candidates
(the thresholds that flag them: :class:`mlpot.active.exploration.Thresholds`).

Pure functions of arrays, so they are tested without models or oracles.

* ``max_variance`` — the most uncertain first;
* ``d_optimal`` — greedy maximisation of ``log det(λ I + Σ_k x_k x_kᵀ)`` over the chosen
  feature vectors: each pick adds the most new information given those already picked, so
  near-duplicates from one trajectory are not labelled twice;
* ``random`` — a uniform draw (the baseline to compare with).
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("max_variance", "d_optimal", "random")


def greedy_log_det(features: np.ndarray, k: int, *, regularisation: float = 1e-3) -> list[int]:
    """Indices of ``k`` rows of ``features (C, F)`` chosen greedily for maximal log-det."""
    x = np.asarray(features, dtype=np.float64)
    n, f = x.shape
    inverse = np.eye(f) / regularisation  # (F, F): (λ I)^-1, updated by Sherman-Morrison
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        gain = np.einsum("cf,fg,cg->c", x, inverse, x)  # (C,): x^T A^-1 x
        gain[~available] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        available[best] = False
        v = inverse @ x[best]
        inverse -= np.outer(v, v) / (1.0 + x[best] @ v)
    return chosen


def select_batch(
    strategy: str,
    k: int,
    *,
    uncertainty: np.ndarray,
    features: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Pick up to ``k`` of ``C`` candidates. ``uncertainty (C,)``, ``features (C, F)``."""
    n = len(uncertainty)
    if strategy == "max_variance":
        return [int(i) for i in np.argsort(-np.asarray(uncertainty))[:k]]
    if strategy == "random":
        rng = rng or np.random.default_rng()
        return sorted(int(i) for i in rng.choice(n, size=min(k, n), replace=False))
    if strategy == "d_optimal":
        if features is None:
            raise ValueError("d_optimal needs feature vectors")
        scale = np.linalg.norm(features, axis=1).mean() or 1.0
        return greedy_log_det(np.asarray(features) / scale, k)
    raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
