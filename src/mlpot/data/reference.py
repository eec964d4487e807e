"""Per-element reference energies by least squares: ``E_s ≈ Σ_Z n_{s,Z} e_Z``."""

from __future__ import annotations

import numpy as np


def fit_reference_energies(
    compositions: list[dict[int, int]] | np.ndarray, energies: np.ndarray, elements: list[int]
) -> np.ndarray:
    """Least-squares per-element energies (eV), in the order of ``elements``.

    ``compositions`` are element counts per structure. With too few distinct compositions
    to determine every element the minimum-norm solution is returned, which still
    reproduces the mean energy of each composition exactly.
    """
    if isinstance(compositions, np.ndarray):
        counts = compositions.astype(np.float64)
    else:
        extra = sorted({z for c in compositions for z in c} - set(elements))
        if extra:
            raise ValueError(f"compositions contain elements {extra} not in {elements}")
        counts = np.array([[c.get(z, 0) for z in elements] for c in compositions], dtype=float)
    energies = np.asarray(energies, dtype=np.float64)
    if counts.shape != (len(energies), len(elements)):
        raise ValueError(
            f"compositions {counts.shape} do not match {len(energies)} energies "
            f"and {len(elements)} elements"
        )
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return solution
