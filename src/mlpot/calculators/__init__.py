"""Adapters to simulation engines (ASE first)."""

from mlpot.calculators.ase_calculator import MlpotCalculator, load_calculator

__all__ = ["MlpotCalculator", "load_calculator"]
