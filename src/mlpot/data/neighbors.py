"""Neighbour lists through vesin: periodic, mixed and free boundaries, small cells."""

from __future__ import annotations

import numpy as np
import vesin

from mlpot.errors import MlpotInputError

#: Two atoms closer than this (Å) are treated as overlapping: an input error, not physics.
MIN_DISTANCE = 0.1


def neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    cutoff: float,
    *,
    source: str = "structure",
    frame: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Full (both directions) neighbour list within ``cutoff`` Å.

    Returns ``edge_index (2, E)`` (centre ``i``, neighbour ``j``) and integer
    ``shifts (E, 3)`` with ``r_ij = x_j - x_i + shifts @ cell``. Cells smaller than the
    cutoff give every periodic image that lies within it.
    """
    pbc = np.asarray(pbc, dtype=bool)
    if np.any(pbc):
        lengths = np.linalg.norm(cell, axis=1)
        if np.any(lengths[pbc] < 1e-8) or abs(np.linalg.det(cell)) < 1e-8 and pbc.all():
            raise MlpotInputError(
                f"periodic along {pbc.tolist()} but the cell is degenerate: {cell.tolist()}",
                source=source,
                frame=frame,
                field="cell",
            )
    if cutoff <= 0:  # e.g. a model of per-element constants: no neighbours needed
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, distances = calculator.compute(
        points=positions, box=cell, periodic=pbc.tolist(), quantities="ijSd"
    )
    if len(distances) and distances.min() < MIN_DISTANCE:
        k = int(np.argmin(distances))
        raise MlpotInputError(
            f"atoms {int(i[k])} and {int(j[k])} overlap (distance {distances[k]:.3g} Å "
            f"< {MIN_DISTANCE} Å)",
            source=source,
            frame=frame,
            field="positions",
        )
    edge_index = np.stack([i, j]).astype(np.int64)
    return edge_index, shifts.astype(np.int64)
