"""The example configs in examples/ are valid, and the training one trains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlpot.active.config import load_learn_config
from mlpot.training.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "emt_copper"


def test_learn_example_is_valid():
    config = load_learn_config(EXAMPLES / "learn.yaml")
    assert config.system == "cu-fcc,cu-vacancy" and config.oracle.name == "emt"


def test_train_example_trains(tmp_path):
    for name in ("config.yaml", "make_data.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "make_data.py"], cwd=tmp_path, check=True, env=env)
    config = load_config(tmp_path / "config.yaml")
    # every section of the example is set explicitly (it documents the keys)
    assert config.ensemble.size == 3 and config.data.test_fraction > 0
    # a shortened run through the CLI: the example's data and model train end to end
    text = (tmp_path / "config.yaml").read_text()
    (tmp_path / "short.yaml").write_text(text.replace("epochs: 200", "epochs: 2"))
    done = subprocess.run(
        [sys.executable, "-m", "mlpot.cli.main", "train", "short.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "cu-run" / "model.pt").exists()
