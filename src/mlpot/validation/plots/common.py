"""Matplotlib set-up (non-interactive) and figure -> PNG bytes."""

from __future__ import annotations

import io
from typing import Any

from mlpot.errors import MlpotInputError

MODEL_COLOUR = "#d95f02"
ORACLE_COLOUR = "#1b9e77"
DPI = 90


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or a clear error when it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise MlpotInputError(
            "the validation report needs matplotlib: pip install 'mlpot[report]'",
            field="report",
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure(n_panels: int = 1, *, width: float = 4.2, height: float = 3.4):
    """A row of ``n_panels`` axes; returns ``(fig, [axes])``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return fig, list(axes[0])


def to_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards)."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(fig)
    return buffer.getvalue()


def parity(ax, reference, predicted, *, label: str, unit: str) -> None:
    """Scatter of model against oracle with the diagonal."""
    ax.scatter(reference, predicted, s=6, alpha=0.5, color=MODEL_COLOUR, edgecolors="none")
    lo = min(min(reference), min(predicted))
    hi = max(max(reference), max(predicted))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.3", lw=0.8)
    ax.set_xlabel(f"oracle {label} ({unit})")
    ax.set_ylabel(f"model {label} ({unit})")
    ax.set_title(label)
