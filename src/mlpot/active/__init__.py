"""Active learning: exploration, selection, labelling, the provenance store.

Oracles are built by :func:`mlpot.calculators.oracles.make_oracle`.
"""

from mlpot.active.config import LearnConfig, load_learn_config, parse_learn_config
from mlpot.active.loop import LearnResult, learn

__all__ = [
    "LearnConfig",
    "LearnResult",
    "learn",
    "load_learn_config",
    "parse_learn_config",
]
