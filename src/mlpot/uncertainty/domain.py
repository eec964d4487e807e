"""Domain of applicability: how far an atom's environment is from the training set.

Per-atom feature vectors ``x`` (``F`` numbers per atom: a model's normalised descriptors or
latent features) are compared, element by element, with those of the training atoms:

* **Mahalanobis distance** ``T² = (x - μ)ᵀ Σ⁻¹ (x - μ)`` to the training mean ``μ`` with a
  Ledoit–Wolf shrinkage covariance ``Σ = (1 - α) S + α (tr S / F) I`` (well conditioned
  even when features are collinear or never vary). For Gaussian features ``T²`` follows
  a chi-square distribution with ``F`` degrees of freedom: an atom is outside when
  ``T² > χ²_F(confidence)``.
* **Coverage gap** ``d_min``: the Euclidean distance (in normalised feature units) to the
  nearest training atom of the same element, among a random reference subset of at most
  ``max_reference`` atoms. Its threshold is the ``confidence`` quantile of the same
  distance for the reference atoms themselves, each left out in turn.

A structure is ``in_domain`` when all its atoms are within both limits. With ``n`` atoms
that is ``2n`` tests, so each is made at the level ``confidence^(1/2n)`` (Šidák): a
structure of the training distribution is then flagged with probability at most
``1 - confidence``, whatever its size (at a fixed per-atom level, a 21-atom molecule would
be flagged ~35 % of the time at 99 %); the ``d_min`` limits at such levels come from an
exponential tail fitted to the reference distances (:func:`tail_quantile`). The per-atom
limits at ``confidence`` itself
(:attr:`DomainStatistics.t2_threshold`, ``d_min_threshold``) describe single atoms. The
fitted statistics are plain tensors (:meth:`DomainStatistics.to_dict`), stored in
checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import special, stats

from mlpot.data.graph import BATCH, N_ATOMS, NUMBERS, Graph
from mlpot.physics import outputs
from mlpot.uncertainty.features import atom_features


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrinkage covariance of centred samples ``x (n, F)`` and its shrinkage ``α``.

    Ledoit & Wolf, *J. Multivar. Anal.* 88, 365 (2004): ``α`` minimises the expected
    Frobenius error towards the scaled identity.
    """
    n, f = x.shape
    sample = x.T @ x / n  # (F, F)
    mu = np.trace(sample) / f
    if mu <= 0:  # every feature constant: only the identity is left
        return np.eye(f), 1.0
    x2 = x**2
    delta = np.sum(sample**2) - 2 * mu * np.trace(sample) + f * mu**2
    beta = (np.sum((x2.T @ x2) / n) - np.sum(sample**2)) / n
    alpha = 0.0 if delta <= 0 else float(np.clip(beta / delta, 0.0, 1.0))
    return (1 - alpha) * sample + alpha * mu * np.eye(f), alpha


@dataclass
class DomainStatistics:
    """Per-element feature statistics of the training atoms (see module docstring).

    Shapes: ``mean (Z, F)``, ``covariance (Z, F, F)``, ``reference[z] (R_z, F)``; ``Z``
    elements (sorted atomic numbers), ``F`` features.
    """

    elements: list[int]
    mean: torch.Tensor
    covariance: torch.Tensor
    reference: list[torch.Tensor]
    d_min_threshold: list[float]
    counts: list[int]
    shrinkage: list[float]
    confidence: float
    precision: torch.Tensor = field(init=False, repr=False)
    _reference_sq: list[torch.Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.precision = torch.linalg.inv(self.covariance)  # (Z, F, F)
        self._reference_sq = [(r * r).sum(1) for r in self.reference]  # (R_z,) each
        self._tails: list[DistanceTail] | None = None

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[1])

    @property
    def t2_threshold(self) -> float:
        """``χ²_F`` quantile at ``confidence``: the per-atom ``T²`` limit."""
        return float(stats.chi2.ppf(self.confidence, self.n_features))

    def to_dict(self) -> dict[str, Any]:
        names = ("elements", "mean", "covariance", "reference", "d_min_threshold", "counts")
        return {
            "method": "mahalanobis+dmin",
            **{k: getattr(self, k) for k in (*names, "shrinkage", "confidence")},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainStatistics:
        keys = ("elements", "mean", "covariance", "reference", "d_min_threshold", "counts")
        return cls(**{k: data[k] for k in (*keys, "shrinkage", "confidence")})

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Index of each atomic number in ``elements`` ``(N,)`` (-1 when unknown)."""
        known = torch.tensor(self.elements, dtype=numbers.dtype, device=numbers.device)
        match = numbers[:, None] == known[None, :]  # (N, Z)
        return torch.where(match.any(1), match.long().argmax(1), -1)

    def score_atoms(
        self, features: torch.Tensor, numbers: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``T² (N,)`` and ``d_min (N,)`` of per-atom features ``(N, F)``; inf where the
        element had no training atoms."""
        x = features.detach().to(torch.float64).cpu()
        species = self.species(numbers.cpu())
        t2 = torch.full((len(x),), float("inf"), dtype=torch.float64)
        d_min = torch.full((len(x),), float("inf"), dtype=torch.float64)
        for z in range(len(self.elements)):
            rows = torch.nonzero(species == z).squeeze(1)
            if len(rows) == 0 or self.counts[z] == 0:
                continue
            centred = x[rows] - self.mean[z]  # (n, F)
            t2[rows] = torch.einsum("nf,fg,ng->n", centred, self.precision[z], centred)
            d_min[rows] = _nearest_distance(x[rows], self.reference[z], self._reference_sq[z])
        return t2, d_min

    def score(self, features: torch.Tensor, graph: Graph) -> dict[str, torch.Tensor]:
        """``MAHALANOBIS (N,)``, ``D_MIN (N,)`` and ``IN_DOMAIN (S,)`` for a graph (each
        structure's atoms tested at the Šidák level of the module docstring)."""
        t2, d_min = self.score_atoms(features, graph[NUMBERS])
        batch = graph[BATCH].cpu()
        level = self.confidence ** (0.5 / graph[N_ATOMS].cpu().double().numpy())  # (S,)
        t2_limit = torch.as_tensor(special.chdtri(self.n_features, 1.0 - level))[batch]  # χ²_F
        species = self.species(graph[NUMBERS].cpu())
        d_limit = torch.zeros_like(d_min)
        for z, tail in enumerate(self._distance_tails()):
            rows = torch.nonzero(species == z).squeeze(1)
            if len(rows):
                d_limit[rows] = torch.as_tensor(tail.quantile(level))[batch[rows]]
        inside = (t2 <= t2_limit) & (d_min <= d_limit)  # (N,)
        outside = torch.zeros(graph[N_ATOMS].shape[0], dtype=torch.long)
        outside = outside.index_add(0, batch, (~inside).long())
        return {outputs.MAHALANOBIS: t2, outputs.D_MIN: d_min, outputs.IN_DOMAIN: outside == 0}

    def _distance_tails(self) -> list[DistanceTail]:
        """Per element, the distribution of the reference atoms' leave-one-out nearest
        distances (computed once)."""
        if self._tails is None:
            self._tails = [
                DistanceTail.fit(
                    torch.cdist(r, r).fill_diagonal_(float("inf")).min(1).values.numpy()
                    if len(r) > 1
                    else np.zeros(1)
                )
                for r in self.reference
            ]
        return self._tails


TAIL_START = 0.95  # quantile above which distances are described by an exponential tail


@dataclass
class DistanceTail:
    """Quantiles of a sample of distances: empirical up to ``TAIL_START``; beyond, an
    exponential fitted to the excesses over that quantile (peaks over threshold), since a few
    thousand samples cannot resolve the 1 - 10⁻⁴ quantiles that per-structure tests need."""

    sorted_samples: np.ndarray
    start: float  # the TAIL_START quantile
    mean_excess: float  # 0: no sample above the start (the empirical quantiles throughout)

    @classmethod
    def fit(cls, samples: np.ndarray) -> DistanceTail:
        ordered = np.sort(np.asarray(samples, dtype=np.float64))
        start = float(np.quantile(ordered, TAIL_START))
        excess = ordered[ordered > start] - start
        return cls(ordered, start, float(excess.mean()) if len(excess) else 0.0)

    def quantile(self, level: np.ndarray | float) -> np.ndarray:
        level = np.asarray(level, dtype=np.float64)
        empirical = np.quantile(self.sorted_samples, np.minimum(level, 1.0))
        if self.mean_excess == 0.0:
            return empirical
        beyond = np.log((1 - TAIL_START) / (1 - np.maximum(level, TAIL_START)))
        return np.where(level <= TAIL_START, empirical, self.start + self.mean_excess * beyond)


def tail_quantile(samples: np.ndarray, level: np.ndarray | float) -> np.ndarray:
    """:meth:`DistanceTail.quantile` of ``samples`` fitted afresh."""
    return DistanceTail.fit(samples).quantile(level)


def _nearest_distance(
    x: torch.Tensor, reference: torch.Tensor, reference_sq: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """Distance from each row of ``x (n, F)`` to its nearest row of ``reference (R, F)``
    (``reference_sq (R,)``: squared norms of the reference rows), one matrix product per
    chunk of rows: ``|x - r|² = |x|² - 2 x·r + |r|²``."""
    parts = []
    for k in range(0, len(x), chunk):
        rows = x[k : k + chunk]
        d2 = (rows * rows).sum(1, keepdim=True) - 2 * rows @ reference.T + reference_sq  # (n, R)
        parts.append(d2.min(1).values.clamp(min=0).sqrt())
    return torch.cat(parts) if parts else x.new_zeros(0)


def _element_statistics(
    xz: np.ndarray, n_features: int, confidence: float, max_reference: int, rng
) -> dict[str, Any]:
    """Mean, shrinkage covariance, reference subset and ``d_min`` limit of one element."""
    if len(xz) == 0:
        empty = np.zeros((0, n_features))
        return dict(
            mean=np.zeros(n_features), cov=np.eye(n_features), ref=empty, limit=0.0, alpha=1.0
        )
    mean = xz.mean(0)
    cov, alpha = ledoit_wolf(xz - mean)
    picks = np.sort(rng.choice(len(xz), size=min(len(xz), max_reference), replace=False))
    ref = torch.as_tensor(xz[picks])  # (R, F)
    limit = 0.0
    if len(ref) > 1:  # leave-one-out nearest distances of the reference atoms
        distances = torch.cdist(ref, ref).fill_diagonal_(float("inf")).min(1).values
        limit = float(tail_quantile(distances.numpy(), confidence))
    return dict(mean=mean, cov=cov, ref=ref.numpy(), limit=limit, alpha=alpha)


def fit_domain_statistics(
    features: np.ndarray | torch.Tensor,
    numbers: np.ndarray | torch.Tensor,
    elements: list[int],
    *,
    confidence: float = 0.99,
    max_reference: int = 2000,
    seed: int = 0,
) -> DomainStatistics:
    """Fit per-element statistics to training features ``(n, F)`` of atoms ``numbers (n,)``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(torch.as_tensor(features).detach().cpu(), dtype=np.float64)  # (n, F)
    numbers = np.asarray(torch.as_tensor(numbers).cpu())  # (n,)
    rng = np.random.default_rng(seed)
    elements = sorted(int(z) for z in elements)
    per_element = [
        _element_statistics(x[numbers == z], x.shape[1], confidence, max_reference, rng)
        for z in elements
    ]
    return DomainStatistics(
        elements=elements,
        mean=torch.as_tensor(np.stack([e["mean"] for e in per_element])),
        covariance=torch.as_tensor(np.stack([e["cov"] for e in per_element])),
        reference=[torch.as_tensor(e["ref"]) for e in per_element],
        d_min_threshold=[e["limit"] for e in per_element],
        counts=[int(np.sum(numbers == z)) for z in elements],
        shrinkage=[e["alpha"] for e in per_element],
        confidence=float(confidence),
    )


def fit_domain(
    model: torch.nn.Module,
    graphs: list[Graph],
    *,
    confidence: float = 0.99,
    max_reference: int = 2000,
    seed: int = 0,
    batch_size: int = 32,
) -> DomainStatistics | None:
    """Domain statistics of ``model``'s features on training ``graphs`` (None when the model
    exposes no features, e.g. Lennard-Jones)."""
    if not model.n_features or not graphs:
        return None
    found = atom_features(model, graphs, batch_size=batch_size)
    return fit_domain_statistics(
        found.features,
        found.numbers,
        list(model.elements),
        confidence=confidence,
        max_reference=max_reference,
        seed=seed,
    )
