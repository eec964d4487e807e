""":func:`run_validation`: every check that fits the system, model against oracle."""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from mlpot.data.systems import System, resolve_system
from mlpot.errors import MlpotInputError
from mlpot.md import MDUnstable
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import load_checkpoint, model_from_payload
from mlpot.validation.checks import CHECKS, Check, not_applicable
from mlpot.validation.context import ValidationContext
from mlpot.validation.oracle import OracleSpec, resolve_oracle
from mlpot.validation.report import as_png
from mlpot.validation.result import CheckResult, ValidationReport, failed, skipped
from mlpot.validation.settings import (
    Tolerances,
    ValidationSettings,
    as_dict,
    make_settings,
    make_tolerances,
)


def _load_model(
    model: EnergyModel | str | Path, *, trust_code: bool = False, device: str = "cpu"
) -> tuple[EnergyModel, dict[str, Any], float, dict[str, Any] | None]:
    """A float64 copy of the model on ``device``, its description, its force-uncertainty
    scale, and the baseline oracle spec of a delta-learned checkpoint (None otherwise)."""
    scale, source, baseline = 1.0, "in memory", None
    if isinstance(model, str | Path):
        source = str(model)
        payload = load_checkpoint(model, trust_code=trust_code)
        calibration = payload.get("calibration") or {}
        scale = float(calibration.get("forces_scale", 1.0))
        baseline = payload.get("baseline")
        model = model_from_payload(payload, source=source)
    elif isinstance(model, EnergyModel):
        model = copy.deepcopy(model)  # the caller's model keeps its dtype and mode
    else:
        raise MlpotInputError(
            f"model must be an EnergyModel or a checkpoint path, got {type(model).__name__}",
            field="model",
        )
    model = model.to(device=device, dtype=torch.float64).eval()
    description = {
        "name": model.name,
        "elements": list(model.elements),
        "cutoff_A": model.cutoff,
        "parameters": sum(p.numel() for p in model.parameters()),
        "committee_members": len(model.member_models()),
        "source": source,
        "baseline": baseline,
    }
    return model, description, scale, baseline


def _check_elements(system: System, model: EnergyModel) -> None:
    unknown = sorted(set(system.atoms.numbers.tolist()) - set(model.elements))
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in model.elements)
        raise MlpotInputError(
            f"system {system.name} has element(s) {names} the model does not know "
            f"(it knows {known})",
            field="system",
        )


def _select(names: Sequence[str] | None, ctx: ValidationContext) -> list[Check]:
    """The checks to run; an explicit request the oracle cannot serve is an error."""
    if names is None:
        return list(CHECKS.values())
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown or not names:
        raise MlpotInputError(
            f"unknown check(s) {unknown}; choose from {list(CHECKS)}", field="checks"
        )
    selected = [CHECKS[n] for n in CHECKS if n in names]
    for check in selected:
        if check.oracle_stress and ctx.system.is_crystal and not ctx.oracle.has_stress:
            raise MlpotInputError(
                f"check {check.name!r} needs the oracle's stress, and oracle "
                f"{ctx.oracle.name!r} cannot compute stress; drop it or use another oracle",
                field="checks",
            )
    return selected


def _run_one(check: Check, ctx: ValidationContext) -> CheckResult:
    reason = not_applicable(check, ctx)
    if reason is not None:
        return skipped(check.name, reason)
    started = time.perf_counter()
    try:
        result = check.run(ctx)
    except MlpotInputError as err:
        if err.field != "positions":
            raise
        # the model drove atoms onto each other (relaxation, NEB): a failure of the model
        result = failed(check.name, f"structure collapsed: {err}")
    except MDUnstable as err:
        result = failed(check.name, str(err))
    except Exception as err:  # noqa: BLE001 - a check that crashes fails, the report goes on
        result = failed(
            check.name,
            f"{err.__class__.__name__}: {err}",
            {"traceback": traceback.format_exc()},
        )
    result.wall_time_s = time.perf_counter() - started
    return result


def run_validation(
    model: EnergyModel | str | Path,
    *,
    oracle: OracleSpec = "emt",
    oracle_params: dict[str, Any] | None = None,
    system: str | Path | Atoms | System = "cu-fcc",
    temperature: float = 300.0,
    checks: Sequence[str] | str | None = None,
    settings: ValidationSettings | dict | None = None,
    tolerances: Tolerances | dict | None = None,
    uncertainty_scale: float | None = None,
    extra_figures: dict[str, Any] | None = None,
    extra_plots: dict[str, Any] | None = None,
    progress: bool = True,
    trust_code: bool = False,
    device: str = "cpu",
    response: Any = None,
) -> ValidationReport:
    """Validate ``model`` against ``oracle`` on ``system``, running every check that fits.

    Args:
        model: an :class:`~mlpot.models.base.EnergyModel` (copied, evaluated in float64) or
            the path of a checkpoint.
        oracle: oracle name (``emt``, ``lj``, ``xtb``, ``pyscf``, ``module:factory``), a dict
            ``{"name": ..., **params}``, or any ASE calculator.
        oracle_params: parameters of a named oracle.
        system: built-in name (``cu-fcc``, ``ethanol``), structure file, or ``ase.Atoms``.
        temperature: target temperature of the thermal checks, K.
        checks: names to run (default: all; those that do not fit are skipped with a
            reason). An explicit check that needs the oracle's stress is an error when the
            oracle has none.
        settings, tolerances: :class:`ValidationSettings` / :class:`Tolerances` or dicts of
            their arguments.
        uncertainty_scale: calibration factor of a committee's standard deviations
            (default: ``calibration.forces_scale`` of the checkpoint, else 1).
        extra_figures: JSON-able figures to carry into the report (e.g. calibration).
        extra_plots: name -> PNG bytes, PNG path or matplotlib figure, shown in the report.
        progress: show progress bars.
        trust_code: allow a ``module:factory`` oracle, or a checkpoint baseline that names
            one, to import and run code (only for a model or config you trust).
        device: torch device the model is evaluated on (its calculator, Hessian and
            committee spread); the figures are computed on the CPU from its results.
        response: a dipole model (or the path of one, from ``mlpot response``) for the
            harmonic IR check of molecules.

    Returns:
        A :class:`ValidationReport`; write it with :func:`mlpot.validation.write_report`.
    """
    _check_temperature(temperature)
    if isinstance(response, str | Path):
        from mlpot.models.checkpoint import load_response_model

        response = load_response_model(response, dtype="float64")
    ctx, model_info = _context(
        model,
        response=response,
        oracle=oracle,
        oracle_params=oracle_params,
        system=system,
        temperature=float(temperature),
        settings=settings,
        tolerances=tolerances,
        uncertainty_scale=uncertainty_scale,
        progress=progress,
        trust_code=trust_code,
        device=device,
    )
    selected = _select(checks, ctx)
    plots = {name: as_png(value, name) for name, value in (extra_plots or {}).items()}
    started = time.perf_counter()
    results = _run_checks(selected, ctx, progress=progress)
    wall_time_s = time.perf_counter() - started
    return _report(ctx, model_info, results, wall_time_s, dict(extra_figures or {}), plots)


def _check_temperature(temperature: Any) -> None:
    if (
        not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or (temperature <= 0)
    ):
        raise MlpotInputError(
            f"must be a positive number of K, got {temperature!r}", field="temperature"
        )


def _context(
    model: EnergyModel | str | Path,
    *,
    oracle: OracleSpec,
    oracle_params: dict[str, Any] | None,
    system: str | Path | Atoms | System,
    temperature: float,
    settings: ValidationSettings | dict | None,
    tolerances: Tolerances | dict | None,
    uncertainty_scale: float | None,
    progress: bool,
    trust_code: bool,
    device: str = "cpu",
    response: Any = None,
) -> tuple[ValidationContext, dict[str, Any]]:
    """The checks' context (resolved in this order: model, system, oracle) and the model's
    description for the report."""
    energy_model, model_info, scale, baseline = _load_model(
        model, trust_code=trust_code, device=device
    )
    target = resolve_system(system)
    _check_elements(target, energy_model)
    reference = resolve_oracle(oracle, oracle_params, trust_code=trust_code)
    ctx = ValidationContext(
        energy_model,
        reference,
        target,
        temperature,
        make_settings(settings),
        make_tolerances(tolerances),
        progress=progress,
        uncertainty_scale=scale if uncertainty_scale is None else float(uncertainty_scale),
        baseline=baseline,
        trust_code=trust_code,
        device=device,
        response=response,
    )
    return ctx, model_info


def _run_checks(
    selected: list[Check], ctx: ValidationContext, *, progress: bool
) -> list[CheckResult]:
    """Run ``selected`` in order, one progress bar over them."""
    results = []
    bar = tqdm(selected, desc="validation", unit="check", disable=not progress)
    for check in bar:
        bar.set_postfix_str(check.name)
        results.append(_run_one(check, ctx))
    return results


def _report(
    ctx: ValidationContext,
    model_info: dict[str, Any],
    results: list[CheckResult],
    wall_time_s: float,
    extra_figures: dict[str, Any],
    extra_plots: dict[str, bytes],
) -> ValidationReport:
    model_info["uncertainty_scale"] = ctx.uncertainty_scale
    return ValidationReport(
        model=model_info,
        oracle=ctx.oracle.to_dict(),
        system=ctx.system.to_dict(),
        temperature_K=ctx.temperature_K,
        checks=results,
        wall_time_s=wall_time_s,
        extra_figures=extra_figures,
        extra_plots=extra_plots,
        settings={"settings": as_dict(ctx.settings), "tolerances": as_dict(ctx.tolerances)},
    )
