"""Radial distribution functions of model MD and oracle MD, and the distance between them.

For a crystal ``g(r)`` is normalised by the ideal-gas pair density (``g → 1`` far away);
for a finite system the pair-distance distribution is normalised per pair (``∫ p dr = 1``
over the distances below ``rdf_rmax``). Both histograms are smoothed by a Gaussian of one
bin, and their distance is ``∫|g_model - g_oracle| dr / ∫ g_oracle dr``.

Structures are taken every ``structure_interval`` steps of the two Langevin runs. The same
distance between the first and the second half of the oracle's run is the sampling-noise
floor (``rdf_noise``, about √2 times the noise of the model-oracle distance, since each half
has half the structures): a distance far above it is physics, one near it is statistics. So
the bound is the tolerance, or, where the runs are too short for it, twice the distance
sampling noise alone gives (``rdf_distance ≤ max(tolerance, √2 rdf_noise)``, reported as
``rdf_allowed``): a 9-atom molecule over 0.3 ps has ``rdf_noise`` 0.10 to 0.18, and a model
whose forces are within 3 % of the oracle's shows distances of 0.05 to 0.17 there, while a
crystal's noise is small and its bound is the tolerance.
"""

from __future__ import annotations

import numpy as np
import vesin
from ase import Atoms
from scipy.ndimage import gaussian_filter1d

from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "rdf"


def radial_distribution(
    frames: list[Atoms], rmax: float, bins: int, *, periodic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres ``(B,)`` Å and ``g(r)`` ``(B,)`` averaged over ``frames``."""
    edges = np.linspace(0.0, rmax, bins + 1)
    counts = np.zeros(bins)
    pairs = vesin.NeighborList(cutoff=float(rmax), full_list=True)  # each pair twice
    for atoms in frames:
        (distances,) = pairs.compute(
            points=atoms.positions,
            box=atoms.cell.array,
            periodic=atoms.pbc.tolist(),
            quantities="d",
        )
        counts += np.histogram(distances, edges)[0]
    centres, width = 0.5 * (edges[1:] + edges[:-1]), edges[1] - edges[0]
    n_atoms = len(frames[0])
    if periodic:
        density = n_atoms / frames[0].get_volume()
        shell = 4.0 * np.pi * centres**2 * width
        g = counts / (len(frames) * n_atoms * density * shell)
    else:
        total = counts.sum()
        g = counts / (total * width) if total > 0 else counts
    return centres, gaussian_filter1d(g, 1.0, mode="nearest")


def rdf_distance(g_model: np.ndarray, g_oracle: np.ndarray) -> float:
    """``∫|g_model - g_oracle| dr / ∫ g_oracle dr`` on a common grid."""
    return float(np.sum(np.abs(g_model - g_oracle)) / np.sum(g_oracle))


def _first_peak(r: np.ndarray, g: np.ndarray) -> float:
    return float(r[int(np.argmax(g))])


def run(ctx: ValidationContext) -> CheckResult:
    s = ctx.settings
    periodic = ctx.system.is_crystal
    structures = {which: ctx.nvt(which).structures() for which in (MODEL, ORACLE)}

    def rdf(frames: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
        return radial_distribution(frames, s.rdf_rmax, s.rdf_bins, periodic=periodic)

    r, g_model = rdf(structures[MODEL])
    g_oracle = rdf(structures[ORACLE])[1]
    half = len(structures[ORACLE]) // 2
    noise = rdf_distance(rdf(structures[ORACLE][:half])[1], rdf(structures[ORACLE][half:])[1])
    figures = {
        "rdf_distance": rdf_distance(g_model, g_oracle),
        "rdf_noise": noise,
        "first_peak_model_A": _first_peak(r, g_model),
        "first_peak_oracle_A": _first_peak(r, g_oracle),
        "n_structures_model": len(structures[MODEL]),
        "n_structures_oracle": len(structures[ORACLE]),
    }
    allowed = max(ctx.tolerances.rdf_distance, np.sqrt(2.0) * noise)
    figures["rdf_allowed"] = allowed
    tolerance = {"rdf_distance": Bound(allowed)}
    details = {
        "r_A": r,
        "g_model": g_model,
        "g_oracle": g_oracle,
        "normalisation": "g(r)" if periodic else "pair-distance distribution (1/Å)",
    }
    return judged(NAME, figures, tolerance, details)
