"""Validation against physics: checks of a model against an oracle, and the report.

from mlpot.validation import climbing_image_neb, run_validation, write_report

report = run_validation("model.pt", oracle="emt", system="cu-fcc", temperature=300)
write_report(report, "validation")        # validation/report.html + report.json
print(report.passed, [(c.name, c.status) for c in report.checks])

band = climbing_image_neb(initial, final, EMT, images=5)  # any relaxed pair, any calculator
print(band.barrier, band.converged)                     # eV
"""

from mlpot.data.systems import BUILTIN_SYSTEMS, System, resolve_system
from mlpot.validation.checks import CHECKS
from mlpot.validation.checks.neb import NEBResult, climbing_image_neb
from mlpot.validation.hessian import finite_difference_hessian, model_hessian, rigid_modes
from mlpot.validation.report import ReportFiles, render_html, write_report
from mlpot.validation.result import Bound, CheckResult, ValidationReport
from mlpot.validation.runner import run_validation
from mlpot.validation.settings import QUICK, Tolerances, ValidationSettings

__all__ = [
    "BUILTIN_SYSTEMS",
    "CHECKS",
    "QUICK",
    "Bound",
    "CheckResult",
    "NEBResult",
    "ReportFiles",
    "System",
    "Tolerances",
    "ValidationReport",
    "ValidationSettings",
    "climbing_image_neb",
    "finite_difference_hessian",
    "model_hessian",
    "render_html",
    "resolve_system",
    "rigid_modes",
    "run_validation",
    "write_report",
]
