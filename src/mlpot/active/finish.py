"""The end of a run: the final model file, the validation report, and ``learn.json``, the
summary a resumed finished run reads back (:class:`LearnResult`).

Every file is written whole (a temporary file, then a rename): a kill never leaves half of
one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from mlpot.active.config import LearnConfig
from mlpot.active.report import validate_and_report
from mlpot.active.store import FAILURE, REQUEST, SETUP_FAILURE, TEST, Store, hidden_oracle_fraction

MODEL_FILE = "model.pt"
SUMMARY_FILE = "learn.json"
REPORT_DIRECTORY = "report"


@dataclass
class LearnResult:
    """What ``mlpot learn`` produced and how it went."""

    model_path: Path
    store_path: Path | str  # the SQLite file, or the database URL (``store``)
    stop_reason: str
    iterations: list[dict] = field(default_factory=list)
    oracle_calls: dict[str, int] = field(default_factory=dict)
    failures: int = 0  # configurations the oracle gave up on
    setup_failures: int = 0  # failed oracle calls of the driver's own set-up work
    hidden_oracle_fraction: float = float("nan")  # of oracle time, behind exploration
    hidden_oracle_fraction_driver: float = float("nan")  # behind exploration or training
    report_path: Path | None = None
    already_finished: bool = False  # a --resume of a finished run: nothing was done


def finish(
    config: LearnConfig,
    store: Store,
    *,
    reason: str,
    store_path: Path | str,
    setup_calls: int,
    system: Atoms,
    trust_code: bool = False,
    log: Callable[[str], None] = print,
) -> LearnResult:
    """Install the last model as ``model.pt``, validate it on ``system`` when the config
    asks, and write ``learn.json``; the run stopped for ``reason``."""
    out = Path(config.output)
    models = store.models()
    model_path = _install_model(Path(models[-1]["path"]), out / MODEL_FILE)
    overlap = hidden_oracle_fraction(store)
    result = LearnResult(
        model_path=model_path,
        store_path=store_path,
        stop_reason=reason,
        iterations=[{"version": m["version"], **m["metrics"]} for m in models],
        oracle_calls={
            "labels": store.budget_used(),
            "setup": setup_calls,
            "test": store.count(REQUEST, reason=TEST),
        },
        failures=store.count(FAILURE),
        setup_failures=store.count(SETUP_FAILURE),
        hidden_oracle_fraction=overlap.behind_exploration,
        hidden_oracle_fraction_driver=overlap.behind_driver,
    )
    if config.validation:
        log("validating the final model against the oracle ...")
        result.report_path = _validate(config, result, system, trust_code=trust_code)
        log(f"report: {result.report_path}")
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
    _write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    log(f"stopped: {reason}; model {model_path}")
    return result


def read_summary(out: Path, reason: str) -> LearnResult | None:
    """The result of the finished run in ``out`` (stopped for ``reason``), marked
    ``already_finished``; None when it has no summary (killed while validating)."""
    summary_path = out / SUMMARY_FILE
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    report = summary.get("report_path")
    return LearnResult(
        model_path=Path(summary["model_path"]),
        store_path=summary["store_path"],
        stop_reason=reason,
        iterations=summary["iterations"],
        oracle_calls=summary["oracle_calls"],
        failures=summary["failures"],
        setup_failures=summary.get("setup_failures", 0),
        hidden_oracle_fraction=summary["hidden_oracle_fraction"],
        hidden_oracle_fraction_driver=summary["hidden_oracle_fraction_driver"],
        report_path=Path(report) if report else None,
        already_finished=True,
    )


def _install_model(final: Path, model_path: Path) -> Path:
    tmp = model_path.with_name(f"{model_path.name}.{os.getpid()}.tmp")
    shutil.copyfile(final, tmp)
    os.replace(tmp, model_path)  # never half a model
    return model_path


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _validate(config: LearnConfig, result: LearnResult, system: Atoms, *, trust_code: bool) -> Path:
    """The quick validation of the final model against the oracle; the report's path."""
    return validate_and_report(
        result.model_path,
        oracle=config.oracle.name,
        oracle_params=dict(config.oracle.params),
        trust_code=trust_code,
        system=system,
        temperature=config.test.temperature,
        figures={
            "stop_reason": result.stop_reason,
            "oracle_calls": result.oracle_calls,
            "failures": result.failures,
            "hidden_oracle_fraction": result.hidden_oracle_fraction,
            "iterations": result.iterations,
        },
        iterations=result.iterations,
        directory=Path(config.output) / REPORT_DIRECTORY,
    )
