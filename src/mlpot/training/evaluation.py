"""Errors of a saved model on labelled files (``mlpot eval``)."""

from __future__ import annotations

import math
from pathlib import Path

from tqdm.auto import tqdm

from mlpot.data.dataset import LabelKeys, read_dataset, sample_to_graph
from mlpot.data.graph import graph_to
from mlpot.data.loader import iterate_batches
from mlpot.models.base import model_dtype
from mlpot.training.delta import delta_targets
from mlpot.training.metrics import evaluate, non_finite
from mlpot.uncertainty.assess import collect_residuals, load_with_statistics, uncertainty_report


def evaluate_files(
    model_path: str | Path,
    paths: list[str],
    *,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    batch_size: int = 16,
    uncertainty: bool = False,
    trust_code: bool = False,
    device: str = "cpu",
) -> dict[str, dict]:
    """Per file: ``{"energy_per_atom"|"forces"|"stress": {"mae", "rmse", "count"}}`` in
    eV/atom, eV/Å, eV/Å³, plus ``n_structures``. Forces and stress where labelled.

    Predictions that are not finite (a broken model, e.g. NaN weights) are reported, not
    dropped: the quantity's ``mae`` and ``rmse`` are None (JSON null) with
    ``"non_finite": k`` (how many of its ``count`` predictions), and the file's entry gets
    ``"non_finite": [quantities]`` (absent when all are finite); uncertainty scores are
    then left out.

    ``uncertainty=True`` adds ``"uncertainty"``: calibrated ECE, miscalibration area, NLL
    and Spearman per quantity (ensembles) and domain figures (checkpoints with domain
    statistics); see :func:`mlpot.uncertainty.assess.uncertainty_report`.

    A delta-learned model is scored as baseline + correction against the labels: the
    baseline is run on every structure. A baseline that names code (``module:factory``) is
    refused unless ``trust_code`` is True.

    The model is evaluated on the torch ``device`` (batches are moved there; the figures
    are plain floats).
    """
    loaded = load_with_statistics(model_path, trust_code=trust_code, device=device)
    model, baseline = loaded.model, loaded.baseline
    keys = LabelKeys(energy=energy_key, forces=forces_key, stress=stress_key)
    report = {}
    for path in paths:
        samples = read_dataset(path, keys, require_forces=False)
        if baseline is not None:  # (baseline + correction) - label = correction - (label - b)
            samples = delta_targets(
                samples, baseline, progress=len(samples) >= 200, trust_code=trust_code
            )
        graphs = [
            sample_to_graph(s, model.cutoff, dtype=model_dtype(model), elements=model.elements)
            for s in tqdm(samples, desc=Path(path).name, leave=False, disable=len(samples) < 200)
        ]
        batches = (graph_to(b, device) for b in iterate_batches(graphs, batch_size))
        metrics = evaluate(model, batches)
        broken = non_finite(metrics)
        report[path] = {**_json_safe(metrics), "n_structures": len(samples)}
        if broken:
            report[path]["non_finite"] = broken
        elif uncertainty:
            residuals = collect_residuals(
                model, graphs, domain=loaded.domain, batch_size=batch_size
            )
            report[path]["uncertainty"] = uncertainty_report(residuals, loaded.calibration)
    return report


def _json_safe(metrics: dict[str, dict]) -> dict[str, dict]:
    """NaN and infinite figures become None (JSON null)."""
    return {
        name: {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in values.items()
        }
        for name, values in metrics.items()
    }
