"""Training: config, loss, loop, metrics. The public API other packages use."""

from mlpot.training.config import TrainConfig, load_config, parse_config
from mlpot.training.run import RunResult, run_training

__all__ = ["RunResult", "TrainConfig", "load_config", "parse_config", "run_training"]
