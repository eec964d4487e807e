"""Second virial coefficient ``B₂(T)`` and Boyle temperature from a pair or dimer interaction.

For two monomers whose interaction ``u`` (eV) depends on the centre-of-mass distance ``r``
(Å) and, for molecules, on their relative orientation ``ω``::

    B₂(T) = -2π ∫₀^∞ ⟨f(r, ω)⟩_ω r² dr,     f = exp(-u / kT) - 1

per molecule (Å³; times ``N_A · 10⁻²⁴`` for cm³/mol). Atoms have one orientation; rigid
molecules are averaged over quasi-random relative orientations (:func:`dimer_curves`). The
Boyle temperature is the root of ``B₂(T) = 0`` (:func:`boyle_temperature`).

The interaction is tabulated once (:class:`InteractionCurves`: from any ASE calculator, a
learned potential included, or from a function) and every temperature reuses the table, so
a root search costs no further energy evaluations. The quadrature has three parts:

* **core** ``r < r₀`` (the first tabulated distance): ``f = -1``. It is checked, not assumed:
  a table whose ``⟨exp(-u/kT)⟩`` at ``r₀`` exceeds ``core_tolerance`` is refused, since a
  learned potential must not be asked below the distances it was trained on.
* **body** ``r₀ ≤ r ≤ r_end``: ``u`` interpolated along ``r`` (per orientation) by
  monotone cubic (PCHIP) pieces, which never overshoot the tabulated values (an ordinary
  spline through a coarse repulsive wall can dip far below it, and ``exp(-u/kT)`` then
  explodes), on a fine grid; Simpson's rule. Geometrically spaced distances
  (``np.geomspace``) put the points where ``u`` changes fastest: 200 of them from 0.8σ to
  8σ give the Lennard-Jones Boyle temperature to 2e-5.
* **tail** ``r > r_end``: either nothing (``tail=None``: ``u = 0`` beyond the table, as a
  learned potential is zero beyond its cutoff) or ``u = -C6/r⁶`` from
  ``tail.start`` (:class:`DispersionTail`), integrated exactly by its series. Truncating an
  ``r⁻⁶`` attraction matters: for Lennard-Jones cut at ``3σ`` the Boyle temperature falls by
  about 6 %. A ``C6`` can be fitted to the curve inside the cutoff
  (:func:`fit_dispersion_tail`) or taken from elsewhere.

Near the Boyle temperature ``B₂`` is a small difference of large terms, so it asks a lot
of a learned pair energy: for Lennard-Jones a uniform error of ``0.002 ε`` between ``0.8σ``
and ``2.6σ`` moves ``T_B`` by 1.3 % (for argon, ``2·10⁻⁵`` eV). For an mlpot model the zero
of ``u`` is its isolated-atom energy: put isolated atoms in the training set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.units import kB, mol
from scipy.integrate import simpson
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq
from scipy.spatial.transform import Rotation
from scipy.stats import qmc

from mlpot.errors import MlpotInputError

#: Å³ per molecule -> cm³/mol
CM3_PER_MOL = mol * 1e-24


def to_cm3_per_mol(b2: float | np.ndarray) -> float | np.ndarray:
    """``B₂`` in Å³ per molecule -> cm³/mol."""
    return b2 * CM3_PER_MOL


@dataclass(frozen=True)
class InteractionCurves:
    """Interaction energies ``u`` of two monomers along their centre-of-mass distance.

    Args:
        r: distances, Å, ``(n_r,)``, increasing, positive.
        u: interaction energies, eV, ``(n_orientations, n_r)`` (one row for atoms).
    """

    r: np.ndarray
    u: np.ndarray

    def __post_init__(self) -> None:
        r = np.asarray(self.r, dtype=float)
        u = np.atleast_2d(np.asarray(self.u, dtype=float))
        if r.ndim != 1 or len(r) < 4:
            raise MlpotInputError("need at least 4 distances in a 1D array", field="r")
        if r[0] <= 0 or np.any(np.diff(r) <= 0):
            raise MlpotInputError("distances must be positive and increasing", field="r")
        if u.shape[1] != len(r):
            raise MlpotInputError(f"u has {u.shape[1]} columns for {len(r)} distances", field="u")
        if not np.all(np.isfinite(u)):
            raise MlpotInputError("interaction energies contain NaN or inf", field="u")
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "u", u)

    @property
    def n_orientations(self) -> int:
        return self.u.shape[0]

    def energies(self, r: np.ndarray) -> np.ndarray:
        """``u`` (eV) at distances ``r`` (Å, inside the table) by monotone cubic pieces,
        ``(n_orientations, len(r))``."""
        return PchipInterpolator(self.r, self.u, axis=1)(r)

    def mean(self) -> np.ndarray:
        """Orientation-averaged ``u`` (eV), ``(n_r,)``."""
        return self.u.mean(axis=0)


@dataclass(frozen=True)
class DispersionTail:
    """Beyond ``start`` (Å) the interaction is ``-c6 / r⁶`` (``c6`` in eV Å⁶)."""

    c6: float
    start: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.c6) and self.c6 >= 0):
            raise MlpotInputError(f"c6 must be finite and >= 0, got {self.c6}", field="c6")
        if not self.start > 0:
            raise MlpotInputError(f"tail start must be positive, got {self.start}", field="start")

    def integral(self, kt: float) -> float:
        """``∫_start^∞ (exp(c6 / (kT r⁶)) - 1) r² dr`` (Å³), by its series
        ``Σ_n x^n start³ / (n! (6n - 3))`` with ``x = c6 / (kT start⁶)``."""
        x = self.c6 / (kt * self.start**6)
        total, term, n = 0.0, 1.0, 0
        while True:
            n += 1
            term *= x / n  # x^n / n!
            piece = term / (6 * n - 3)
            total += piece
            if piece <= 1e-17 * max(total, 1e-300) or n > 200:
                break
        return total * self.start**3


def lennard_jones(sigma: float, epsilon: float) -> Callable[[np.ndarray], np.ndarray]:
    """The full (uncut) Lennard-Jones pair energy ``4ε((σ/r)¹² - (σ/r)⁶)``: σ in Å, ε in eV."""

    def u(r: np.ndarray) -> np.ndarray:
        s6 = (sigma / np.asarray(r, dtype=float)) ** 6
        return 4.0 * epsilon * (s6 * s6 - s6)

    return u


def tabulate(u: Callable[[np.ndarray], np.ndarray], r: Sequence[float]) -> InteractionCurves:
    """A pair function ``u(r)`` (eV, r in Å, vectorised) as one-orientation curves."""
    r = np.asarray(r, dtype=float)
    return InteractionCurves(r, np.asarray(u(r), dtype=float)[None, :])


def _energy(atoms: Atoms, calc) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def pair_curves(calc, symbols: tuple[str, str], r: Sequence[float]) -> InteractionCurves:
    """``u(r) = E(pair at r) - E(atom a) - E(atom b)`` (eV) from an ASE calculator, for
    atoms ``symbols`` in vacuum at distances ``r`` (Å)."""
    a, b = symbols
    isolated = _energy(Atoms(a, positions=[[0, 0, 0]]), calc) + _energy(
        Atoms(b, positions=[[0, 0, 0]]), calc
    )
    u = [
        _energy(Atoms([a, b], positions=[[0, 0, 0], [0, 0, d]]), calc) - isolated
        for d in np.asarray(r, dtype=float)
    ]
    return InteractionCurves(np.asarray(r, dtype=float), np.asarray(u)[None, :])


def _centred(monomer: Atoms) -> Atoms:
    if monomer.pbc.any():
        raise MlpotInputError("monomers must be molecules (pbc False)", field="monomer")
    if len(monomer) == 0:
        raise MlpotInputError("a monomer has no atoms", field="monomer")
    centred = monomer.copy()
    centred.calc = None
    centred.positions -= centred.get_center_of_mass()
    return centred


def _orientation_pairs(count: int, seed: int) -> tuple[Rotation, Rotation]:
    """``count`` pairs of uniform rotations from a scrambled Sobol sequence in 6 dimensions
    (quasi-Monte Carlo: more even than independent draws), through Shoemake's map of three
    uniform numbers to a uniform unit quaternion."""
    u = qmc.Sobol(d=6, scramble=True, seed=seed).random(count)  # (count, 6)

    def quaternions(v: np.ndarray) -> np.ndarray:
        a, b = np.sqrt(1.0 - v[:, 0]), np.sqrt(v[:, 0])
        t1, t2 = 2 * np.pi * v[:, 1], 2 * np.pi * v[:, 2]
        return np.stack([a * np.sin(t1), a * np.cos(t1), b * np.sin(t2), b * np.cos(t2)], 1)

    return Rotation.from_quat(quaternions(u[:, :3])), Rotation.from_quat(quaternions(u[:, 3:]))


def dimer_curves(
    monomer_a: Atoms,
    monomer_b: Atoms,
    calc,
    r: Sequence[float],
    *,
    orientations: int = 32,
    seed: int = 0,
) -> InteractionCurves:
    """Interaction energies of two rigid monomers, ``u = E(a + b) - E(a) - E(b)`` (eV), at
    centre-of-mass distances ``r`` (Å) along z, for ``orientations`` random relative
    orientations (each monomer rotated uniformly about its centre of mass, the pairs of
    rotations a scrambled Sobol sequence of ``seed``; a power of two keeps its balance).
    Costs ``orientations · len(r) + 2`` calculator calls.
    """
    if orientations < 1:
        raise MlpotInputError("orientations must be at least 1", field="orientations")
    a, b = _centred(monomer_a), _centred(monomer_b)
    isolated = _energy(a, calc) + _energy(b, calc)
    rot_a, rot_b = _orientation_pairs(orientations, seed)
    r = np.asarray(r, dtype=float)
    u = np.empty((orientations, len(r)))
    for k in range(orientations):
        pos_a = rot_a[k].apply(a.positions)
        pos_b = rot_b[k].apply(b.positions)
        for j, d in enumerate(r):
            dimer = Atoms(
                list(a.symbols) + list(b.symbols),
                positions=np.vstack([pos_a, pos_b + [0.0, 0.0, d]]),
            )
            u[k, j] = _energy(dimer, calc) - isolated
    return InteractionCurves(r, u)


def fit_dispersion_tail(
    curves: InteractionCurves, window: tuple[float, float], *, start: float | None = None
) -> DispersionTail:
    """``-C6/r⁶`` fitted (least squares) to the orientation-averaged ``u`` at the tabulated
    distances inside ``window`` (Å); the tail starts at ``start`` (default: the window's
    upper end). Choose the window where the ``r⁻¹²``-like repulsion is negligible and, for a
    learned potential, below the onset of its cutoff envelope."""
    lo, hi = window
    inside = (curves.r >= lo) & (curves.r <= hi)
    if inside.sum() < 2:
        raise MlpotInputError(
            f"fewer than 2 tabulated distances in the window {window} Å", field="window"
        )
    x = curves.r[inside] ** -6.0
    c6 = -float(np.dot(x, curves.mean()[inside]) / np.dot(x, x))
    if c6 < 0:
        raise MlpotInputError(
            f"the curve is repulsive in the window {window} Å (fitted C6 = {c6:.3g} eV Å⁶)",
            field="window",
        )
    return DispersionTail(c6=c6, start=float(hi if start is None else start))


def _mayer_integral(
    curves: InteractionCurves, kt: float, r_end: float, points: int, core_tolerance: float
) -> float:
    """``-∫₀^{r_end} ⟨f⟩ r² dr`` (Å³) with ``f = -1`` below the table (checked)."""
    r0 = curves.r[0]
    boltzmann0 = np.exp(-curves.u[:, 0] / kt).mean()
    if boltzmann0 > core_tolerance:
        raise MlpotInputError(
            f"at the shortest distance {r0:.3f} Å, <exp(-u/kT)> = {boltzmann0:.2e} exceeds "
            f"{core_tolerance:g} at T = {kt / kB:.1f} K: the core is not closed there; "
            "tabulate from shorter distances or stay at lower temperatures",
            field="r",
        )
    grid = np.linspace(r0, r_end, points)
    mayer = np.exp(-curves.energies(grid) / kt).mean(axis=0) - 1.0
    return r0**3 / 3.0 - float(simpson(mayer * grid**2, x=grid))


def second_virial(
    curves: InteractionCurves,
    temperature: float | Sequence[float],
    *,
    tail: DispersionTail | None = None,
    points: int = 4001,
    core_tolerance: float = 1e-4,
) -> np.ndarray:
    """``B₂(T)`` in Å³ per molecule (see the module docstring) at ``temperature`` (K, one
    or many); :func:`to_cm3_per_mol` converts.

    Args:
        curves: the tabulated interaction.
        tail: ``-C6/r⁶`` beyond ``tail.start`` (which must lie inside the table); None
            takes ``u = 0`` beyond the last tabulated distance.
        points: grid points of Simpson's rule between the first distance and the tail.
        core_tolerance: the largest ``⟨exp(-u/kT)⟩`` accepted at the first distance.
    """
    temperatures = np.atleast_1d(np.asarray(temperature, dtype=float))
    if np.any(~np.isfinite(temperatures)) or np.any(temperatures <= 0):
        raise MlpotInputError("temperatures must be positive (K)", field="temperature")
    r_end = curves.r[-1] if tail is None else tail.start
    if not curves.r[0] < r_end <= curves.r[-1]:
        raise MlpotInputError(
            f"tail start {r_end} Å must lie inside the table ({curves.r[0]}, {curves.r[-1]}] Å",
            field="tail",
        )
    b2 = np.empty_like(temperatures)
    for k, t in enumerate(temperatures):
        kt = kB * t
        integral = _mayer_integral(curves, kt, r_end, points, core_tolerance)
        if tail is not None:
            integral -= tail.integral(kt)
        b2[k] = 2.0 * math.pi * integral
    return b2 if np.ndim(temperature) else b2[0]


def boyle_temperature(
    curves: InteractionCurves,
    bracket: tuple[float, float],
    *,
    tail: DispersionTail | None = None,
    points: int = 4001,
    core_tolerance: float = 1e-4,
    xtol: float = 1e-6,
) -> float:
    """The temperature (K) inside ``bracket`` (K) where ``B₂ = 0``, by Brent's method.
    Raises :class:`MlpotInputError` if ``B₂`` has the same sign at both ends."""
    low, high = bracket
    if not 0 < low < high:
        raise MlpotInputError(f"need 0 < low < high, got {bracket}", field="bracket")

    def b2(t: float) -> float:
        return float(
            second_virial(curves, t, tail=tail, points=points, core_tolerance=core_tolerance)
        )

    at_low, at_high = b2(low), b2(high)
    if at_low * at_high > 0:
        raise MlpotInputError(
            f"B2 has the same sign at {low} K ({at_low:.3g} Å³) and {high} K "
            f"({at_high:.3g} Å³): widen the bracket",
            field="bracket",
        )
    return float(brentq(b2, low, high, xtol=xtol))
