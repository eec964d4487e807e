"""Multilayer perceptrons."""

from __future__ import annotations

import torch

ACTIVATIONS = {"silu": torch.nn.SiLU, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus}


def mlp(n_in: int, hidden: list[int], n_out: int, activation: str = "silu") -> torch.nn.Sequential:
    """Dense network ``n_in -> hidden... -> n_out`` with a smooth activation between layers."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    layers: list[torch.nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [torch.nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(torch.nn.Linear(width, n_out))
    return torch.nn.Sequential(*layers)
