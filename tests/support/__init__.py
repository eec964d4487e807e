"""Importable helpers for tests (oracle factories referenced as ``module:factory``)."""
