"""Radial bases and smooth envelopes for message passing.

``bessel_basis`` is the spherical Bessel function of order zero on ``[0, r_c]``::

    b_n(r) = sin(n π r / r_c) / (r / r_c),        n = 1 .. n_basis,

the eigenfunctions of a particle in a sphere of radius ``r_c`` (orthogonal, smooth, zero at
``r_c``), here dimensionless and of order one (``b_n(0) = n π``) so that networks fed with
them start with well-scaled activations.

``polynomial_envelope`` is the switching function of Gasteiger et al. (DimeNet)::

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2),   x = r / r_c,

``u(0) = 1``; ``u``, ``u'`` and ``u''`` vanish at ``x = 1``, and ``u = 0`` beyond, so
anything multiplied by it goes to zero at the cutoff with a continuous force and a
continuous force constant.

``soft_floor`` keeps a learned radial function inside the distances it was trained on::

    r_eff = r                                   for r >= f
    r_eff = f − w g((f − r) / w)                for r <  f,    g(x) = x / (1 + x⁴)^¼

with ``f`` the shortest distance seen in training (per pair of elements) and ``w`` a width:
the identity above the floor (trained distances are untouched), within ``x⁵/4`` of it just
below (so distances a little shorter than the data, as in hotter MD, are nearly as given),
continuous with four derivatives at ``f``, and bounded below by ``f − w``, so that a
network of ``r_eff`` follows its own slope a little below the data and then levels off
instead of growing without bound at short range (where a physical repulsion, e.g. ZBL,
takes over).
"""

from __future__ import annotations

import math

import torch


def bessel_basis(r: torch.Tensor, cutoff: float, n_basis: int) -> torch.Tensor:
    """``b_n(r)`` for ``r`` in Å (``(E,)``, all positive): shape ``(E, n_basis)``, no unit."""
    n = torch.arange(1, n_basis + 1, dtype=r.dtype, device=r.device)  # (B,)
    x = (r / cutoff)[:, None]  # (E, 1)
    return torch.sin(n * math.pi * x) / x  # (E, B)


def polynomial_envelope(r: torch.Tensor, cutoff: float, power: int = 6) -> torch.Tensor:
    """``u(r / r_c)`` (dimensionless), exactly zero for ``r >= r_c``; shape of ``r``."""
    if power < 2:
        raise ValueError(f"envelope power must be at least 2, got {power}")
    p = float(power)
    x = r / cutoff
    xp = x.pow(power)
    value = (
        1.0
        - 0.5 * (p + 1.0) * (p + 2.0) * xp
        + p * (p + 2.0) * xp * x
        - 0.5 * p * (p + 1.0) * xp * x * x
    )
    return torch.where(r < cutoff, value, torch.zeros_like(r))


def soft_floor(
    r: torch.Tensor, floor: torch.Tensor, width: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``r_eff`` (Å, shape of ``r``) of the module docstring and its derivative
    ``d r_eff / d r``; ``floor`` broadcasts against ``r`` (a floor of 0 leaves ``r`` as is)."""
    x = (floor - r).clamp(min=0.0) / width
    root = (1.0 + x**4) ** -0.25  # (1 + x⁴)^(-1/4)
    r_eff = torch.where(r < floor, floor - width * x * root, r)
    return r_eff, torch.where(r < floor, root**5, torch.ones_like(r))
