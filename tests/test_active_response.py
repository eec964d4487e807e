"""Response labels during active learning: with the config's ``response`` section every
oracle label (workers' and the held-out test set's) holds the oracle's dipole, stored with
it and kept by a resumed run; the run ends with a dipole model next to the potential and
the infrared check in its validation. Config errors stop the run before any oracle call.

Real GFN2-xTB on water (milliseconds a label); no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from mlpot.active import learn, parse_learn_config
from mlpot.active.finish import finish
from mlpot.active.labelling import OracleSpec, label
from mlpot.active.report import quick_validation
from mlpot.active.store import Store
from mlpot.calculators.checked import OracleAnswerError, check_answer
from mlpot.calculators.oracles import RESPONSE_PROPERTIES, make_oracle
from mlpot.cli.main import app
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_response_model
from mlpot.models.response import response_graph

pytest.importorskip("tblite")

QUIET = dict(log=lambda line: None)
CALLS = {"n": 0}  # calls of the counting oracle below


class CountingEMT(EMT):
    """EMT that counts its calculations (a ``module:factory`` oracle with no dipole)."""

    def calculate(self, *args, **kwargs):
        CALLS["n"] += 1
        super().calculate(*args, **kwargs)


def counting_emt() -> CountingEMT:
    return CountingEMT()


def _raw(output, **overrides) -> dict:
    """The cheapest water run: valence-Hessian initial samples, a 4-frame test set, two
    tiny bpnn committees, a 20-epoch 8-channel dipole model."""
    raw = {
        "system": "water",
        "oracle": {"name": "xtb"},
        "relax": False,
        "initial": {"method": "normal_modes", "hessian": "valence", "count": 8},
        "test": {
            "temperature": 300,
            "frames": 4,
            "stride": 5,
            "equilibration": 5,
            "timestep_fs": 0.5,
        },
        "explore": {"temperatures": [300], "steps": 20, "timestep_fs": 0.5, "check_interval": 4},
        "select": {"force_std": 0.02, "stop_force_std": 10.0, "batch_size": 4},
        "label": {"executor": "thread", "workers": 1, "retries": 1},
        "train": {
            "model": {"name": "bpnn", "cutoff": 3.5, "hidden": [8]},
            "training": {"epochs": 2, "batch_size": 4},
            "ensemble_size": 2,
            "workers": 1,
        },
        "stop": {"oracle_budget": 12, "max_iterations": 2, "patience_steps": 40},
        "validation": False,
        "response": {"kind": "dipole", "epochs": 20, "channels": 8},
        "output": str(output),
    }
    raw.update(overrides)
    return raw


def _dipoles(store: Store) -> dict[str, np.ndarray]:
    """uid -> stored dipole of every valid label (e·Å)."""
    return {item.uid: np.array(item.atoms.calc.results["dipole"]) for item in store.labelled()}


def test_learn_stores_oracle_dipoles_and_writes_a_dipole_model(tmp_path):
    result = learn(parse_learn_config(_raw(tmp_path / "run")), **QUIET)
    store = Store(result.store_path)
    labelled = store.labelled()
    assert {item.reason for item in labelled} >= {"initial", "test"}
    assert len(labelled) == 12 + 4  # every label, the test set's too, holds a dipole
    dipoles = _dipoles(store)
    # the stored dipoles are the oracle's for those structures (to its SCF convergence,
    # ~1e-5 e·Å; the structures' dipoles differ by ~0.1 e·Å)
    oracle = make_oracle("xtb")
    for item in labelled[:: max(1, len(labelled) // 4)]:
        atoms = item.atoms.copy()
        atoms.calc = oracle
        np.testing.assert_allclose(atoms.get_dipole_moment(), dipoles[item.uid], atol=1e-4)
    spread = np.ptp(np.array(list(dipoles.values())), axis=0)
    assert spread.max() > 1e-2
    # the dipole model: written next to the potential, in the summary, held-out error named
    path = tmp_path / "run" / "dipole.pt"
    assert path.exists() and result.model_path.parent == path.parent
    assert result.response["kind"] == "dipole" and result.response["path"] == str(path)
    assert result.response["n_test"] == 4 and result.response["test_rmse"] < 0.5
    # it loads and predicts a dipole that rotates with the molecule
    model = load_response_model(path, dtype="float64")
    water = labelled[0].atoms.copy()
    water.calc = None

    def predict(atoms):
        return model(response_graph(atoms, model, labelled=False))[0].detach().numpy()

    mu = predict(water)
    turned = water.copy()
    rotation = Rotation.from_euler("xyz", [0.4, -1.2, 2.1])
    turned.positions = rotation.apply(water.positions)
    assert np.linalg.norm(mu) > 1e-3
    np.testing.assert_allclose(predict(turned), rotation.apply(mu), atol=1e-9)

    # a resumed run with a raised budget keeps every stored dipole and labels new ones too
    raw = _raw(tmp_path / "run", stop={"oracle_budget": 16, "max_iterations": 3})
    resumed = learn(parse_learn_config(raw), resume=True, **QUIET)
    after = _dipoles(Store(resumed.store_path))
    assert len(after) > len(dipoles)
    for uid, dipole in dipoles.items():
        np.testing.assert_array_equal(after[uid], dipole)
    assert resumed.response["n_train"] + resumed.response["n_validation"] > 12

    # the final validation of a model the loop validated already gains the infrared check
    config = parse_learn_config(_raw(tmp_path / "run", validation=True))
    system = molecule("H2O")
    loops = quick_validation(
        resumed.model_path,
        oracle="xtb",
        oracle_params={},
        system=system,
        temperature=300.0,
        checks=["vibrations"],
    )
    final = finish(
        config,
        Store(resumed.store_path),
        reason="test",
        store_path=resumed.store_path,
        setup_calls=0,
        system=system,
        report=loops,
        **QUIET,
    )
    assert [c.name for c in loops.checks] == ["vibrations", "infrared"]
    assert loops.check("infrared").status != "skip"
    assert final.response["path"] == str(path) and final.validation_passed is not None


def test_a_killed_run_resumes_without_losing_dipoles(tmp_path):
    """SIGKILL once exploration has sent requests; ``--resume`` labels what was in flight
    (with dipoles) and keeps every stored dipole."""
    stop = {"oracle_budget": 24, "max_iterations": 4, "patience_steps": 40}
    config = tmp_path / "learn.yaml"
    config.write_text(yaml.safe_dump(_raw("run", stop=stop)))
    store_path = tmp_path / "run" / "store.db"
    command = [sys.executable, "-m", "mlpot.cli.main", "learn", str(config)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if store_path.exists() and Store(store_path).count("request", reason="forces_std"):
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed = Store(store_path)
    assert killed.stopped() is None  # killed mid-run, not after its end
    before = _dipoles(killed)
    assert before
    finished = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "response: dipole model" in finished.stdout and "held-out test" in finished.stdout
    store = Store(store_path)
    assert not store.pending() and len(store.labelled()) == len(store.requests())
    after = _dipoles(store)  # every label holds a dipole (KeyError otherwise)
    for uid, dipole in before.items():
        np.testing.assert_array_equal(after[uid], dipole)


def test_final_validation_runs_the_infrared_check(tmp_path):
    raw = _raw(tmp_path / "run", validation=True, stop={"oracle_budget": 12, "validate": False})
    lines = []
    result = learn(parse_learn_config(raw), log=lines.append)
    report = (tmp_path / "run" / "report").glob("*.json")
    text = "\n".join(p.read_text() for p in report)
    assert '"infrared"' in text and "needs a dipole model" not in text
    assert any(line.startswith("dipole model ") and "held-out test" in line for line in lines)
    assert result.validation_passed is not None


@pytest.mark.parametrize(
    "response, oracle, words",
    [
        ({"kind": "charges"}, {"name": "xtb"}, ["response.kind", "dipole", "polarizability"]),
        ({"kind": "dipole"}, {"name": "emt"}, ["response.kind", "oracle.name 'emt'", "dipole"]),
        ({"kind": "polarizability"}, {"name": "xtb"}, ["oracle.name 'xtb'", "polarizability"]),
        ({"members": 0}, {"name": "xtb"}, ["response.members"]),
        ({"kind": "polarizability", "radial_basis": 0}, {"name": "pyscf"}, ["radial_basis"]),
    ],
)
def test_config_errors_name_the_key_before_any_work(tmp_path, response, oracle, words):
    path = tmp_path / "learn.yaml"
    raw = _raw("run", response=response, oracle=oracle)
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["learn", str(path)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for word in words:
        assert word in message
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_an_oracle_factory_without_dipoles_is_refused_before_any_call(tmp_path):
    CALLS["n"] = 0
    raw = _raw(tmp_path / "run", oracle={"name": "test_active_response:counting_emt"})
    config = parse_learn_config(raw)  # a factory's properties are known once built
    with pytest.raises(MlpotInputError, match="response.kind: dipole needs the oracle's dipole"):
        learn(config, trust_code=True, **QUIET)
    assert CALLS["n"] == 0 and not (tmp_path / "run").exists()


def test_response_properties_of_the_builtin_oracles_are_their_calculators():
    for name, props in RESPONSE_PROPERTIES.items():
        implemented = set(make_oracle(name).implemented_properties)
        assert set(props) <= implemented
        assert not {"dipole", "polarizability"} - set(props) & implemented


def test_response_answers_are_checked():
    forces = np.zeros((3, 3))
    with pytest.raises(OracleAnswerError, match="gave no dipole"):
        check_answer({"energy": 0.0, "forces": forces}, 3, required=("dipole",))
    with pytest.raises(OracleAnswerError, match="dipole of shape"):
        check_answer({"energy": 0.0, "forces": forces, "dipole": np.zeros(2)}, 3)
    with pytest.raises(OracleAnswerError, match="non-finite polarizability"):
        bad = np.full((3, 3), np.nan)
        check_answer({"energy": 0.0, "forces": forces, "polarizability": bad}, 3)
    # an oracle that gives no dipole is a recorded failure, never a label without one
    outcome = label("u", molecule("H2O"), OracleSpec("emt"), retries=0, response=("dipole",))
    assert not outcome.ok and "dipole" in outcome.error


def test_a_polarizability_label_is_stored_and_read_back(tmp_path):
    """PySCF's finite-field polarisability (HF/STO-3G of H2: seven SCF runs) through a
    worker's label into the store and back; a store's labels without one read as before."""
    pytest.importorskip("pyscf")
    h2 = molecule("H2")
    oracle = OracleSpec("pyscf", {"functional": "hf", "basis": "sto-3g"})
    outcome = label("a", h2, oracle, response=("dipole", "polarizability"))
    assert outcome.ok, outcome.error
    alpha = outcome.results["polarizability"]
    assert alpha.shape == (3, 3) and np.allclose(alpha, alpha.T) and alpha[2, 2] > 0  # along H-H
    store = Store(tmp_path / "store.db")
    for uid in ("a", "b"):
        store.add_request(uid, h2, iteration=0, reason="initial")
    store.add_label("a", h2, outcome.results, attempts=1, oracle_s=0.0)
    plain = {k: outcome.results[k] for k in ("energy", "forces")}
    store.add_label("b", h2, plain, attempts=1, oracle_s=0.0)
    read = {item.uid: item.atoms.calc.results for item in Store(tmp_path / "store.db").labelled()}
    np.testing.assert_array_equal(read["a"]["polarizability"], alpha)
    np.testing.assert_array_equal(read["a"]["dipole"], outcome.results["dipole"])
    assert "polarizability" not in read["b"] and "dipole" not in read["b"]
