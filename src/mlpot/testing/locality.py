"""Locality checks: a lone atom has a constant energy, atoms beyond the cutoff do not
interact, and interactions switch off smoothly at every cutoff of the model."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from mlpot.testing.case import ConformanceCase, assert_close, require
from mlpot.testing.structures import dimer

#: Relative tolerance of energies that must be equal to round-off (isolated atoms).
ROUND_OFF = 1e-13


def _same_energy(actual: float, expected: float, what: str) -> None:
    """``actual`` equals ``expected`` (eV) to round-off: ``1e-13 max(|expected|, 1 eV)``."""
    assert_close(actual, expected, rtol=ROUND_OFF, scale=max(abs(expected), 1.0), what=what)


def _pairs(case: ConformanceCase) -> dict[str, tuple[int, int]]:
    """Element pairs of (up to) the first two elements, by name: ``{"Cu-Ag": (29, 47)}``."""
    elements = list(case.model.elements[:2])
    return {
        f"{chemical_symbols[a]}-{chemical_symbols[b]}": (a, b) for a in elements for b in elements
    }


def check_isolated_atom(case: ConformanceCase) -> None:
    """A lone atom of each element has one energy, no force and no stress anywhere: in
    vacuum and in a periodic box larger than twice the cutoff."""
    box = 2.5 * case.model.cutoff
    elements = {chemical_symbols[z]: z for z in case.model.elements}

    def one(symbol: str) -> None:
        z = elements[symbol]
        energy = case.isolated[z]
        require(bool(np.isfinite(energy)), f"energy of a lone atom is {energy}")
        for atoms in (
            Atoms([z], positions=[[1.3, -4.2, 7.7]]),
            Atoms([z], positions=[[0.4, 0.9, 0.2]], cell=[box, box * 1.1, box * 0.9], pbc=True),
        ):
            where = "in a periodic box" if atoms.pbc.any() else "moved in vacuum"
            result = case.evaluate(atoms)
            _same_energy(result.energy, energy, f"energy of a lone atom {where}")
            require(np.all(result.forces == 0.0), f"force on a lone atom {where}")
            if result.stress is not None:
                require(np.all(result.stress == 0.0), f"stress of a lone atom {where}")

    case.for_each(elements, one)


def check_separated_atoms_are_additive(case: ConformanceCase) -> None:
    """Atoms farther apart than the cutoff: E = Σ isolated-atom energies, each atom's local
    energy its isolated one, no force."""
    cutoff, isolated = case.model.cutoff, case.isolated
    pairs = _pairs(case)

    def one(label: str) -> None:
        za, zb = pairs[label]
        for distance in (cutoff * 1.0001, 2.0 * cutoff):
            result = case.evaluate(dimer(za, zb, distance, [0.3, -0.5, 0.8]))
            at = f"at {distance:.4f} Å"
            _same_energy(result.energy, isolated[za] + isolated[zb], f"energy {at}")
            require(np.all(result.forces == 0.0), f"force between atoms {at}")
            for k, z in enumerate((za, zb)):
                _same_energy(result.local_energies[k], isolated[z], f"local energy {at}")

    case.for_each(pairs, one)
    elements = list(case.model.elements[:2])
    spread = Atoms(  # a free molecule of well separated atoms of every element
        elements * 2,
        positions=1.5 * cutoff * np.arange(2 * len(elements))[:, None] * np.ones(3),
    )
    expected = sum(isolated[z] for z in spread.numbers)
    _same_energy(case.evaluate(spread).energy, expected, "energy of separated atoms")


def check_cutoff_smoothness(case: ConformanceCase) -> None:
    """A dimer pulled across the cutoff: energy and force continuous, reaching the
    isolated-atom values (energy within O(δ²), force within O(δ) of them at r_c - δ), and
    exactly those values beyond. With ``continuous_forces=False`` only the energy must be
    continuous."""
    cutoff, continuous = case.model.cutoff, case.settings.continuous_forces
    unit = np.array([0.6, 0.2, -0.4]) / np.linalg.norm([0.6, 0.2, -0.4])
    pairs = _pairs(case)

    def one(label: str) -> None:
        za, zb = pairs[label]
        e_iso = case.isolated[za] + case.isolated[zb]

        def energy_force(r: float) -> tuple[float, float]:
            result = case.evaluate(dimer(za, zb, r, unit))
            return result.energy, float(result.forces[1] @ unit)  # force on b along the bond

        samples = np.array([energy_force(r) for r in np.linspace(cutoff - 1.0, cutoff - 1e-3, 60)])
        e_scale = float(np.abs(samples[:, 0] - e_iso).max())
        f_scale = float(np.abs(samples[:, 1]).max())
        require(e_scale > 1e-8 and f_scale > 1e-8, "no interaction inside the cutoff")
        jump = float(np.abs(np.diff(samples[:, 0])).max())
        require(jump < 0.2 * e_scale, f"energy jumps by {jump:.3e} eV inside the cutoff")
        for delta in (1e-4, 1e-6):
            energy_in, force_in = energy_force(cutoff - delta)
            energy_out, force_out = energy_force(cutoff + delta)
            _same_energy(energy_out, e_iso, f"energy beyond the cutoff (+{delta:g} Å)")
            require(force_out == 0.0, f"force beyond the cutoff (+{delta:g} Å): {force_out:.3e}")
            require(
                abs(energy_in - e_iso) <= 10 * delta * e_scale,
                f"energy jumps at the cutoff: {energy_in - e_iso:.3e} eV at -{delta:g} Å",
            )
            require(
                not continuous or abs(force_in) <= 10 * delta * f_scale,
                f"force jumps at the cutoff: {force_in:.3e} eV/Å at -{delta:g} Å",
            )

    case.for_each(pairs, one)


def check_cutoff_smoothness_in_environment(case: ConformanceCase) -> None:
    """A third atom crossing each cutoff of the model (``cutoff`` and the settings'
    ``inner_cutoffs``, e.g. an angular one) next to a bonded pair: energy and all forces
    continuous, so many-body terms switch off smoothly too. With
    ``continuous_forces=False`` the force must jump instead."""
    settings, model = case.settings, case.model
    radii = (model.cutoff, *settings.inner_cutoffs)
    elements = list(model.elements[:2])
    numbers = [elements[0], elements[-1], elements[0]]
    bond = 0.7 * settings.lattice_constant  # the fcc nearest-neighbour distance
    u = np.array([0.48, 0.64, 0.6]) / np.linalg.norm([0.48, 0.64, 0.6])
    w = np.cross(u, [0.0, 0.0, 1.0])
    w /= np.linalg.norm(w)
    second = bond * (np.cos(2 * np.pi / 3) * u + np.sin(2 * np.pi / 3) * w)  # 120° from u

    def energy_forces(r: float) -> tuple[float, np.ndarray]:
        result = case.evaluate(Atoms(numbers, positions=[np.zeros(3), second, r * u]))
        return result.energy, result.forces

    by_label = {f"{rx:g} Å": rx for rx in radii}

    def one(label: str) -> None:
        rx = by_label[label]
        for r in (rx - 1e-3, rx + 1e-3):  # only the distance 0-2 may cross a cutoff
            d12 = np.linalg.norm(r * u - second)
            if min(abs(d12 - other) for other in radii) <= 0.1:
                raise ValueError(f"the check's geometry does not suit the cutoffs {radii} Å")
        tail = [energy_forces(r) for r in np.linspace(rx - 0.5, rx + 0.5, 41)]
        e_scale = float(np.ptp([energy for energy, _ in tail]))
        f_scale = float(np.abs(np.array([forces for _, forces in tail])[:, 2]).max())
        require(e_scale > 1e-8 and f_scale > 1e-8, "no interaction near this radius")
        for delta in (1e-4, 1e-6):
            energy_in, forces_in = energy_forces(rx - delta)
            energy_out, forces_out = energy_forces(rx + delta)
            step = energy_in - energy_out
            require(abs(step) <= 10 * delta * e_scale, f"energy jumps by {step:.3e} eV")
            jump = float(np.abs(forces_in - forces_out).max())
            if settings.continuous_forces:
                require(jump <= 10 * delta * f_scale, f"force jumps by {jump:.3e} eV/Å")
            else:
                require(jump > 1e-3 * f_scale, "expected the documented force jump")

    case.for_each(by_label, one)
