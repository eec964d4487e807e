"""Domain of applicability: how far an atom's environment is from the training set.

Per-atom feature vectors ``x`` (``F`` numbers per atom: a model's normalised descriptors or
latent features) are compared, element by element, with those of the training atoms:

* **Mahalanobis distance** ``T² = (x - μ)ᵀ Σ⁻¹ (x - μ)`` to the training mean ``μ`` with a
  Ledoit–Wolf shrinkage covariance ``Σ = (1 - α) S + α (tr S / F) I`` (well conditioned
  even when features are collinear or never vary). For Gaussian features ``T²`` follows
  a chi-square distribution with ``F`` degrees of freedom (``t2_threshold``,
  ``χ²_F(confidence)``, the scale of the active-learning T² options). Learned features
  are far from Gaussian (an mpnn's last layer: ``T² > χ²_F`` at the per-structure level
  for a quarter of its own training structures), so ``in_domain`` takes the limit from
  the ``T²`` of the reference atoms themselves, an exponential tail beyond its 95 %
  quantile like ``d_min``'s: the same false-alarm rate whatever the features' shape.
* **Coverage gap** ``d_min``: the Euclidean distance (in normalised feature units) to the
  nearest training atom of the same element, among a random reference subset of at most
  ``max_reference`` atoms. Its threshold is the ``confidence`` quantile of the same
  distance for the reference atoms themselves, each left out in turn.

* **Convex hull** in the leading principal components: the features ``x`` are projected
  on the ``d`` (default 4) principal axes of the element's training features and whitened,
  ``p = (x - μ) V_d Λ_d^(-1/2)``; ``hull_distance`` is the largest signed distance of ``p``
  to the planes of the facets of the convex hull of the training projections: negative
  inside (minus the distance to the nearest facet), positive outside (then a lower bound
  on the distance to the hull), in units of standard deviations. In ``d ≤ 5`` dimensions
  qhull builds the hull of tens of thousands of points in well under a second and only its
  vertices are stored (hundreds); the test is then one product with the facet normals
  (a linear program per atom, or a Delaunay triangulation, would cost more for the same
  answer). The raw test ``hull_distance > 0`` has no level of its own: a fresh atom of the
  training distribution lies outside the hull of ``n`` training atoms with probability
  ``E[vertices]/(n + 1)``, e.g. 3 % for 4000 Gaussian atoms in 4 dimensions (0.4 % for
  50000), so ``in_domain`` tests ``hull_distance`` against a margin: the quantile of the
  distances of a random half of the training atoms to the hull of the other half (an
  exponential tail beyond the 95 % quantile, like ``d_min``). The stored hull holds all
  the training atoms, larger than the half-hull the margin was calibrated on, so that
  test errs on the side of fewer false alarms.

A structure is ``in_domain`` when all its atoms are within every limit. With ``n`` atoms
and ``k`` tests per atom (2, or 3 with the hull) that is ``kn`` tests, so each is made at
the level ``confidence^(1/kn)`` (Šidák): a structure of the training distribution is then
flagged with probability at most ``1 - confidence``, whatever its size (at a fixed
per-atom level, a 21-atom molecule would be flagged ~35 % of the time at 99 % with two
tests); the ``d_min`` and hull limits at such levels come from exponential tails fitted to
the reference distances (:func:`tail_quantile`). The per-atom limits at ``confidence``
itself (:attr:`DomainStatistics.t2_threshold`, ``d_min_threshold``) describe single atoms.
The fitted statistics are plain tensors (:meth:`DomainStatistics.to_dict`), stored in
checkpoints; statistics stored before the hull existed load without it (two tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from scipy.spatial import ConvexHull, QhullError

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
    elements (sorted atomic numbers), ``F`` features. The hull (None in statistics fitted
    before it existed): ``hull_basis (Z, F, d)`` whitened principal axes,
    ``hull_vertices[z] (V_z, d)`` (empty: no hull for that element, too few atoms), and
    ``hull_calibration[z] (B_z,)`` held-out hull distances that set the margin.
    """

    elements: list[int]
    mean: torch.Tensor
    covariance: torch.Tensor
    reference: list[torch.Tensor]
    d_min_threshold: list[float]
    counts: list[int]
    shrinkage: list[float]
    confidence: float
    hull_basis: torch.Tensor | None = None
    hull_vertices: list[torch.Tensor] | None = None
    hull_calibration: list[torch.Tensor] | None = None
    precision: torch.Tensor = field(init=False, repr=False)
    _reference_sq: list[torch.Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.precision = torch.linalg.inv(self.covariance)  # (Z, F, F)
        self._reference_sq = [(r * r).sum(1) for r in self.reference]  # (R_z,) each
        self._tails: list[DistanceTail] | None = None
        self._t2_tail_cache: list[DistanceTail | None] | None = None
        self._facets: list[torch.Tensor | None] | None = None
        self._hull_tails: list[DistanceTail | None] | None = None

    @property
    def has_hull(self) -> bool:
        """True when the statistics include the convex-hull test."""
        return self.hull_basis is not None

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[1])

    @property
    def t2_threshold(self) -> float:
        """``χ²_F`` quantile at ``confidence``: the per-atom ``T²`` limit."""
        return float(stats.chi2.ppf(self.confidence, self.n_features))

    def to_dict(self) -> dict[str, Any]:
        names = ("elements", "mean", "covariance", "reference", "d_min_threshold", "counts")
        out = {
            "method": "mahalanobis+dmin",
            **{k: getattr(self, k) for k in (*names, "shrinkage", "confidence")},
        }
        if self.has_hull:
            out["method"] = "mahalanobis+dmin+hull"
            out.update({k: getattr(self, k) for k in _HULL_KEYS})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainStatistics:
        keys = ("elements", "mean", "covariance", "reference", "d_min_threshold", "counts")
        hull = {k: data[k] for k in _HULL_KEYS if data.get(k) is not None}
        return cls(**{k: data[k] for k in (*keys, "shrinkage", "confidence")}, **hull)

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
            t2[rows] = ((centred @ self.precision[z]) * centred).sum(1)
            d_min[rows] = _nearest_distance(x[rows], self.reference[z], self._reference_sq[z])
        return t2, d_min

    def hull_distance(self, features: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """Signed distance ``(N,)`` of each atom's whitened principal-component projection
        to the convex hull of the training atoms' (module docstring): > 0 outside; inf
        where the element had no training atoms, NaN where it had too few for a hull (no
        test). Requires :attr:`has_hull`."""
        x = features.detach().to(torch.float64).cpu()
        species = self.species(numbers.cpu())
        distance = torch.full((len(x),), float("inf"), dtype=torch.float64)
        for z, facets in enumerate(self._hull_facets()):
            rows = torch.nonzero(species == z).squeeze(1)
            if len(rows) == 0 or self.counts[z] == 0:
                continue
            if facets is None:
                distance[rows] = float("nan")
                continue
            projected = (x[rows] - self.mean[z]) @ self.hull_basis[z]  # (n, d)
            planes = projected @ facets[:, :-1].T + facets[:, -1]  # (n, facets)
            distance[rows] = planes.max(1).values
        return distance

    def score(self, features: torch.Tensor, graph: Graph) -> dict[str, torch.Tensor]:
        """``MAHALANOBIS (N,)``, ``D_MIN (N,)``, ``HULL_DISTANCE (N,)`` (with a hull) and
        ``IN_DOMAIN (S,)`` for a graph (each structure's atoms tested at the Šidák level of
        the module docstring)."""
        t2, d_min = self.score_atoms(features, graph[NUMBERS])
        batch = graph[BATCH].cpu()
        tests = 3 if self.has_hull else 2
        level = self.confidence ** (1.0 / (tests * graph[N_ATOMS].cpu().double().numpy()))
        species = self.species(graph[NUMBERS].cpu())
        t2_limit = self._limits(self._t2_tails(), species, batch, level)
        d_limit = self._limits(self._distance_tails(), species, batch, level)
        inside = (t2 <= t2_limit) & (d_min <= d_limit)  # (N,)
        scores = {outputs.MAHALANOBIS: t2, outputs.D_MIN: d_min}
        if self.has_hull:
            hull = self.hull_distance(features, graph[NUMBERS])
            scores[outputs.HULL_DISTANCE] = hull
            limit = self._limits(self._hull_margin_tails(), species, batch, level)
            inside &= ~(hull > limit)  # NaN (no hull for the element): not tested
        outside = torch.zeros(graph[N_ATOMS].shape[0], dtype=torch.long)
        outside = outside.index_add(0, batch, (~inside).long())
        return {**scores, outputs.IN_DOMAIN: outside == 0}

    def _limits(
        self,
        tails: list[DistanceTail | None],
        species: torch.Tensor,
        batch: torch.Tensor,
        level: np.ndarray,
    ) -> torch.Tensor:
        """Per-atom limit ``(N,)``: the quantile at its structure's ``level`` of its
        element's tail (inf for an element without one)."""
        limit = torch.full(species.shape, float("inf"), dtype=torch.float64)
        for z, tail in enumerate(tails):
            rows = torch.nonzero(species == z).squeeze(1)
            if len(rows) and tail is not None:
                limit[rows] = torch.as_tensor(tail.quantile(level), dtype=torch.float64)[
                    batch[rows]
                ]
        return limit

    def _hull_facets(self) -> list[torch.Tensor | None]:
        """Per element, the hull's facet planes ``(facets, d + 1)`` (unit outward normal,
        offset), rebuilt once from the stored vertices; None without a hull."""
        if self._facets is None:
            self._facets = [_facets(v.numpy()) for v in self.hull_vertices]
        return self._facets

    def _hull_margin_tails(self) -> list[DistanceTail | None]:
        """Per element, the distribution of the held-out hull distances (computed once)."""
        if self._hull_tails is None:
            self._hull_tails = [
                DistanceTail.fit(c.numpy()) if len(c) else None for c in self.hull_calibration
            ]
        return self._hull_tails

    def _t2_tails(self) -> list[DistanceTail | None]:
        """Per element, the distribution of the reference atoms' own ``T²`` (computed
        once; None for an element without training atoms)."""
        if self._t2_tail_cache is None:
            self._t2_tail_cache = []
            for z, r in enumerate(self.reference):
                if len(r) == 0 or self.counts[z] == 0:
                    self._t2_tail_cache.append(None)
                    continue
                centred = r - self.mean[z]
                t2 = torch.einsum("nf,fg,ng->n", centred, self.precision[z], centred)
                self._t2_tail_cache.append(DistanceTail.fit(t2.numpy()))
        return self._t2_tail_cache

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


_HULL_KEYS = ("hull_basis", "hull_vertices", "hull_calibration")

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
        if self.mean_excess == 0.0:
            return np.quantile(self.sorted_samples, np.minimum(level, 1.0))
        beyond = np.log((1 - TAIL_START) / (1 - np.maximum(level, TAIL_START)))
        tail = self.start + self.mean_excess * beyond
        below = level <= TAIL_START
        if not below.any():  # per-structure tests: every level is far in the tail
            return tail
        return np.where(below, np.quantile(self.sorted_samples, np.minimum(level, 1.0)), tail)


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


MAX_HULL_POINTS = 50000  # training atoms per element the hull is built from (at random)


def _facets(vertices: np.ndarray) -> torch.Tensor | None:
    """Facet planes ``(facets, d + 1)`` of the convex hull of ``vertices (V, d)``: rows
    ``(n, b)`` with unit outward normals ``n``, so ``n·p + b`` is the signed distance of
    ``p`` to the plane. None when there are no vertices."""
    if len(vertices) == 0:
        return None
    return torch.as_tensor(ConvexHull(vertices).equations)


def _plane_distance(points: np.ndarray, facets: np.ndarray) -> np.ndarray:
    """Largest signed distance ``(n,)`` of ``points (n, d)`` to the facet planes."""
    return (points @ facets[:, :-1].T + facets[:, -1]).max(1)


def _hull_statistics(
    centred: np.ndarray, dims: int, max_reference: int, rng
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whitened principal axes ``(F, d)``, the hull's vertices ``(V, d)`` and held-out hull
    distances ``(B,)`` of one element's centred features ``(n, F)`` (module docstring).
    Too few atoms, or features spanning fewer than ``d`` dimensions: no vertices (no
    test)."""
    n, f = centred.shape
    basis = np.zeros((f, dims))
    none = (basis, np.zeros((0, dims)), np.zeros(0))
    if n < 2 * (dims + 2):  # both halves must span a d-dimensional hull
        return none
    values, vectors = np.linalg.eigh(centred.T @ centred / (n - 1))  # ascending
    values, vectors = values[::-1][:dims], vectors[:, ::-1][:, :dims]
    if values[-1] <= 1e-12 * max(values[0], 1e-300):
        return none
    basis = vectors / np.sqrt(values)  # (F, d): unit variance along each axis
    if n > MAX_HULL_POINTS:
        centred = centred[rng.choice(n, size=MAX_HULL_POINTS, replace=False)]
    projected = centred @ basis  # (n, d)
    order = rng.permutation(len(projected))
    half, held_out = order[: len(order) // 2], order[len(order) // 2 :][:max_reference]
    try:
        half_hull = ConvexHull(projected[half])
        vertices = projected[ConvexHull(projected).vertices]
    except QhullError:  # degenerate (e.g. all atoms alike): no test
        return none
    calibration = np.sort(_plane_distance(projected[held_out], half_hull.equations))
    return basis, vertices, calibration


def _element_statistics(
    xz: np.ndarray,
    n_features: int,
    confidence: float,
    max_reference: int,
    hull_dims: int,
    rng,
) -> dict[str, Any]:
    """Mean, shrinkage covariance, reference subset, ``d_min`` limit and hull of one
    element."""
    if len(xz) == 0:
        empty = np.zeros((0, n_features))
        return dict(
            mean=np.zeros(n_features),
            cov=np.eye(n_features),
            ref=empty,
            limit=0.0,
            alpha=1.0,
            hull=(np.zeros((n_features, hull_dims)), np.zeros((0, hull_dims)), np.zeros(0)),
        )
    mean = xz.mean(0)
    cov, alpha = ledoit_wolf(xz - mean)
    picks = np.sort(rng.choice(len(xz), size=min(len(xz), max_reference), replace=False))
    ref = torch.as_tensor(xz[picks])  # (R, F)
    limit = 0.0
    if len(ref) > 1:  # leave-one-out nearest distances of the reference atoms
        distances = torch.cdist(ref, ref).fill_diagonal_(float("inf")).min(1).values
        limit = float(tail_quantile(distances.numpy(), confidence))
    hull = _hull_statistics(xz - mean, hull_dims, max_reference, rng) if hull_dims else None
    return dict(mean=mean, cov=cov, ref=ref.numpy(), limit=limit, alpha=alpha, hull=hull)


def fit_domain_statistics(
    features: np.ndarray | torch.Tensor,
    numbers: np.ndarray | torch.Tensor,
    elements: list[int],
    *,
    confidence: float = 0.99,
    max_reference: int = 2000,
    hull_dims: int = 4,
    seed: int = 0,
) -> DomainStatistics:
    """Fit per-element statistics to training features ``(n, F)`` of atoms ``numbers (n,)``
    (``hull_dims``: principal components of the hull test, capped at ``F``; 0: no hull)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(torch.as_tensor(features).detach().cpu(), dtype=np.float64)  # (n, F)
    numbers = np.asarray(torch.as_tensor(numbers).cpu())  # (n,)
    if hull_dims < 0:
        raise ValueError(f"hull_dims must be >= 0, got {hull_dims}")
    hull_dims = min(int(hull_dims), x.shape[1])
    rng = np.random.default_rng(seed)
    elements = sorted(int(z) for z in elements)
    per_element = [
        _element_statistics(x[numbers == z], x.shape[1], confidence, max_reference, hull_dims, rng)
        for z in elements
    ]
    hull = {}
    if hull_dims:
        hull = dict(
            hull_basis=torch.as_tensor(np.stack([e["hull"][0] for e in per_element])),
            hull_vertices=[torch.as_tensor(e["hull"][1]) for e in per_element],
            hull_calibration=[torch.as_tensor(e["hull"][2]) for e in per_element],
        )
    return DomainStatistics(
        elements=elements,
        mean=torch.as_tensor(np.stack([e["mean"] for e in per_element])),
        covariance=torch.as_tensor(np.stack([e["cov"] for e in per_element])),
        reference=[torch.as_tensor(e["ref"]) for e in per_element],
        d_min_threshold=[e["limit"] for e in per_element],
        counts=[int(np.sum(numbers == z)) for z in elements],
        shrinkage=[e["alpha"] for e in per_element],
        confidence=float(confidence),
        **hull,
    )


def fit_domain(
    model: torch.nn.Module,
    graphs: list[Graph],
    *,
    confidence: float = 0.99,
    max_reference: int = 2000,
    hull_dims: int = 4,
    seed: int = 0,
    batch_size: int = 32,
) -> DomainStatistics | None:
    """Domain statistics of ``model``'s features on training ``graphs`` (None when the model
    exposes no features, e.g. Lennard-Jones); ``hull_dims`` as in
    :func:`fit_domain_statistics`."""
    if not model.n_features or not graphs:
        return None
    found = atom_features(model, graphs, batch_size=batch_size)
    return fit_domain_statistics(
        found.features,
        found.numbers,
        list(model.elements),
        confidence=confidence,
        max_reference=max_reference,
        hull_dims=hull_dims,
        seed=seed,
    )
