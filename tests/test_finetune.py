"""Fine-tuning without forgetting: EWC and replay against plain fine-tuning on two tasks.

Task A: rattled copper cells near the EMT lattice constant. Task B: the same cells compressed
by 5 % (EMT labels throughout). One model can fit both, but plain fine-tuning on B alone
forgets A: its old-task force error grows more than tenfold.
"""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_checkpoint, load_model
from mlpot.training.config import parse_config
from mlpot.training.evaluation import evaluate_files
from mlpot.training.finetune import (
    EWCPenalty,
    FisherOptions,
    diagonal_fisher,
    store_fisher_from_files,
)
from mlpot.training.run import run_training

MODEL = {"name": "bpnn", "cutoff": 4.0, "radial_count": 6, "angular_etas": [0.01], "hidden": [16]}


def _frames(n: int, *, seed: int, scale: float) -> list:
    """Rattled 16-atom Cu cells with lattice constant ``3.61 scale`` Å, EMT labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
        atoms.set_cell(atoms.cell * scale * (1 + rng.normal(0, 0.01)), scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    paths = {}
    for name, n, seed, scale in [
        ("a_train", 24, 0, 1.0),
        ("a_val", 6, 3, 1.0),
        ("a_test", 8, 1, 1.0),
        ("b_train", 16, 2, 0.95),
    ]:
        paths[name] = str(root / f"{name}.xyz")
        ase.io.write(paths[name], _frames(n, seed=seed, scale=scale))
    config = parse_config(
        {
            "data": {"train": paths["a_train"], "validation": paths["a_val"]},
            "model": MODEL,
            "training": {"epochs": 100, "batch_size": 6, "progress": False, "ema_decay": 0.0},
            "output": str(root / "a"),
        }
    )
    paths["a_model"] = str(run_training(config).model_path)
    paths["root"] = root
    return paths


def _finetune(tasks, method: str, **extra):
    config = parse_config(
        {
            "data": {"train": tasks["b_train"], "validation_fraction": 0.25},
            "training": {"epochs": 25, "batch_size": 4, "progress": False, "ema_decay": 0.0},
            "finetune": {"checkpoint": tasks["a_model"], "method": method, **extra},
            "output": str(tasks["root"] / f"b_{method}"),
        }
    )
    result = run_training(config)
    old = evaluate_files(result.model_path, [tasks["a_test"]])[tasks["a_test"]]
    metrics = json.loads((tasks["root"] / f"b_{method}" / "metrics.json").read_text())
    return old["forces"]["rmse"], metrics["finetune"]


def test_fisher_stored_at_end_of_training_and_by_command(tasks, tmp_path):
    fisher = load_checkpoint(tasks["a_model"])["fisher"]
    params = dict(load_model(tasks["a_model"]).named_parameters())
    assert set(fisher["values"]) == set(params)
    for name, value in fisher["values"].items():
        assert value.shape == params[name].shape and bool((value >= 0).all()), name
    assert fisher["n_structures"] == 24
    assert sum(float(v.sum()) for v in fisher["values"].values()) > 0
    # the command recomputes it from the training data: same weights and data, same numbers
    copy = tmp_path / "copy.pt"
    copy.write_bytes(open(tasks["a_model"], "rb").read())
    recomputed = store_fisher_from_files(copy, [tasks["a_train"]], progress=False)
    reloaded = load_checkpoint(copy)["fisher"]
    assert reloaded["n_structures"] == recomputed["n_structures"] == 24
    for name in fisher["values"]:
        torch.testing.assert_close(reloaded["values"][name], fisher["values"][name])
    # a seeded subset
    one = store_fisher_from_files(
        copy, [tasks["a_train"]], options=FisherOptions(structures=5, seed=3), progress=False
    )
    assert one["n_structures"] == 5


def test_ewc_penalty_is_half_lambda_weighted_squared_distance():
    model = torch.nn.Linear(2, 1).double()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.full_like(p, 2.0) for n, p in model.named_parameters()}
    penalty = EWCPenalty(fisher, anchor, strength=3.0)
    assert float(penalty(model).detach()) == 0.0
    with torch.no_grad():
        model.bias += 0.5
    assert float(penalty(model).detach()) == pytest.approx(0.5 * 3.0 * 2.0 * 0.25)


def test_ewc_and_replay_forget_less_than_plain(tasks):
    plain_old, plain = _finetune(tasks, "plain")
    ewc_old, ewc = _finetune(tasks, "ewc")  # λ = 1: old and new data weigh alike
    replay_old, replay = _finetune(
        tasks, "replay", replay_data=[tasks["a_train"]], replay_fraction=0.5
    )
    old_before = evaluate_files(tasks["a_model"], [tasks["a_test"]])[tasks["a_test"]]
    old_before = old_before["forces"]["rmse"]
    assert plain["before"] == ewc["before"]
    new_before = plain["before"]["new_validation"]["forces"]["rmse"]
    # every method learns B (force error on new data at least halved) ...
    for info in (plain, ewc, replay):
        assert info["after"]["new_validation"]["forces"]["rmse"] < 0.5 * new_before
    # ... plain fine-tuning forgets A; EWC and replay keep its error far lower
    assert plain_old > 5 * old_before
    assert ewc_old < 0.5 * plain_old
    assert replay_old < 0.5 * plain_old
    # replay reports its old-data errors before and after
    assert replay["before"]["old"] is not None and replay["after"]["old"] is not None
    assert replay["after"]["old"]["forces"]["rmse"] < plain_old


def test_bad_finetune_configs_are_clear_errors(tasks, tmp_path):
    base = {"data": {"train": tasks["b_train"]}, "output": str(tmp_path / "x")}
    with pytest.raises(MlpotInputError, match="ewc_lambda"):
        parse_config({**base, "finetune": {"checkpoint": tasks["a_model"], "ewc_lambda": -1}})
    with pytest.raises(MlpotInputError, match="needs replay_data"):
        parse_config({**base, "finetune": {"checkpoint": tasks["a_model"], "method": "replay"}})
    with pytest.raises(MlpotInputError, match="remove the model section"):
        parse_config(
            {
                **base,
                "model": MODEL,
                "finetune": {"checkpoint": tasks["a_model"], "method": "plain"},
            }
        )
    with pytest.raises(MlpotInputError, match="finetune.method"):
        parse_config({**base, "finetune": {"checkpoint": tasks["a_model"], "method": "lwf"}})
    missing = parse_config(
        {**base, "finetune": {"checkpoint": str(tmp_path / "none.pt"), "method": "plain"}}
    )
    with pytest.raises(MlpotInputError, match="not found"):
        run_training(missing)
    # EWC needs the Fisher information in the checkpoint
    payload = load_checkpoint(tasks["a_model"])
    payload["fisher"] = None
    bare = tmp_path / "bare.pt"
    torch.save(payload, bare)
    no_fisher = parse_config(
        {**base, "finetune": {"checkpoint": str(bare), "method": "ewc", "ewc_lambda": 1.0}}
    )
    with pytest.raises(MlpotInputError, match="mlpot fisher"):
        run_training(no_fisher)


def test_fisher_command(tasks, tmp_path):
    from typer.testing import CliRunner

    from mlpot.cli.main import app

    copy = tmp_path / "m.pt"
    copy.write_bytes(open(tasks["a_model"], "rb").read())
    out = CliRunner().invoke(app, ["fisher", str(copy), tasks["a_train"], "--structures", "4"])
    assert out.exit_code == 0, out.output
    assert load_checkpoint(copy)["fisher"]["n_structures"] == 4
    bad = CliRunner().invoke(app, ["fisher", str(copy), str(tmp_path / "missing.xyz")])
    assert bad.exit_code == 2 and "not found" in bad.output


def test_fisher_is_the_gauss_newton_curvature_whatever_the_labels():
    """Labels drawn from the loss's noise model: the estimate does not depend on the real
    labels, and its mean is the Gauss–Newton diagonal ``2 w_E J_E² + (2 w_F / n_F) Σ J_F²``
    (per-output Jacobians by autograd)."""
    from mlpot.data.graph import ENERGY, FORCES, atoms_to_graph
    from mlpot.models.registry import build_model
    from mlpot.physics.derivatives import predict

    torch.manual_seed(0)
    model = build_model({**MODEL, "elements": [29], "hidden": [4]}).double()
    (atoms,) = _frames(1, seed=5, scale=1.0)
    atoms = atoms[:4]  # 4 atoms: 1 + 12 outputs
    graph = atoms_to_graph(atoms, 4.0, dtype=torch.float64)
    graph[ENERGY] = torch.zeros(1, dtype=torch.float64)  # labels: any value (unused)
    graph[FORCES] = torch.zeros((len(atoms), 3), dtype=torch.float64)
    weights = {"energy": 2.0, "forces": 5.0}
    draws = 400
    sampled = diagonal_fisher(model, [graph] * draws, weights, seed=1)["values"]
    shifted = dict(graph, **{ENERGY: graph[ENERGY] + 3.0, FORCES: graph[FORCES] * -2.0})
    again = diagonal_fisher(model, [shifted] * draws, weights, seed=1)["values"]
    for name in sampled:
        torch.testing.assert_close(again[name], sampled[name])

    params = dict(model.named_parameters())
    pred = predict(model, graph, forces=True, create_graph=True)
    n_atoms, outputs = len(atoms), [pred["energy"][0] / len(atoms)]
    outputs += list(pred["forces"].reshape(-1))
    coefficients = [2 * weights["energy"]] + [2 * weights["forces"] / (3 * n_atoms)] * (3 * n_atoms)
    exact = {name: torch.zeros_like(p) for name, p in params.items()}
    for c, out in zip(coefficients, outputs, strict=True):
        grads = torch.autograd.grad(
            out, list(params.values()), retain_graph=True, allow_unused=True
        )
        for name, g in zip(params, grads, strict=True):
            if g is not None:
                exact[name] += c * g.detach() ** 2
    flat_exact = torch.cat([exact[n].reshape(-1) for n in params])
    flat_sampled = torch.cat([sampled[n].reshape(-1) for n in params])
    big = flat_exact > 1e-3 * flat_exact.max()
    assert big.sum() > 10
    # Monte-Carlo mean of 400 draws: each parameter within ~25 %, the total within 10 %
    ratio = flat_sampled[big] / flat_exact[big]
    assert float(ratio.median()) == pytest.approx(1.0, abs=0.1)
    assert float(flat_sampled.sum() / flat_exact.sum()) == pytest.approx(1.0, abs=0.1)
