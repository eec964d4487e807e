"""Smooth cutoff functions: 1 at r = 0, 0 with zero slope at r = r_c."""

from __future__ import annotations

import math

import torch


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Behler's ``f_c(r) = (cos(π r / r_c) + 1) / 2`` for ``r < r_c``, else 0 (C¹ at r_c)."""
    inside = r < cutoff
    value = 0.5 * (torch.cos(math.pi * r / cutoff) + 1.0)
    return torch.where(inside, value, torch.zeros_like(r))


def cosine_cutoff_slope(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``f_c'(r) = -π/(2 r_c) sin(π r / r_c)`` for ``r < r_c``, else 0."""
    inside = r < cutoff
    value = (-0.5 * math.pi / cutoff) * torch.sin(math.pi * r / cutoff)
    return torch.where(inside, value, torch.zeros_like(r))
