"""The validation report: one self-contained HTML page (PNG plots inline) plus a JSON file.

The page has no external resources. A short inline script counts the images the browser
decoded into ``body[data-images-decoded]`` (for automated rendering checks); the page reads
the same without it.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import package_version
from mlpot.validation.result import CheckResult, ValidationReport

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;
 padding:1.5rem;color:#222;background:#fff;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
 border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:4px;padding:0 .45rem;font-size:.8rem;
 font-weight:600;color:#fff;vertical-align:middle}
.pass{background:#1a7f37}.fail{background:#cf222e}.skip{background:#8c959f}
tr.judged td{font-weight:600}tr.bad td{color:#cf222e}
figure{margin:.8rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}.reason{color:#555;font-style:italic}
pre{background:#f6f8fa;padding:.5rem;overflow:auto;font-size:.8rem}
"""

SCRIPT = """
window.addEventListener('load',function(){var n=0,imgs=document.images;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){n++;}}
document.body.setAttribute('data-images-decoded',String(n));});
"""


@dataclass
class ReportFiles:
    """Where :func:`write_report` put the page and the figures."""

    html: Path
    json: Path


def as_png(value: Any, name: str = "plot") -> bytes:
    """PNG bytes from bytes, a PNG file path, or a matplotlib figure."""
    if hasattr(value, "savefig"):
        from mlpot.validation.plots.common import to_png

        return to_png(value)
    if isinstance(value, str | Path):
        path = Path(value)
        if not path.is_file():
            raise MlpotInputError("plot file not found", source=str(path), field=name)
        value = path.read_bytes()
    if not isinstance(value, bytes) or not value.startswith(PNG_MAGIC):
        raise MlpotInputError(
            "extra plot must be PNG bytes, a PNG file or a matplotlib figure", field=name
        )
    return value


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{status.upper()}</span>'


def _summary(report: ValidationReport) -> str:
    rows = []
    for c in report.checks:
        judged = "; ".join(
            f"{k} = {_num(c.figures.get(k))} ({b.describe()})" for k, b in c.tolerance.items()
        )
        rows.append(
            f'<tr data-check="{_e(c.name)}" data-status="{c.status}">'
            f'<td><a href="#check-{_e(c.name)}">{_e(c.name)}</a></td><td>{_badge(c.status)}</td>'
            f"<td>{_e(judged) or '<span class=reason>' + _e(c.reason) + '</span>'}</td>"
            f'<td class="num">{c.wall_time_s:.1f}</td></tr>'
        )
    return (
        '<table id="checks"><thead><tr><th>check</th><th>status</th>'
        "<th>judged figures (tolerance)</th><th>time (s)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="reason">Times include shared work (the two Langevin runs, relaxations) '
        "in the check that needed it first.</p>"
    )


def _figures_table(c: CheckResult) -> str:
    failed = set(c.failed_figures())
    rows = []
    for key, value in c.figures.items():
        bound = c.tolerance.get(key)
        cls = ("judged bad" if key in failed else "judged") if bound else ""
        rows.append(
            f'<tr class="{cls}"><td>{_e(key)}</td><td class="num">{_num(value)}</td>'
            f"<td>{_e(bound.describe()) if bound else ''}</td></tr>"
        )
    return (
        '<table class="figures"><thead><tr><th>figure</th><th>value</th><th>tolerance</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _section(c: CheckResult, title: str) -> str:
    from mlpot.validation.plots import plots_of

    parts = [f'<section class="check" id="check-{_e(c.name)}">']
    parts.append(f"<h2>{_e(title)} {_badge(c.status)}</h2>")
    if c.reason:
        parts.append(f'<p class="reason">{_e(c.reason)}</p>')
    if c.figures:
        parts.append(_figures_table(c))
    notes = [v for k, v in c.details.items() if k == "note" and isinstance(v, str)]
    parts += [f'<p class="reason">{_e(n)}</p>' for n in notes]
    parts += [_img(png, caption) for caption, png in plots_of(c)]
    parts.append("</section>")
    return "".join(parts)


def _header(report: ValidationReport) -> str:
    counts = report.counts()
    verdict = "pass" if report.passed else "fail"
    m, o, s = report.model, report.oracle, report.system
    meta = [
        ("model", f"{m.get('name')} ({m.get('source')}), cutoff {m.get('cutoff_A')} Å"),
        ("oracle", f"{o.get('name')} {o.get('params') or ''}"),
        ("system", f"{s.get('name')}: {s.get('description')}"),
        ("temperature", f"{report.temperature_K:g} K"),
        ("wall time", f"{report.wall_time_s:.1f} s"),
    ]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta)
    return (
        f"<header><h1>mlpot validation: {_e(s.get('name'))} against {_e(o.get('name'))}</h1>"
        f'<p id="verdict">{_badge(verdict)} {counts["pass"]} passed, {counts["fail"]} failed, '
        f'{counts["skip"]} skipped</p><table id="meta">{rows}</table></header>'
    )


def _extras(report: ValidationReport) -> str:
    if not report.extra_figures and not report.extra_plots:
        return ""
    parts = ['<section id="extra"><h2>Additional figures</h2>']
    if report.extra_figures:
        text = json.dumps(report.to_dict()["extra_figures"], indent=2)
        parts.append(f"<pre>{_e(text)}</pre>")
    parts += [_img(png, name) for name, png in report.extra_plots.items()]
    parts.append("</section>")
    return "".join(parts)


def render_html(report: ValidationReport) -> str:
    """The report page as one string."""
    from mlpot.validation.checks import CHECKS

    sections = "".join(
        _section(c, CHECKS[c.name].title if c.name in CHECKS else c.name) for c in report.checks
    )
    settings = _e(json.dumps(report.to_dict()["settings"], indent=2))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mlpot validation: {_e(report.system.get('name'))}</title>"
        f"<style>{STYLE}</style></head><body>{_header(report)}"
        f'<section id="summary"><h2>Summary</h2>{_summary(report)}</section>'
        f"{sections}{_extras(report)}"
        f'<section id="settings"><h2>Settings and tolerances</h2><pre>{settings}</pre></section>'
        f"<footer><p>mlpot {package_version()}, {stamp}</p></footer>"
        f"<script>{SCRIPT}</script></body></html>"
    )


def write_report(report: ValidationReport, path: str | Path) -> ReportFiles:
    """Write ``report.html`` and ``report.json`` into directory ``path`` (created), or, when
    ``path`` ends in ``.html``, that file and the JSON next to it."""
    path = Path(path)
    if path.suffix.lower() == ".html":
        html_path, json_path = path, path.with_suffix(".json")
    else:
        html_path, json_path = path / "report.html", path / "report.json"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(report), encoding="utf-8")
    json_path.write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
    return ReportFiles(html_path, json_path)
