"""Loading runs no code named in a file; bad arguments and broken models fail clearly.

A checkpoint's delta-learning baseline ``{"name": "os:system", ...}`` must never run on
load (library, ``mlpot eval`` and the other commands, validation); it runs only with
``trust_code=True`` / ``--trust-code``. Also: checkpoint fields that would reach ``torch``
(dtype), malformed payloads, model arguments of the wrong type or range, non-finite
predictions in ``mlpot eval``, concurrent ``atomic_save``, ``train --resume`` of nothing.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import ase.io
import pytest
import torch
import yaml
from ase.calculators.emt import EMT
from conftest import emt_copper_frames
from typer.testing import CliRunner

from mlpot.calculators import MlpotCalculator, load_calculator
from mlpot.calculators.oracles import ORACLES, check_oracle_name, make_oracle
from mlpot.cli.main import app
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import atomic_save, load_checkpoint, load_model, save_model
from mlpot.models.registry import build_model
from mlpot.training.config import parse_config
from mlpot.training.evaluation import evaluate_files
from mlpot.training.run import run_training
from mlpot.validation import run_validation

SUPPORT = str(Path(__file__).parent)  # makes `support.oracles` importable
TRUSTED = {"name": "support.oracles:flaky_emt", "params": {"rate": 0.0}}  # EMT, never fails
SMALL = {"name": "bpnn", "elements": [29], "cutoff": 3.0, "radial_count": 4, "hidden": [4]}


def _model():
    torch.manual_seed(0)
    return build_model(SMALL).double()


@pytest.fixture
def data(tmp_path) -> str:
    path = tmp_path / "cu.xyz"
    ase.io.write(path, emt_copper_frames(4, seed=2))
    return str(path)


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def _rewrite(path: Path, out: Path, **fields) -> Path:
    """A real checkpoint's payload with ``fields`` replaced, written as plain torch.save."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload.update(fields)
    torch.save(payload, out)
    return out


@pytest.fixture
def evil(tmp_path, marker) -> Path:
    """A checkpoint whose baseline, if built, runs a shell command that creates ``marker``."""
    save_model(tmp_path / "good.pt", _model())
    baseline = {"name": "os:system", "params": {"command": f"touch {marker}"}}
    return _rewrite(tmp_path / "good.pt", tmp_path / "evil.pt", baseline=baseline)


def _assert_refused(err: MlpotInputError, path: Path) -> None:
    message = str(err)
    assert str(path) in message and "baseline" in message and "--trust-code" in message
    assert "os:system" in message and "names code to import and run" in message
    assert err.source == str(path) and err.field == "baseline"


# ------------------------------------------------------------------ no code on load


def test_malicious_baseline_runs_nowhere_in_the_library(evil, marker, data):
    loaders = {
        "load_checkpoint": lambda: load_checkpoint(evil),
        "load_calculator": lambda: load_calculator(evil),
        "evaluate_files": lambda: evaluate_files(evil, [data]),
        "run_validation": lambda: run_validation(evil, oracle="emt", progress=False),
    }
    for name, load in loaders.items():
        with pytest.raises(MlpotInputError) as info:
            load()
        _assert_refused(info.value, evil)
        assert not marker.exists(), name
    # the model alone never builds the baseline: it loads (and still nothing runs)
    assert load_model(evil).elements == [29]
    assert not marker.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{evil}", "{data}"],
        ["eval", "{evil}", "{data}", "--uncertainty", "--json"],
        ["calibrate", "{evil}", "{data}"],
        ["fisher", "{evil}", "{data}"],
        ["probe", "{evil}", "{data}", "--oracle", "emt"],
        ["validate", "{evil}", "--oracle", "emt", "--system", "cu-fcc", "--output", "{out}"],
    ],
    ids=lambda c: "-".join(a for a in c if not a.startswith("{")),
)
def test_malicious_baseline_runs_nowhere_on_the_command_line(evil, marker, data, command):
    args = [a.format(evil=evil, data=data, out=evil.parent / "report") for a in command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--trust-code" in result.output and str(evil) in result.output
    assert "Traceback" not in result.output
    assert not marker.exists()


def test_make_oracle_needs_trust_for_code(marker):
    with pytest.raises(MlpotInputError) as info:
        make_oracle("os:system", command=f"touch {marker}")
    message = str(info.value)
    assert info.value.field == "oracle"
    assert "module 'os'" in message and "--trust-code" in message
    for name in ORACLES:
        assert name in message  # the built-in names are listed
    assert not marker.exists()
    assert isinstance(make_oracle("emt"), EMT)  # built-ins need no trust
    # `name` is positional-only: an oracle parameter may be called "name"
    with pytest.raises(MlpotInputError, match="names code"):
        make_oracle("os:system", name="x")


def test_check_oracle_name_imports_nothing():
    for name in ORACLES:
        check_oracle_name(name)
    check_oracle_name("no_such_module.sub:factory", trust_code=True)  # not imported
    with pytest.raises(MlpotInputError, match="names code to import and run"):
        check_oracle_name("no_such_module.sub:factory")
    for bad in ("nope", "a b:c", "mod:", ":f", "mod:a.b", 3):
        with pytest.raises(MlpotInputError):
            check_oracle_name(bad, trust_code=True)


def test_trusted_module_factory_baseline_works(tmp_path, monkeypatch, data):
    monkeypatch.syspath_prepend(SUPPORT)
    model = _model()
    path = tmp_path / "delta.pt"
    save_model(path, model, baseline=TRUSTED)
    with pytest.raises(MlpotInputError, match="--trust-code"):
        load_calculator(path)

    atoms = emt_copper_frames(1, seed=5)[0]
    atoms.calc = load_calculator(path, trust_code=True)
    reference = atoms.copy()
    reference.calc = MlpotCalculator(model, baseline=EMT())
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy())

    report = evaluate_files(path, [data], trust_code=True)[data]
    assert report["forces"]["rmse"] > 0 and "non_finite" not in report
    result = CliRunner().invoke(app, ["eval", str(path), data, "--json", "--trust-code"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[data]["n_structures"] == 4


def test_train_config_baseline_needs_trust_at_run_time(tmp_path, monkeypatch, data, marker):
    """Parsing a config imports nothing; training refuses the untrusted baseline before any
    data is read, and trains with --trust-code. ``--resume`` of nothing starts afresh."""
    monkeypatch.syspath_prepend(SUPPORT)
    raw = {
        "data": {"train": data, "validation_fraction": 0.25},
        "model": {k: v for k, v in SMALL.items() if k != "elements"},
        "training": {"epochs": 1, "batch_size": 4, "progress": False},
        "fisher": {"structures": 0},
        "baseline": {"name": "os:system", "params": {"command": f"touch {marker}"}},
        "output": str(tmp_path / "run"),
    }
    config = parse_config(raw)
    with pytest.raises(MlpotInputError, match="--trust-code") as info:
        run_training(config)
    assert info.value.field == "baseline"
    assert not marker.exists()

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**raw, "baseline": TRUSTED}))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and "--trust-code" in result.output
    result = CliRunner().invoke(app, ["train", str(path), "--resume", "--trust-code"])
    assert result.exit_code == 0, result.output
    assert f"nothing to resume in {tmp_path / 'run'}: starting fresh" in result.output
    assert load_checkpoint(tmp_path / "run" / "model.pt", trust_code=True)["baseline"] == TRUSTED


# ------------------------------------------------------------- checkpoint fields


def test_stored_dtype_never_reaches_torch(tmp_path):
    save_model(tmp_path / "good.pt", _model())
    bad = _rewrite(tmp_path / "good.pt", tmp_path / "bad.pt", dtype="load")
    for load in (load_checkpoint, load_model, load_calculator):
        with pytest.raises(MlpotInputError) as info:
            load(bad)
        assert info.value.field == "dtype" and "'load'" in str(info.value)
        assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"format_version": "1"}, "format_version", "format_version must be an integer, got '1'"),
        ({"format_version": None}, "format_version", "must be an integer, got None"),
        ({"state_dict": None}, "state_dict", "must be a dict"),
        ({"baseline": "emt"}, "baseline", "must be None or {'name': str, 'params': dict}"),
        ({"baseline": {"name": "emt", "params": [1]}}, "baseline", "must be None or"),
        ({"model": {"name": "bpnn", "elements": [29], "cutoff": "big"}}, "model.cutoff", "big"),
    ],
)
def test_malformed_payload_is_named(tmp_path, fields, field, message):
    save_model(tmp_path / "good.pt", _model())
    bad = _rewrite(tmp_path / "good.pt", tmp_path / "bad.pt", **fields)
    with pytest.raises(MlpotInputError) as info:
        load_model(bad)
    assert info.value.field == field and message in str(info.value)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("missing", ["state_dict", "model"])
def test_payload_without_weights_or_model_is_not_a_checkpoint(tmp_path, data, missing):
    save_model(tmp_path / "good.pt", _model())
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    del payload[missing]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(MlpotInputError, match=f"not an mlpot checkpoint \\(missing '{missing}'\\)"):
        load_checkpoint(tmp_path / "bad.pt")
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "bad.pt"), data])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"missing '{missing}'" in result.output


# ---------------------------------------------------------------- model arguments


@pytest.mark.parametrize(
    ("model", "field", "message"),
    [
        ({"hidden": "abc"}, "model.hidden", "valid list"),
        ({"hidden": [8, 0]}, "model.hidden", "hidden[1] = 0"),
        ({"cutoff": "big"}, "model.cutoff", "valid number"),
        ({"cutoff": -4}, "model.cutoff", "greater than 0"),
        ({"cutoff": 0}, "model.cutoff", "greater than 0"),
        ({"cutoff": float("inf")}, "model.cutoff", "finite"),
        ({"elements": ["Cu", "Xx"]}, "model.elements", "'Xx' is neither an atomic number"),
        ({"elements": [0]}, "model.elements", "greater than or equal to 1"),
        ({"activation": "relu"}, "model.activation", "'silu', 'tanh' or 'softplus'"),
        ({"name": "mpnn", "channels": 2.5}, "model.channels", "integer"),
        ({"name": "sum", "terms": [{"name": "zbl", "cutoff": 0}]}, "model.terms[0].cutoff", ""),
    ],
)
def test_bad_model_arguments_are_named_before_any_work(model, field, message):
    raw = {"data": {"train": "never-read.xyz"}, "model": {"name": "bpnn", **model}}
    with pytest.raises(MlpotInputError) as info:
        parse_config(raw, source="train.yaml")
    assert field in str(info.value) and message in str(info.value), str(info.value)
    assert "train.yaml" in str(info.value)


def test_symbols_are_elements():
    assert build_model({**SMALL, "elements": ["Cu", "Ag"]}).elements == [29, 47]


def test_bad_model_arguments_exit_2_on_the_command_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {train: x.xyz}\nmodel: {name: bpnn, hidden: abc, cutoff: 4}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "hidden" in result.output, result.output


# ------------------------------------------------------------ non-finite results


def test_eval_of_a_nan_model_reports_non_finite_and_fails(tmp_path, data):
    model = _model()
    with torch.no_grad():
        model.networks[0][0].weight.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    save_model(path, model)

    report = evaluate_files(path, [data])[data]
    assert set(report["non_finite"]) == {"energy_per_atom", "forces", "stress"}
    assert report["forces"]["mae"] is None and report["forces"]["non_finite"] > 0
    assert report["n_structures"] == 4

    result = CliRunner().invoke(app, ["eval", str(path), data, "--json"])
    assert result.exit_code == 1
    parsed = json.loads(result.stdout)  # valid JSON: no NaN
    assert parsed[data]["energy_per_atom"]["rmse"] is None
    assert data in result.stderr and "not finite" in result.stderr
    table = CliRunner().invoke(app, ["eval", str(path), data])
    assert table.exit_code == 1 and "non-finite" in table.stdout


# ------------------------------------------------------------------ atomic saves


def test_concurrent_atomic_saves_of_one_path_do_not_collide(tmp_path):
    path = tmp_path / "state.pt"
    errors = []

    def writer(k: int) -> None:
        try:
            for step in range(10):
                atomic_save({"writer": k, "step": step, "x": torch.full((1000,), k)}, path)
        except Exception as err:  # noqa: BLE001 - collected, asserted below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    saved = torch.load(path, weights_only=True)
    assert saved["step"] == 9 and bool((saved["x"] == saved["writer"]).all())
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary left over


def test_failed_atomic_save_leaves_nothing(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises
        atomic_save({"bad": lambda: None}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_non_finite_metrics_of_evaluate_are_nan_not_dropped():
    from mlpot.training.metrics import ErrorAccumulator

    acc = ErrorAccumulator()
    acc.add("energy_per_atom", torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 0.0]))
    acc.add("forces", torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 0.0]))
    result = acc.result()
    assert math.isnan(result["energy_per_atom"]["rmse"])
    assert result["energy_per_atom"]["non_finite"] == 1
    assert result["forces"] == {"mae": 1.0, "rmse": 1.0, "count": 1}  # unlabelled: left out
