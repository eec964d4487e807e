"""The end of a run: the final model file, the validation report, and ``learn.json``, the
summary a resumed finished run reads back (:class:`LearnResult`). A run that a budget
stopped says which checks fail and how to continue it.

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
from mlpot.active.report import quick_validation, write_learn_report
from mlpot.active.response_model import train_response_model
from mlpot.active.steering import verdict_of
from mlpot.active.store import FAILURE, REQUEST, SETUP_FAILURE, TEST, Store, hidden_oracle_fraction

MODEL_FILE = "model.pt"
INFRARED = "infrared"  # the validation check of a dipole model
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
    validation_passed: bool | None = None  # the final model's checks (None: not validated)
    failing_checks: dict = field(default_factory=dict)  # check -> figures, bounds, reason
    continue_hint: str = ""  # how to go on, when a budget stopped the run
    elapsed_s: float = 0.0  # the run's clock at its stop, s (all sessions)
    #: the response model (config ``response``): ResponseResult's fields, or None
    response: dict | None = None


def finish(
    config: LearnConfig,
    store: Store,
    *,
    reason: str,
    store_path: Path | str,
    setup_calls: int,
    system: Atoms,
    trust_code: bool = False,
    report=None,
    budget: str | None = None,
    elapsed_s: float = 0.0,
    log: Callable[[str], None] = print,
) -> LearnResult:
    """Install the last model as ``model.pt``, train the response model when the config
    has a ``response`` section (:mod:`mlpot.active.response_model`), validate them on
    ``system`` when the config asks (``report``: the loop's validation of that model,
    reused; the ``infrared`` check of a dipole model added to it), and write
    ``learn.json``; the run stopped for ``reason``, ``budget`` (``time`` or ``oracle``)
    when a budget stopped it."""
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
        elapsed_s=elapsed_s,
    )
    dipole = None
    if config.response is not None:
        response = train_response_model(config.response, store, out, seed=config.seed, log=log)
        result.response = response.to_dict() if response else None
        if response is not None and response.kind == "dipole":
            dipole = Path(response.path)
    if config.validation:
        oracle = {
            "oracle": config.oracle.name,
            "oracle_params": dict(config.oracle.params),
            "trust_code": trust_code,
            "system": system,
            "temperature": config.test.temperature,
        }
        if report is None:
            log("validating the final model against the oracle ...")
            report = quick_validation(model_path, response=dipole, **oracle)
        elif dipole is not None:  # the loop validated this model, without the dipoles
            log("validating the dipole model's IR intensities against the oracle ...")
            extra = quick_validation(model_path, response=dipole, checks=[INFRARED], **oracle)
            report.checks.extend(extra.checks)
        verdict = verdict_of(
            report,
            models[-1]["version"],
            config.test.temperature,
            test_force_rmse=models[-1]["metrics"].get("test_force_rmse"),
            target_force_rmse=config.stop.target_force_rmse,
        )
        result.validation_passed, result.failing_checks = verdict.passed, verdict.failing
        result.report_path = _write_report(config, result, report)
        log(f"report: {result.report_path}")
    if budget is not None and not result.validation_passed:
        result.continue_hint = continue_hint(config, budget)
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
    _write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    log(f"stopped: {reason}; model {model_path}")
    return result


def continue_hint(config: LearnConfig, budget: str) -> str:
    """How to go on with a run that the ``time`` or ``oracle`` budget stopped."""
    stop = config.stop
    if budget == "time":
        key, value = "max_time_s", 2 * (stop.max_time_s or 0)
    else:
        key, value = "oracle_budget", 2 * stop.oracle_budget
    return (
        f"to continue, raise the budget (e.g. stop: {{{key}: {value:g}}}) in a learn config "
        f"with the same output ({config.output}) and run `mlpot learn CONFIG --resume`"
    )


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
        validation_passed=summary.get("validation_passed"),
        failing_checks=summary.get("failing_checks", {}),
        continue_hint=summary.get("continue_hint", ""),
        elapsed_s=summary.get("elapsed_s", 0.0),
        response=summary.get("response"),
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


def _write_report(config: LearnConfig, result: LearnResult, report) -> Path:
    """The report of the final model's validation, with the run's figures; its path."""
    return write_learn_report(
        report,
        figures={
            "stop_reason": result.stop_reason,
            "oracle_calls": result.oracle_calls,
            "failures": result.failures,
            "hidden_oracle_fraction": result.hidden_oracle_fraction,
            "iterations": result.iterations,
            "elapsed_s": result.elapsed_s,
            "response": result.response,
        },
        iterations=result.iterations,
        directory=Path(config.output) / REPORT_DIRECTORY,
    )
