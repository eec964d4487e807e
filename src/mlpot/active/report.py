"""The end of ``mlpot learn``: validation against the oracle and the HTML report."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from ase import Atoms


def learning_curve_png(iterations: list[dict]) -> bytes:
    """Test force RMSE and mean calibrated force std against training labels (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [it["n_train"] + it["n_validation"] for it in iterations]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(labels, [it["test_force_rmse"] for it in iterations], "o-", label="test force RMSE")
    ax.plot(
        labels,
        [it["test_mean_force_std"] for it in iterations],
        "s--",
        label="mean calibrated force std",
    )
    ax.set_xlabel("oracle labels in training")
    ax.set_ylabel("eV/Å")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def quick_validation(
    model_path: Path,
    *,
    oracle: str,
    oracle_params: dict,
    trust_code: bool = False,
    system: Atoms,
    temperature: float,
    response: Path | None = None,
    checks: list[str] | None = None,
):
    """The quick physics validation (:data:`mlpot.validation.QUICK`) of the model at
    ``model_path`` against the oracle on ``system`` at ``temperature`` K; a
    :class:`~mlpot.validation.ValidationReport`. Small systems run fastest on one thread.
    ``response``: a dipole model file, for the ``infrared`` check; ``checks``: only these
    (None: every check that fits)."""
    from mlpot.validation import QUICK, run_validation

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_validation(
            model_path,
            oracle=oracle,
            oracle_params=oracle_params,
            trust_code=trust_code,
            system=system,
            temperature=temperature,
            settings=QUICK,
            progress=False,
            response=response,
            checks=checks,
        )
    finally:
        torch.set_num_threads(threads)


def write_learn_report(report, *, figures: dict, iterations: list[dict], directory: Path) -> Path:
    """Write ``report`` (a validation of the final model) with the run's ``figures`` and
    its learning curve; returns the HTML path."""
    from mlpot.validation import write_report

    report.extra_figures["active_learning"] = figures
    report.extra_plots["learning curve"] = learning_curve_png(iterations)
    return write_report(report, directory).html
