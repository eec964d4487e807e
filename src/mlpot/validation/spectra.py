"""Harmonic infrared spectra: normal modes from a Hessian, intensities from dipole
derivatives along them.

For mass-weighted normal modes ``e_k`` (eigenvectors of ``M^-1/2 H M^-1/2``, frequencies
``ω_k``), the IR intensity is ``I_k = |Σ_j (∂μ/∂x_j) e_kj / √m_j|²``: in (D/Å)²/amu, the
unit ASE's ``Infrared`` reports (μ in Debye, x in Å, m in amu), with which
:func:`harmonic_ir` agrees when both use the same finite differences (tests). The Hessian
comes from a model's autograd (an mlpot energy model) or from central differences of an
ASE calculator's forces; the dipole derivatives from a dipole model's autograd or from
central differences of a calculator's dipole (e.g. GFN2-xTB). Rigid-body modes (3
translations and 2 or 3 rotations of a free molecule) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units

from mlpot.data.graph import graph_to
from mlpot.models.base import EnergyModel
from mlpot.models.response import (
    DipoleModel,
    PolarizabilityModel,
    ResponseEnsemble,
    response_graph,
)
from mlpot.validation.hessian import finite_difference_hessian, model_hessian, rigid_modes

#: cm⁻¹ per sqrt(eV/Å²/amu): ħ·sqrt(eV/(Å² amu)) expressed as a wavenumber.
_WAVENUMBER = 1e10 * units._hbar / np.sqrt(units._e * units._amu) / (units.invcm * 1.0)


@dataclass(frozen=True)
class HarmonicSpectrum:
    """Vibrational modes of a structure, softest first, rigid-body modes left out.

    Attributes:
        frequencies: ``(M,)`` cm⁻¹ (imaginary ones negative).
        intensities: ``(M,)``: IR intensities (D/Å)²/amu, or Raman activities Å⁴/amu; for
            an ensemble of response models, the members' mean.
        modes: ``(M, 3N)`` mass-weighted eigenvectors (rows, unit norm).
        unit: the unit of the intensities.
        members: ``(K, M)`` every member's intensities (an ensemble), else None.
        spread_scale: calibration factor of the members' spread (an ensemble's ``scale``,
            fitted on the response values; applied to the intensities' spread to first
            order, their deviations being linear in the members' response deviations).
    """

    frequencies: np.ndarray
    intensities: np.ndarray
    modes: np.ndarray
    unit: str = "(D/Å)²/amu"
    members: np.ndarray | None = None
    spread_scale: float = 1.0

    @property
    def spread(self) -> np.ndarray | None:
        """``(M,)`` the members' standard deviation of each intensity times the calibrated
        ``spread_scale`` (None: one model)."""
        if self.members is None:
            return None
        return self.spread_scale * self.members.std(0, ddof=1)

    def table(self) -> str:
        """Frequencies and intensities (absolute, ± the members' std for an ensemble, and
        relative to the strongest band)."""
        strongest = max(float(self.intensities.max()), 1e-300)
        spread = self.spread
        lines = [
            f"{'mode':>4} {'cm^-1':>9} {self.unit:>11}"
            + (f" {'± std':>9}" if spread is not None else "")
            + f" {'relative':>9}"
        ]
        for k, (f, i) in enumerate(zip(self.frequencies, self.intensities, strict=True)):
            band = f" {spread[k]:>9.4f}" if spread is not None else ""
            lines.append(f"{k:>4} {f:>9.1f} {i:>11.4f}{band} {i / strongest:>9.3f}")
        return "\n".join(lines)

    def broadened(self, grid: np.ndarray, width: float = 10.0) -> np.ndarray:
        """The spectrum on ``grid`` (cm⁻¹) as Lorentzians of half width ``width`` cm⁻¹
        (areas = intensities)."""
        return self._lines(grid, width) @ self.intensities

    def broadened_spread(self, grid: np.ndarray, width: float = 10.0) -> np.ndarray | None:
        """The members' standard deviation of the broadened spectrum at each point of
        ``grid`` (the error band), or None for one model."""
        if self.members is None:
            return None
        return self.spread_scale * (self._lines(grid, width) @ self.members.T).std(1, ddof=1)

    def _lines(self, grid: np.ndarray, width: float) -> np.ndarray:
        return (width / np.pi) / ((grid[:, None] - self.frequencies[None, :]) ** 2 + width**2)


def hessian(atoms: Atoms, energy, *, delta: float = 0.01) -> np.ndarray:
    """``(3N, 3N)`` eV/Å²: the autograd Hessian of an mlpot energy model, central
    differences (``delta`` Å) of an ASE calculator's forces, or ``energy`` itself when it
    is already the Hessian (an array, e.g. one the validation computed before)."""
    if isinstance(energy, np.ndarray):
        return energy
    if isinstance(energy, EnergyModel):
        return model_hessian(energy, atoms)
    return finite_difference_hessian(atoms, energy, delta)


def _derivatives(atoms: Atoms, response, kind: str, delta: float) -> np.ndarray:
    """``∂y/∂x`` ``(3N, *shape)`` of a response ``y`` of ``kind`` (``dipole`` or
    ``polarizability``): by autograd of a response model, or by central differences
    (``delta`` Å) of a calculator's property."""
    if isinstance(response, DipoleModel | PolarizabilityModel):
        parameter = next(response.parameters())
        graph = response_graph(
            atoms, response, dtype=parameter.dtype, labelled=False, source="atoms"
        )
        graph = graph_to(graph, parameter.device)
        positions = graph["positions"].detach().requires_grad_(True)
        graph["positions"] = positions
        value = response(graph)[0]
        flat = value.reshape(-1)
        rows = [
            torch.autograd.grad(flat[c], positions, retain_graph=c < flat.numel() - 1)[0]
            for c in range(flat.numel())
        ]
        out = torch.stack([row.reshape(-1) for row in rows], dim=1)  # (3N, C)
        return out.detach().double().cpu().numpy().reshape(-1, *value.shape)
    rows = []
    for j in range(3 * len(atoms)):
        values = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[j // 3, j % 3] += sign * delta
            moved.calc = response
            values.append(np.asarray(response.get_property(kind, moved), dtype=np.float64))
        rows.append((values[0] - values[1]) / (2 * delta))
    return np.array(rows)


def dipole_derivatives(atoms: Atoms, dipole, *, delta: float = 0.01) -> np.ndarray:
    """``∂μ/∂x`` ``(3N, 3)`` e: by autograd of a :class:`DipoleModel`, or by central
    differences (``delta`` Å) of an ASE calculator's dipole."""
    return _derivatives(atoms, dipole, "dipole", delta)


def _normal_modes(atoms: Atoms, energy, delta: float):
    """Frequencies (cm⁻¹, imaginary negative), mass-weighted modes ``(3N, 3N)`` (columns)
    and ``M^-1/2`` ``(3N,)``."""
    inverse_root = np.repeat(atoms.get_masses() ** -0.5, 3)  # (3N,)
    h = hessian(atoms, energy, delta=delta)
    weighted = inverse_root[:, None] * h * inverse_root[None, :]
    eigenvalues, vectors = np.linalg.eigh(0.5 * (weighted + weighted.T))
    frequencies = np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * _WAVENUMBER
    return frequencies, vectors, inverse_root


def _vibrations_only(atoms: Atoms, frequencies: np.ndarray) -> np.ndarray:
    """Indices of the modes that are not rigid-body motions, in ascending order."""
    return np.sort(np.argsort(np.abs(frequencies))[rigid_modes(atoms) :])


def _members(response) -> tuple[list, float]:
    """The response members and the calibration factor of their spread: a list as given
    (uncalibrated), a :class:`ResponseEnsemble`'s members and scale, or one model."""
    if isinstance(response, ResponseEnsemble):
        return list(response.members), float(response.scale)
    if isinstance(response, list | tuple):
        return list(response), 1.0
    return [response], 1.0


def _spectrum(frequencies, vectors, atoms, per_member, unit: str, spread_scale: float):
    """The spectrum of the vibrational modes: the mean over response members (and the
    members themselves when there are several)."""
    keep = _vibrations_only(atoms, frequencies)
    members = np.array([values[keep] for values in per_member])  # (K, M)
    return HarmonicSpectrum(
        frequencies[keep],
        members.mean(0),
        vectors[:, keep].T,
        unit,
        members if len(members) > 1 else None,
        spread_scale,
    )


def harmonic_ir(atoms: Atoms, energy, dipole, *, delta: float = 0.01) -> HarmonicSpectrum:
    """Harmonic IR spectrum of ``atoms`` (a molecule at a minimum of ``energy``).

    Args:
        energy: an mlpot energy model, an ASE calculator, or the Hessian itself.
        dipole: a :class:`DipoleModel` or an ASE calculator that gives ``dipole``; or an
            ensemble (a :class:`ResponseEnsemble`, whose calibrated scale multiplies the
            spread, or a list): mean intensities and their spread.
        delta: displacement (Å) of the finite differences, where they are used.
    """
    frequencies, vectors, inverse_root = _normal_modes(atoms, energy, delta)
    per_member = []
    members, scale = _members(dipole)
    for member in members:
        d_mu = dipole_derivatives(atoms, member, delta=delta)  # (3N, 3) e
        d_mu_d_q = (vectors * inverse_root[:, None]).T @ d_mu  # (3N modes, 3) e/√amu
        per_member.append((d_mu_d_q**2).sum(1) / units.Debye**2)  # (D/Å)²/amu
    return _spectrum(frequencies, vectors, atoms, per_member, "(D/Å)²/amu", scale)


#: e·Å²/V -> Å³ (the polarisability volume): e²/(4πε₀) in eV·Å.
_POLARIZABILITY_VOLUME = 14.399645


def polarizability_derivatives(atoms: Atoms, polarizability, *, delta: float = 0.01):
    """``∂α/∂x`` ``(3N, 3, 3)`` e·Å/V: by autograd of a :class:`PolarizabilityModel`, or by
    central differences (``delta`` Å) of a calculator's ``polarizability``."""
    return _derivatives(atoms, polarizability, "polarizability", delta)


def harmonic_raman(
    atoms: Atoms, energy, polarizability, *, delta: float = 0.01
) -> HarmonicSpectrum:
    """Harmonic Raman activities of ``atoms`` (a molecule at a minimum of ``energy``).

    Activities ``S_k = 45 a_k'² + 7 γ_k'²`` in Å⁴/amu (the usual convention of quantum
    chemistry codes: orientation-averaged, for scattering perpendicular to linearly
    polarised excitation light, summed over both scattered polarisations, and independent
    of the excitation wavelength), with ``a'`` the mean and ``γ'²`` the anisotropy invariant
    of ``∂α/∂Q_k`` in Å²/√amu. ``polarizability``: a :class:`PolarizabilityModel` or a
    calculator that gives ``polarizability`` (e.g. the pyscf oracle), or a list of them
    (an ensemble: mean activities and their spread).
    """
    frequencies, vectors, inverse_root = _normal_modes(atoms, energy, delta)
    per_member = []
    members, scale = _members(polarizability)
    for member in members:
        d_alpha = polarizability_derivatives(atoms, member, delta=delta)  # (3N, 3, 3)
        d_alpha = d_alpha * _POLARIZABILITY_VOLUME  # Å³/Å
        d_q = np.einsum("jm,jab->mab", vectors * inverse_root[:, None], d_alpha)  # (3N, 3, 3)
        mean = np.trace(d_q, axis1=1, axis2=2) / 3.0
        xx, yy, zz = d_q[:, 0, 0], d_q[:, 1, 1], d_q[:, 2, 2]
        off = d_q[:, 0, 1] ** 2 + d_q[:, 1, 2] ** 2 + d_q[:, 0, 2] ** 2
        anisotropy = 0.5 * ((xx - yy) ** 2 + (yy - zz) ** 2 + (zz - xx) ** 2 + 6.0 * off)
        per_member.append(45.0 * mean**2 + 7.0 * anisotropy)
    return _spectrum(frequencies, vectors, atoms, per_member, "Å⁴/amu", scale)


@dataclass(frozen=True)
class MDSpectrum:
    """An IR (dipole) or Raman (polarisability) line shape from MD time series.

    Attributes:
        wavenumbers: ``(F,)`` cm⁻¹.
        intensities: ``(F,)`` arbitrary units (the largest is 1).
        resolution: cm⁻¹, the spacing of the transform (1 / trajectory length).
    """

    wavenumbers: np.ndarray
    intensities: np.ndarray
    resolution: float

    def peak(self, low: float, high: float) -> float:
        """The wavenumber of the strongest intensity between ``low`` and ``high`` cm⁻¹."""
        inside = (self.wavenumbers >= low) & (self.wavenumbers <= high)
        if not inside.any():
            raise ValueError(f"no wavenumbers between {low} and {high} cm⁻¹")
        return float(self.wavenumbers[inside][np.argmax(self.intensities[inside])])


def _response_of(response, atoms: Atoms) -> np.ndarray:
    """The dipole ``(3,)`` or polarisability ``(3, 3)`` of ``atoms`` from a response model
    or, for a calculator, its ``dipole``."""
    if isinstance(response, DipoleModel | PolarizabilityModel | ResponseEnsemble):
        parameter = next(response.parameters())
        with torch.no_grad():
            graph = response_graph(
                atoms, response, dtype=parameter.dtype, labelled=False, source="atoms"
            )
            return response(graph_to(graph, parameter.device))[0].double().cpu().numpy()
    probe = atoms.copy()
    probe.calc = response
    return np.asarray(probe.get_dipole_moment(), dtype=np.float64)


def _line_shape(series: list[np.ndarray], timestep_fs: float, weights) -> MDSpectrum:
    """``Σ_c weights[c] |FFT(w · dx_c/dt)|²`` over the components ``c`` of series ``(T, C)``
    and over trajectories, ``w`` a Hann window; normalised to a largest value of 1."""
    total = None
    for x in series:
        velocity = np.gradient(np.asarray(x), timestep_fs, axis=0)  # (T, C)
        window = np.hanning(len(velocity))[:, None]
        power = np.abs(np.fft.rfft(velocity * window, axis=0)) ** 2 @ np.asarray(weights)
        total = power if total is None else total + power
    frequency = np.fft.rfftfreq(len(series[0]), d=timestep_fs * 1e-15)  # Hz
    wavenumbers = frequency / (100.0 * units._c)  # cm⁻¹
    return MDSpectrum(wavenumbers, total / total.max(), float(wavenumbers[1]))


def dipole_line_shape(series: list[np.ndarray], timestep_fs: float) -> MDSpectrum:
    """The absorption line shape of dipole series ``(T, 3)`` e·Å, one per trajectory,
    sampled every ``timestep_fs``: ``|FFT(w · dμ/dt)|²`` summed over components and
    trajectories, ``w`` a Hann window. With the harmonic quantum correction factor
    ``βħω / (1 − e^{−βħω})`` the quantum absorption ``∝ ω (1 − e^{−βħω}) C_qm(ω)`` becomes
    ``βħ ω² C_cl(ω)``, the transform of the classical dipole-derivative correlation: this
    line shape, so no further factor is applied. The line width is set by the trajectory
    length (resolution ``1 / (T Δt)``)."""
    return _line_shape(
        [np.asarray(mu).reshape(len(mu), 3) for mu in series], timestep_fs, np.ones(3)
    )


def polarizability_line_shape(series: list[np.ndarray], timestep_fs: float) -> MDSpectrum:
    """The Raman line shape of polarisability series ``(T, 3, 3)``, one per trajectory: the
    time-domain form of the activities, ``45 |FFT(w ȧ)|² + 7 · (3/2) Σ_ij |FFT(w β̇_ij)|²``
    with ``a = tr α / 3`` and ``β = α − a I`` (``γ² = (3/2) Σ β_ij²``), Hann window ``w``.
    For harmonic motion (``⟨Q̇_k²⟩ = kT``) the peak areas are proportional to the harmonic
    activities ``45 a'² + 7 γ'²``: the line shape is comparable with
    :func:`harmonic_raman`, without excitation-frequency or Bose factors."""
    parts = []
    for alpha in series:
        alpha = np.asarray(alpha)
        mean = np.trace(alpha, axis1=1, axis2=2) / 3.0  # (T,)
        traceless = alpha - mean[:, None, None] * np.eye(3)
        parts.append(np.column_stack([mean, traceless.reshape(len(alpha), 9)]))
    return _line_shape(parts, timestep_fs, np.array([45.0] + [7.0 * 1.5] * 9))


def md_spectrum(
    atoms: Atoms,
    energy,
    response,
    *,
    temperature_K: float = 300.0,
    trajectories: int = 4,
    steps: int = 2000,
    equilibration: int = 200,
    timestep_fs: float = 0.5,
    seed: int = 0,
) -> MDSpectrum:
    """IR (a dipole response) or Raman (a polarisability model) line shape from NVE
    trajectories started from a thermal ensemble.

    Each trajectory: Maxwell–Boltzmann momenta at ``temperature_K`` (no centre-of-mass
    motion or rotation), ``equilibration`` Langevin steps at that temperature, then
    ``steps`` NVE steps of ``timestep_fs`` with the dipole recorded at every step
    (:func:`dipole_line_shape`, :func:`polarizability_line_shape`). ``energy``: an mlpot
    energy model or an ASE calculator; ``response``: a :class:`DipoleModel`, a calculator
    that gives ``dipole``, or a :class:`PolarizabilityModel`.
    """
    from mlpot.calculators.ase_calculator import MlpotCalculator
    from mlpot.md.dynamics import make_dynamics, start_momenta

    calculator = MlpotCalculator(energy) if isinstance(energy, EnergyModel) else energy
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(trajectories):
        walker = atoms.copy()
        walker.calc = calculator
        start_momenta(walker, temperature_K, rng=rng, zero_rotation=True)
        if equilibration:
            make_dynamics(
                walker,
                thermostat="langevin",
                timestep_fs=timestep_fs,
                temperature_K=temperature_K,
                rng=rng,
            ).run(equilibration)
        nve = make_dynamics(walker, thermostat="nve", timestep_fs=timestep_fs)

        def record(walker=walker) -> np.ndarray:
            if response is calculator:  # the step's own answer already holds the dipole
                return np.asarray(walker.get_dipole_moment(), dtype=np.float64)
            return _response_of(response, walker)

        mu = [record()]
        for _ in range(steps):
            nve.run(1)
            mu.append(record())
        series.append(np.array(mu))
    if getattr(response, "kind", None) == "polarizability":
        return polarizability_line_shape(series, timestep_fs)
    return dipole_line_shape(series, timestep_fs)
