"""Training end to end on EMT copper, resumption, loss weights."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

from mlpot.calculators import load_calculator
from mlpot.data.dataset import read_dataset, sample_to_graph
from mlpot.data.graph import collate
from mlpot.models.registry import build_model
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict
from mlpot.training.config import parse_config
from mlpot.training.loss import LossWeights, compute_loss
from mlpot.training.run import run_training


def _config(data, output, **training):
    return parse_config(
        {
            "data": {"train": data, "validation_fraction": 0.15, "test_fraction": 0.15},
            "model": {"name": "bpnn", "cutoff": 4.5, "hidden": [32, 32]},
            "training": {
                "epochs": 40,
                "batch_size": 4,
                "learning_rate": 0.005,
                "progress": False,
                **training,
            },
            "output": str(output),
        }
    )


def test_bpnn_learns_emt_copper(emt_copper_xyz, tmp_path):
    """Bulk, vacancy, rattled and strained Cu: held-out errors well below the label spread."""
    result = run_training(_config(emt_copper_xyz, tmp_path / "run"))
    test = result.test_metrics
    force_rmse = test["forces"]["rmse"]
    energy_rmse = test["energy_per_atom"]["rmse"]
    stress_rmse = test["stress"]["rmse"]
    print(
        f"EMT Cu, 42 training cells, 40 epochs: test force RMSE {force_rmse * 1e3:.1f} meV/Å, "
        f"energy RMSE {energy_rmse * 1e3:.2f} meV/atom, stress RMSE {stress_rmse * 1e3:.2f} "
        "meV/Å³"
    )
    samples = read_dataset(emt_copper_xyz)
    label_force_rms = np.sqrt(np.mean(np.concatenate([s.forces for s in samples]) ** 2))
    assert force_rmse < 0.03, force_rmse  # labels have an RMS of ~0.3 eV/Å
    assert force_rmse < 0.15 * label_force_rms
    assert energy_rmse < 0.01
    assert stress_rmse < 0.01
    # the saved model, through the calculator, against the oracle on a new structure
    atoms = bulk("Cu", "fcc", a=3.63, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=99)
    atoms.calc = load_calculator(result.model_path)
    predicted = atoms.get_forces()
    atoms.calc = EMT()
    assert np.sqrt(np.mean((predicted - atoms.get_forces()) ** 2)) < 0.05
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["test"]["forces"]["rmse"] == pytest.approx(force_rmse)


def test_resumed_run_equals_uninterrupted_run(emt_copper_xyz, tmp_path):
    straight = run_training(_config(emt_copper_xyz, tmp_path / "a", epochs=6))
    run_training(_config(emt_copper_xyz, tmp_path / "b", epochs=3))
    resumed = run_training(_config(emt_copper_xyz, tmp_path / "b", epochs=6), resume=True)
    assert len(resumed.train.history) == 6
    for a, b in zip(straight.train.history, resumed.train.history, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-12)
    for a, b in zip(
        straight.train.model.state_dict().values(),
        resumed.train.model.state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bound", [None, 1e-3])
def test_clip_grad_norm_bounds_every_step(emt_copper_xyz, tmp_path, monkeypatch, bound):
    """The gradient each optimiser step takes has at most the norm ``clip_grad_norm``; the
    unclipped run's gradients are larger than the bound, so it does bite."""
    norms = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        norms.append(
            float(
                torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None])
                )
            )
        )
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    run_training(_config(emt_copper_xyz, tmp_path / "run", epochs=2, clip_grad_norm=bound))
    assert len(norms) > 10
    if bound is None:
        assert max(norms) > 1e-2
    else:
        assert max(norms) <= bound * (1 + 1e-6)


def test_existing_run_is_not_overwritten(emt_copper_xyz, tmp_path):
    from mlpot.errors import MlpotInputError

    run_training(_config(emt_copper_xyz, tmp_path / "c", epochs=1))
    with pytest.raises(MlpotInputError, match="--resume"):
        run_training(_config(emt_copper_xyz, tmp_path / "c", epochs=1))


def test_killed_training_resumes(emt_copper_xyz, tmp_path):
    """kill -9 in the middle of training, then --resume: the epochs continue, none lost."""
    config = {
        "data": {"train": emt_copper_xyz, "validation_fraction": 0.2},
        "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [16]},
        "training": {"epochs": 12, "batch_size": 4, "progress": False},
        "output": str(tmp_path / "run"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "mlpot.cli.main", "train", str(path)]
    history = tmp_path / "run" / "history.jsonl"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(history.read_text().splitlines())
    assert 2 <= done_before < 12
    finished = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    epochs = [json.loads(line)["epoch"] for line in history.read_text().splitlines()]
    # the epoch being run at the kill may be logged without its state: it is redone, and
    # every epoch from 1 to 12 is present
    assert sorted(set(epochs)) == list(range(1, 13))
    assert "stopped after 12 epochs" in finished.stdout


def test_loss_weights_from_label_noise():
    weights = LossWeights(energy_noise=0.002, forces_noise=0.05).resolved()
    assert weights["energy"] == pytest.approx(1 / 0.002**2)
    assert weights["forces"] == pytest.approx(1 / 0.05**2)
    assert weights["stress"] == LossWeights().stress  # no stress noise: the default weight
    with pytest.raises(ValueError):
        LossWeights(forces_noise=-1.0).resolved()


def test_net_force_term_vanishes_for_conservative_model(emt_copper_xyz):
    samples = read_dataset(emt_copper_xyz)[:4]
    model = build_model({"name": "bpnn", "elements": [29], "cutoff": 4.0}).double()
    batch = collate([sample_to_graph(s, 4.0, dtype=torch.float64) for s in samples])
    pred = predict(model, batch, forces=True, stress=True)
    weights = LossWeights(net_force=1.0).resolved()
    terms = compute_loss(pred, batch, weights)
    assert float(terms.net_force) < 1e-20
    # while a force field with a net force is penalised
    pred[outputs.FORCES] = pred[outputs.FORCES] + 0.1
    assert float(compute_loss(pred, batch, weights).net_force) > 1e-3


def test_committee_training_and_resume(emt_copper_xyz, tmp_path):
    """ensemble.size members with different seeds and bootstrap sets; model.pt is their mean."""
    from mlpot.models.checkpoint import load_model
    from mlpot.models.ensembles import Committee
    from mlpot.uncertainty.ensemble import predict_with_uncertainty

    raw = {
        "data": {"train": emt_copper_xyz, "validation_fraction": 0.2},
        "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [16]},
        "training": {"epochs": 3, "batch_size": 8, "progress": False},
        "ensemble": {"size": 3, "bootstrap": True},
        "output": str(tmp_path / "c"),
    }
    result = run_training(parse_config(raw))
    committee = load_model(result.model_path)
    assert isinstance(committee, Committee) and len(committee.members) == 3
    samples = read_dataset(emt_copper_xyz)[:2]
    batch = collate([sample_to_graph(s, 4.0, dtype=torch.float64) for s in samples])
    out = predict_with_uncertainty(committee, batch, forces=True, stress=True)
    mean = predict(committee, batch, forces=True)
    torch.testing.assert_close(out[outputs.FORCES], mean[outputs.FORCES])
    assert bool((out[outputs.FORCES_STD] > 0).all())  # members differ
    # a finished committee run resumes to the same model without retraining
    again = run_training(parse_config(raw), resume=True)
    for a, b in zip(
        committee.state_dict().values(), again.train.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_committee_members_train_at_once_in_processes(emt_copper_xyz, tmp_path):
    """``ensemble.workers: 2`` trains the members in processes of their own, to the same
    committee as one after another (one thread each: the same arithmetic)."""
    from mlpot.models.checkpoint import load_model

    raw = {
        "data": {"train": emt_copper_xyz, "validation_fraction": 0.2},
        "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [8]},
        "training": {"epochs": 2, "batch_size": 8, "progress": False},
        "ensemble": {"size": 2, "bootstrap": True, "workers": 2},
        "output": str(tmp_path / "parallel"),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parallel = load_model(run_training(parse_config(raw)).model_path)
        raw["ensemble"]["workers"], raw["output"] = 1, str(tmp_path / "serial")
        serial = load_model(run_training(parse_config(raw)).model_path)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "parallel" / "member_1" / "done").exists()
    for a, b in zip(serial.state_dict().values(), parallel.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_structures_in_memory_train_as_their_file(emt_copper_xyz, tmp_path):
    """``run_training`` takes labelled ``ase.Atoms`` (or samples) in memory: the same
    structures as a file give the same model, with no file written; bad labels are named."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlpot.errors import MlpotInputError

    frames = ase.io.read(emt_copper_xyz, index=":")  # labels in SinglePointCalculators
    raw = {
        "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [8]},
        "training": {"epochs": 2, "batch_size": 8, "progress": False},
    }
    validation = {"validation_fraction": 0.2}
    from_file = run_training(
        parse_config(
            {**raw, "data": {"train": emt_copper_xyz, **validation}, "output": str(tmp_path / "f")}
        )
    )
    in_memory = run_training(
        parse_config({**raw, "data": validation, "output": str(tmp_path / "m")}), train=frames
    )
    assert in_memory.validation_metrics == from_file.validation_metrics
    for a, b in zip(
        from_file.train.model.state_dict().values(),
        in_memory.train.model.state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b)
    assert not list((tmp_path / "m").glob("*.xyz"))
    unlabelled = frames[0].copy()
    unlabelled.calc = SinglePointCalculator(unlabelled, energy=1.0)
    config = parse_config({**raw, "output": str(tmp_path / "bad")})
    with pytest.raises(MlpotInputError, match=r"train \(in memory\).*frame 1.*forces"):
        run_training(config, train=[frames[1], unlabelled, frames[2]])
    with pytest.raises(MlpotInputError, match="no training structures"):
        run_training(config)


def test_committee_warm_start_continues_from_the_given_members(emt_copper_xyz, tmp_path):
    """``warm_start``: each member continues from the given model (weights, reference
    energies, normalisation): after one epoch it is as good as the committee it started
    from, and far better than one epoch from scratch."""
    from mlpot.models.checkpoint import load_model

    def raw(name, epochs):
        return {
            "data": {"train": emt_copper_xyz, "validation_fraction": 0.2},
            "model": {"name": "bpnn", "cutoff": 4.0, "hidden": [16]},
            "training": {"epochs": epochs, "batch_size": 8, "progress": False},
            "ensemble": {"size": 2, "bootstrap": True},
            "output": str(tmp_path / name),
        }

    first = run_training(parse_config(raw("first", 30)))
    members = list(load_model(first.model_path).member_models())
    warm = run_training(parse_config(raw("warm", 1)), warm_start=members)
    cold = run_training(parse_config(raw("cold", 1)))

    def force_rmse(result):
        return result.validation_metrics["forces"]["rmse"]

    assert force_rmse(warm) < 0.5 * force_rmse(cold)
    assert force_rmse(warm) < 1.5 * force_rmse(first)
    with pytest.raises(ValueError, match="3 members"):
        run_training(parse_config({**raw("bad", 1), "ensemble": {"size": 3}}), warm_start=members)


def test_refit_offsets_pins_the_constants_with_new_compositions():
    """A warm start re-fits the reference energies to the labels minus the rest of the
    model: with two compositions of Cu and Ag the two constants are determined, and every
    composition's mean energy is then reproduced exactly, whatever the network gives."""
    from ase.build import bulk

    from mlpot.data.dataset import samples_from_atoms
    from mlpot.data.graph import atoms_to_graph
    from mlpot.models.offsets import AtomicOffsets
    from mlpot.models.sum import SumModel
    from mlpot.training.initial_model import refit_offsets

    torch.manual_seed(0)
    network = build_model({"name": "bpnn", "elements": [29, 47], "cutoff": 4.0, "hidden": [8]})
    model = SumModel([AtomicOffsets([29, 47], [0.0, 0.0]), network]).double()
    frames = []
    for k, ag in enumerate([1, 1, 2, 2, 2]):  # Cu3Ag and Cu2Ag2 cells
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.numbers[:ag] = 47
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    samples = samples_from_atoms(frames, source="test")
    graphs = [atoms_to_graph(a, 4.0) for a in frames]
    refit_offsets(model, samples, graphs)
    predicted = np.array([float(predict(model, g, forces=False)["energy"]) for g in graphs])
    labels = np.array([a.get_potential_energy() for a in frames])
    for group in ([0, 1], [2, 3, 4]):
        assert (labels[group] - predicted[group]).mean() == pytest.approx(0.0, abs=1e-9)
    assert model.terms[0].config()["energies"] == pytest.approx(model.terms[0].energies.tolist())
