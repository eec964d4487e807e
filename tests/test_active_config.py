"""The learn config refuses combinations that cannot run, before any oracle call."""

import pytest
import yaml
from typer.testing import CliRunner

from mlpot.active import parse_learn_config
from mlpot.cli.main import app
from mlpot.errors import MlpotInputError

LJ = {"name": "lj", "sigma": 2.3, "epsilon": 0.4}


@pytest.mark.parametrize(
    "raw, keys",
    [
        ({"train": {"model": LJ}}, ["select.strategy: d_optimal", "train.model 'lj'"]),
        (
            {"train": {"model": LJ}, "select": {"strategy": "random", "t2_quantile": 0.99}},
            ["select.t2_quantile"],
        ),
        ({"stop": {"oracle_budget": 10}}, ["stop.oracle_budget (10)", "initial.count (32)"]),
        ({"label": {"scheduler": "tcp://127.0.0.1:1"}}, ["label.scheduler", "label.executor"]),
    ],
)
def test_combinations_that_cannot_run_are_named(raw, keys):
    with pytest.raises(MlpotInputError) as err:
        parse_learn_config(raw)
    for key in keys:
        assert key in str(err.value)


def test_models_with_features_run_every_selection():
    for model in ({"name": "bpnn"}, {"name": "mpnn"}):
        config = parse_learn_config({"train": {"model": model}, "select": {"t2_quantile": 0.99}})
        assert config.select.strategy == "d_optimal"


def test_the_command_stops_before_any_work(tmp_path):
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump({"train": {"model": LJ}, "output": "run"}))
    result = CliRunner().invoke(app, ["learn", str(path)])
    assert result.exit_code == 2 and "need per-atom features" in result.output
    assert not (tmp_path / "run").exists()
