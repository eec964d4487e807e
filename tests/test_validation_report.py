"""The validation report: a self-contained HTML page that renders in a browser, plus JSON.

The model is a committee of two Lennard-Jones potentials, so the report also carries the
uncertainty plots; the caller adds a figure and a plot of its own.
"""

from __future__ import annotations

import base64
import html as html_module
import io
import json
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest
import torch

from mlpot.models.ensembles import Committee
from mlpot.models.registry import build_model
from mlpot.validation import CHECKS, run_validation, write_report
from mlpot.validation.plots.common import figure
from mlpot.validation.settings import QUICK

LJ = {"name": "lj", "elements": [29], "sigma": 2.338, "cutoff": 6.0, "smooth": True}
LJ_ORACLE = {"sigma": 2.338, "epsilon": 0.409, "rc": 6.0, "smooth": True}
SHORT = {**QUICK, "equilibration_steps": 50, "md_steps": 150, "nve_steps": 150}
IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


@pytest.fixture(scope="module")
def report():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    # members at ε and ε + 2 %: the mean is 1 % off, and error and spread both scale
    # with the force, so they are perfectly rank-correlated
    members = [build_model({**LJ, "epsilon": e}) for e in (0.409, 0.409 * 1.02)]
    fig, (ax,) = figure(1)
    ax.plot([0, 1], [0, 1])
    result = run_validation(
        Committee(members),
        oracle={"name": "lj", **LJ_ORACLE},
        system="cu-fcc",
        settings=SHORT,
        progress=False,
        extra_figures={"calibration": {"forces_scale": 1.3}},
        extra_plots={"caller's reliability diagram": fig},
    )
    torch.set_num_threads(before)
    return result


@pytest.fixture(scope="module")
def written(report, tmp_path_factory):
    return write_report(report, tmp_path_factory.mktemp("report") / "cu.html")


def test_committee_uncertainty_is_measured(report):
    errors = report.check("errors")
    # 1 % of the cohesive energy (~35 meV/atom) is more than kT; forces are 1 % off
    assert "energy_rmse_per_atom_kT" in errors.failed_figures()
    assert errors.figures["forces_relative"] == pytest.approx(0.01, rel=0.01)
    assert errors.figures["forces_std_error_spearman"] > 0.99
    # σ of two members is |Δ|/√2 and the error |Δ|/2: |error|/σ = 1/√2 for every component
    assert errors.figures["forces_z_rms"] == pytest.approx(2**-0.5, rel=1e-3)
    assert report.model["committee_members"] == 2


def test_html_has_every_section_and_decodable_plots(report, written):
    html = written.html.read_text()
    assert html.startswith("<!DOCTYPE html>") and "http" not in html.split("<footer>")[0]
    for check in report.checks:
        assert f'id="check-{check.name}"' in html
        assert f'data-check="{check.name}" data-status="{check.status}"' in html
    images = IMAGE.findall(html)
    captions = [html_module.unescape(caption) for _, caption in images]
    for caption in (
        "Parity: model against oracle on frames of both MD runs",
        "Error histograms",
        "Committee uncertainty: error against σ, and reliability",
        "Energy drift of velocity-Verlet MD",
        "Radial distribution overlay",
        "NEB energy profile",
        "Vibrational frequencies (imaginary as negative)",
        "caller's reliability diagram",
    ):
        assert caption in captions
    for data, caption in images:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, caption
        assert pixels[..., :3].std() > 0.05, caption  # not a blank image
    assert "forces_scale" in html


def test_json_has_all_figures_and_is_strict(report, written):
    data = json.loads(
        written.json.read_text(),
        parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"),
    )
    assert [c["name"] for c in data["checks"]] == list(CHECKS)
    for entry, check in zip(data["checks"], report.checks, strict=True):
        assert entry["status"] == check.status
        for key, value in check.figures.items():
            assert entry["figures"][key] == pytest.approx(value, nan_ok=True)
        assert set(entry["tolerance"]) <= set(entry["figures"])
    assert data["extra_figures"]["calibration"]["forces_scale"] == 1.3
    assert data["system"]["name"] == "cu-fcc" and data["temperature_K"] == 300.0


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (apt install chromium)")
def test_report_renders_in_headless_chromium(written, tmp_path):
    flags = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
    ]
    url = written.html.resolve().as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    n_images = len(IMAGE.findall(written.html.read_text()))
    assert f'data-images-decoded="{n_images}"' in dom  # every plot decoded by the browser
    assert len(re.findall(r"<tr data-check=", dom)) == len(CHECKS)
    assert 'id="verdict"' in dom and "Vacancy migration barrier" in dom

    shot = tmp_path / "page.png"
    subprocess.run(
        [*flags, "--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    ink = np.mean(pixels.min(axis=-1) < 0.9)  # fraction of pixels that are not white
    assert 0.03 < ink < 0.9
    colourful = np.mean(pixels.max(axis=-1) - pixels.min(axis=-1) > 0.3)  # badges, plots
    assert colourful > 0.002
