"""Committee spread on validation structures, and the reliability (coverage) curve.

The spread comes from :func:`mlpot.uncertainty.ensemble.member_predictions`; this module
only reshapes it for the report.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from scipy.special import erfinv

from mlpot.data.graph import atoms_to_graph, graph_to
from mlpot.models.base import EnergyModel, model_device
from mlpot.physics import outputs
from mlpot.uncertainty.ensemble import member_predictions


def force_spread(committee: EnergyModel, atoms: Atoms, scale: float = 1.0) -> np.ndarray:
    """Standard deviation of each force component over the members, ``(N, 3)`` eV/Å,
    evaluated on the committee's device.

    ``scale`` is the calibration factor of the standard deviations.
    """
    graph = atoms_to_graph(
        atoms, committee.cutoff, dtype=torch.float64, elements=committee.elements
    )
    members = member_predictions(committee, graph_to(graph, model_device(committee)), forces=True)
    return scale * members[outputs.FORCES].std(0, unbiased=True).cpu().numpy()  # (N, 3)


def reliability_curve(
    abs_error: np.ndarray, std: np.ndarray, levels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Expected and observed coverage of Gaussian confidence intervals.

    For each confidence level ``p`` the interval is ``± z_p σ`` with ``z_p = √2 erf⁻¹(p)``;
    the observed coverage is the fraction of errors inside it. A calibrated model lies on
    the diagonal.
    """
    if levels is None:
        levels = np.linspace(0.05, 0.95, 19)
    z = np.sqrt(2.0) * erfinv(levels)  # (L,)
    ratio = np.asarray(abs_error) / np.maximum(np.asarray(std), 1e-12)  # (P,)
    observed = (ratio[None, :] <= z[:, None]).mean(axis=1)  # (L,)
    return levels, observed
