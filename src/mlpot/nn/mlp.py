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


def _activation_slope(activation: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``σ'(z)`` of the activations :func:`mlp` builds."""
    if isinstance(activation, torch.nn.SiLU):
        s = torch.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if isinstance(activation, torch.nn.Tanh):
        return 1.0 - torch.tanh(z) ** 2
    if isinstance(activation, torch.nn.Softplus):
        return torch.sigmoid(activation.beta * z)
    raise TypeError(f"no derivative for activation {type(activation).__name__}")


def mlp_with_jacobian(
    network: torch.nn.Sequential, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``y (n, K)`` of a network built by :func:`mlp` and their Jacobian with
    respect to the inputs ``∂y/∂x (n, K, F)``, row by row, by explicit reverse mode."""
    slopes = []
    h = x
    layers = list(network)
    for linear, activation in zip(layers[:-1:2], layers[1::2], strict=True):
        z = linear(h)
        slopes.append(_activation_slope(activation, z))  # (n, H)
        h = activation(z)
    y = layers[-1](h)  # (n, K)
    jacobian = layers[-1].weight  # (K, H): the same for every row until the first slope
    for linear, slope in zip(reversed(layers[:-1:2]), reversed(slopes), strict=True):
        jacobian = (jacobian * slope[:, None, :]) @ linear.weight  # (n, K, H_previous)
    return y, jacobian
