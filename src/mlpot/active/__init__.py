"""Active learning: oracles, exploration, selection, labelling, the provenance store."""

from mlpot.active.config import LearnConfig, load_learn_config, parse_learn_config
from mlpot.active.loop import LearnResult, learn
from mlpot.active.oracles import ORACLES, make_oracle

__all__ = [
    "ORACLES",
    "LearnConfig",
    "LearnResult",
    "learn",
    "load_learn_config",
    "make_oracle",
    "parse_learn_config",
]
