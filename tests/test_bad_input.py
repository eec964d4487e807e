"""Bad input fails with an MlpotInputError naming the file, the frame and the field.

Bad frames are deliberately not the first one, so a message that says ``frame 0`` for
everything would be caught.
"""

from __future__ import annotations

import re
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from typer.testing import CliRunner

from mlpot.calculators.ase_calculator import MlpotCalculator
from mlpot.cli.main import app
from mlpot.data.dataset import LabelKeys, read_dataset, sample_to_graph
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_model, save_model
from mlpot.models.registry import build_model
from mlpot.training.config import load_config

LJ_SPEC = {"name": "lj", "elements": [29], "sigma": 2.3, "epsilon": 0.4}


def cu_frames(n: int = 3, *, stress: bool = True) -> list[Atoms]:
    """Periodic Cu frames labelled by EMT, results in a SinglePointCalculator."""
    frames = []
    for seed in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if stress:
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def check_message(err: MlpotInputError, source, frame: int | None, field: str | None) -> None:
    """The message names the place, and the structured attributes agree with it."""
    message = str(err)
    assert str(source) in message
    assert err.source == str(source)
    if frame is not None:
        assert re.search(rf"\bframe {frame}\b", message), message
        assert err.frame == frame
    if field is not None:
        assert field in message
        assert err.field == field


def read_error(path, keys: LabelKeys | None = None) -> MlpotInputError:
    with pytest.raises(MlpotInputError) as info:
        read_dataset(path, keys or LabelKeys())
    return info.value


# ------------------------------------------------------------------------ labels


def test_missing_energy_label(tmp_path):
    frames = cu_frames()
    del frames[1].calc.results["energy"]
    path = tmp_path / "no_energy.xyz"
    ase.io.write(path, frames)

    err = read_error(path)

    check_message(err, path, 1, "energy")
    assert "missing energy" in str(err)


def test_missing_forces_label(tmp_path):
    frames = cu_frames()
    del frames[2].calc.results["forces"]
    path = tmp_path / "no_forces.xyz"
    ase.io.write(path, frames)

    err = read_error(path)

    check_message(err, path, 2, "forces")
    assert "missing forces" in str(err)


def test_missing_user_key_names_that_key(tmp_path):
    frames = cu_frames(stress=False)
    for k, atoms in enumerate(frames):
        if k != 1:
            atoms.info["dft_energy"] = -1.0 * k
    path = tmp_path / "dft.xyz"
    ase.io.write(path, frames)

    err = read_error(path, LabelKeys(energy="dft_energy"))

    check_message(err, path, 1, "dft_energy")


def test_nan_in_forces(tmp_path):
    frames = cu_frames()
    frames[1].calc.results["forces"][2, 1] = np.nan
    path = tmp_path / "nan_forces.xyz"
    ase.io.write(path, frames)

    err = read_error(path)

    check_message(err, path, 1, "forces")
    assert "NaN" in str(err)


def test_inf_in_energy(tmp_path):
    frames = cu_frames()
    frames[2].calc.results["energy"] = np.inf
    path = tmp_path / "inf_energy.xyz"
    ase.io.write(path, frames)

    err = read_error(path)

    check_message(err, path, 2, "energy")
    assert "inf" in str(err)


def test_forces_of_wrong_shape_in_database_data(tmp_path):
    path = tmp_path / "x.db"
    with ase.db.connect(path) as db:
        for k in range(3):
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
            n_rows = len(atoms) + 1 if k == 2 else len(atoms)
            db.write(
                atoms,
                key_value_pairs={"dft_energy": -3.0},
                data={"dft_forces": np.zeros((n_rows, 3))},
            )

    err = read_error(path, LabelKeys(energy="dft_energy", forces="dft_forces"))

    check_message(err, path, 2, "dft_forces")
    assert "(5, 3)" in str(err) and "(4, 3)" in str(err)


def test_stress_label_on_a_molecule(tmp_path):
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]], pbc=False)
    molecule.calc = SinglePointCalculator(
        molecule, energy=-0.5, forces=np.zeros((2, 3)), stress=np.zeros(6)
    )
    frames = cu_frames(1) + [molecule] + cu_frames(1)
    path = tmp_path / "molecule_stress.xyz"
    ase.io.write(path, frames)

    err = read_error(path)

    check_message(err, path, 1, "stress")
    assert "periodic" in str(err)


# -------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    "name",
    [
        "empty.xyz",
        "empty.json",
        "empty.db",
    ],
)
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")

    err = read_error(path)

    check_message(err, path, None, None)
    assert path.stat().st_size == 0, "reading must not modify the input"


@pytest.mark.parametrize("name", ["missing.xyz", "missing.db"])
def test_file_not_found(tmp_path, name):
    path = tmp_path / name

    err = read_error(path)

    check_message(err, path, None, None)
    assert "not found" in str(err)
    assert not path.exists()


def test_unparseable_file(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_text("this is not\nan extxyz file\n")

    err = read_error(path)

    check_message(err, path, None, None)


# ------------------------------------------------------------------ graphs, models


def test_unknown_element_at_prediction_time():
    model = build_model(LJ_SPEC)
    atoms = Atoms("Cu2O", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    atoms.calc = MlpotCalculator(model)

    with pytest.raises(MlpotInputError) as info:
        atoms.get_potential_energy()

    message = str(info.value)
    assert re.search(r"\bO\b", message), message
    assert info.value.field == "numbers"


def test_overlapping_atoms_become_an_error_when_graphed(tmp_path):
    frames = cu_frames()
    frames[2].positions[3] = frames[2].positions[1]
    path = tmp_path / "overlap.xyz"
    ase.io.write(path, frames)
    samples = read_dataset(path)

    graphs = [sample_to_graph(s, 4.0, dtype=torch.float64) for s in samples[:2]]
    with pytest.raises(MlpotInputError) as info:
        sample_to_graph(samples[2], 4.0, dtype=torch.float64)

    assert len(graphs) == 2
    check_message(info.value, path, 2, "positions")
    assert "overlap" in str(info.value)


# ------------------------------------------------------------------------- configs

CONFIG_DATA = "data:\n  train: train.xyz\n"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (CONFIG_DATA + "model:\n  name: lj\nbogus_section: 1\n", "bogus_section"),
        (CONFIG_DATA + "  valdation_fraction: 0.2\n", "valdation_fraction"),
        (CONFIG_DATA + "training:\n  epochz: 3\n", "epochz"),
        (CONFIG_DATA + "model:\n  name: nosuchmodel\n", "nosuchmodel"),
        (CONFIG_DATA + "model:\n  name: lj\n  sigmaa: 2.0\n", "sigmaa"),
        (CONFIG_DATA + "model:\n  name: bpnn\n  angular_etas: []\n", "angular_etas"),
    ],
    ids=[
        "unknown-section",
        "unknown-data-key",
        "unknown-training-key",
        "model-name",
        "model-arg",
        "empty-angular-etas",
    ],  # fmt: skip
)
def test_bad_config_names_file_and_key(tmp_path, text, key):
    path = tmp_path / "config.yaml"
    path.write_text(text)

    with pytest.raises(MlpotInputError) as info:
        load_config(path)

    message = str(info.value)
    assert str(path) in message
    assert key in message


def test_bad_config_model_name_says_it_is_the_model_name(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_DATA + "model:\n  name: nosuchmodel\n")

    with pytest.raises(MlpotInputError) as info:
        load_config(path)

    assert "model.name" in str(info.value)
    assert "lj" in str(info.value)  # lists the choices


def test_invalid_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  train: [train.xyz\nmodel: {\n")

    with pytest.raises(MlpotInputError) as info:
        load_config(path)

    assert str(path) in str(info.value)
    assert "YAML" in str(info.value)
    assert "line 2" in str(info.value)


def test_valid_config_loads(tmp_path):
    """Control for the config tests above: the same base config is accepted."""
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_DATA + "model:\n  name: lj\n  sigma: 2.0\n")

    config = load_config(path)

    assert config.data.train == [str(tmp_path / "train.xyz")]
    assert config.model == {"name": "lj", "sigma": 2.0}


# --------------------------------------------------------------------- checkpoints


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("definitely not a checkpoint\n")

    with pytest.raises(MlpotInputError) as info:
        load_model(path)

    check_message(info.value, path, None, None)
    assert "checkpoint" in str(info.value)


def test_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"weights": torch.zeros(3)}, path)

    with pytest.raises(MlpotInputError) as info:
        load_model(path)

    check_message(info.value, path, None, None)
    assert "not an mlpot model checkpoint" in str(info.value)


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "nowhere.pt"

    with pytest.raises(MlpotInputError) as info:
        load_model(path)

    check_message(info.value, path, None, None)


# ----------------------------------------------------------------------------- CLI


def run_cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_eval_on_bad_data_exits_2_with_the_message(tmp_path):
    model_path = tmp_path / "model.pt"
    save_model(model_path, build_model(LJ_SPEC))
    frames = cu_frames(stress=False)
    frames[1].calc.results["forces"][0, 0] = np.nan
    data = tmp_path / "bad.xyz"
    ase.io.write(data, frames)

    result = run_cli("eval", model_path, data)

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no stray exception
    assert "Traceback" not in result.output
    assert str(data) in result.output
    assert "frame 1" in result.output
    assert "'forces'" in result.output


def test_cli_eval_on_good_data_is_a_control(tmp_path):
    model_path = tmp_path / "model.pt"
    save_model(model_path, build_model(LJ_SPEC))
    data = tmp_path / "good.xyz"
    ase.io.write(data, cu_frames(stress=False))

    result = run_cli("eval", "--json", model_path, data)

    assert result.exit_code == 0, result.output
    assert str(data) in result.output


def test_cli_eval_with_a_bad_model_file_exits_2(tmp_path):
    model_path = tmp_path / "model.pt"
    model_path.write_text("not a model\n")
    data = tmp_path / "good.xyz"
    ase.io.write(data, cu_frames(stress=False))

    result = run_cli("eval", model_path, data)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert str(model_path) in result.output


def test_impossible_split_fractions_are_a_config_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data: {train: tr.xyz, validation_fraction: 0.6, test_fraction: 0.5}\n")
    with pytest.raises(MlpotInputError, match="validation_fraction") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_too_few_structures_to_split(tmp_path):
    from mlpot.training.config import parse_config
    from mlpot.training.run import run_training

    data = tmp_path / "one.xyz"
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = EMT()
    atoms.get_forces()
    ase.io.write(data, atoms)
    config = parse_config({"data": {"train": str(data)}, "output": str(tmp_path / "run")})
    with pytest.raises(MlpotInputError, match="cannot split 1 structures") as info:
        run_training(config)
    assert str(data) in str(info.value)


def test_sum_model_in_config_is_accepted(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "data: {train: tr.xyz}\nmodel: {name: sum, terms: [{name: lj, elements: [29]}]}\n"
    )
    assert load_config(path).model["name"] == "sum"


def test_asymmetric_stress_label(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info["REF_energy"] = -1.0
    atoms.arrays["REF_forces"] = np.zeros((1, 3))
    atoms.info["REF_stress"] = np.arange(9.0).reshape(3, 3)
    path = tmp_path / "asym.xyz"
    ase.io.write(path, [atoms])
    with pytest.raises(MlpotInputError, match="not symmetric"):
        read_dataset(path)


def test_frames_sharing_one_live_calculator_are_refused():
    """A calculator shared by several frames holds the last frame's results only: reading
    them as every frame's labels would be silently wrong."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    from mlpot.data.dataset import samples_from_atoms

    shared = EMT()
    frames = []
    for k in range(3):
        atoms = molecule("CH4")
        atoms.rattle(0.05, seed=k)
        atoms.calc = shared
        atoms.get_forces()
        frames.append(atoms)
    with pytest.raises(MlpotInputError, match=r"frame 0: its calculator's results belong"):
        samples_from_atoms(frames)
    assert len(samples_from_atoms(frames[2:])) == 1  # the last one's are its own
