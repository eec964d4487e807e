"""Oracles of active learning: the factory lives in :mod:`mlpot.calculators.oracles`
(delta-learning and validation use it too); re-exported here."""

from mlpot.calculators.oracles import ORACLES, PySCFCalculator, make_oracle

__all__ = ["ORACLES", "PySCFCalculator", "make_oracle"]
