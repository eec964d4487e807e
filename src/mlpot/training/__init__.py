"""Training: config, loss, loop, metrics. The public API other packages use."""

from mlpot.training.config import TrainConfig, load_config, parse_config
from mlpot.training.response import fit_response, fit_response_ensemble, response_metrics
from mlpot.training.run import RunResult, run_training

__all__ = [
    "RunResult",
    "TrainConfig",
    "fit_response",
    "fit_response_ensemble",
    "load_config",
    "parse_config",
    "response_metrics",
    "run_training",
]
