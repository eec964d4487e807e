"""Active learning: oracles, exploration, selection, labelling, the provenance store."""

from mlpot.active.oracles import ORACLES, make_oracle

__all__ = ["ORACLES", "make_oracle"]
