"""Choosing which flagged configurations to label: a batch strategy over the candidates
(the thresholds that flag them: :class:`mlpot.active.exploration.Thresholds`).

Pure functions of arrays, so they are tested without models or oracles.

* ``max_variance`` — the most uncertain first;
* ``d_optimal`` — greedy maximisation of ``log det(λ I + Σ_k x_k x_kᵀ)`` over the feature
  vectors of the data labelled or requested so far and of the picks: each pick adds the
  most information not already there, so near-duplicates of the training data, of earlier
  requests or of each other are not labelled;
* ``random`` — a uniform draw among *every* checked configuration of the exploration,
  whatever its uncertainty (the loop makes them all candidates: ``Thresholds.every_check``):
  the baseline that isolates what the query strategy adds, with the same exploration and
  batch sizes.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("max_variance", "d_optimal", "random")


def greedy_log_det(
    features: np.ndarray,
    k: int,
    *,
    regularisation: float = 1e-3,
    known: np.ndarray | None = None,
) -> list[int]:
    """Indices of ``k`` rows of ``features (C, F)`` chosen greedily for maximal
    ``log det(λ I + Σ_known x xᵀ + Σ_chosen x xᵀ)``: each pick the one with the most
    information not already in the ``known (P, F)`` rows (the data labelled or requested
    before) or in the picks before it."""
    x = np.asarray(features, dtype=np.float64)
    n, f = x.shape
    information = regularisation * np.eye(f)
    if known is not None and len(known):
        prior = np.asarray(known, dtype=np.float64)
        information += prior.T @ prior
    inverse = np.linalg.inv(information)  # (F, F), updated by Sherman-Morrison
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
    known: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Pick up to ``k`` of ``C`` candidates. ``uncertainty (C,)``, ``features (C, F)``;
    ``known (P, F)``: the features of what is labelled or requested already
    (``d_optimal`` picks what adds to them)."""
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
        prior = None if known is None else np.asarray(known) / scale
        return greedy_log_det(np.asarray(features) / scale, k, known=prior)
    raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
