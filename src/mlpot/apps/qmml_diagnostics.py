"""Diagnostics of a QM/ML hybrid (:mod:`mlpot.apps.qmml`): the force mismatch ``ε_F``
between QM and ML forces in the interface, the largest energy jump ``ΔE_max`` when a group
crosses the switch radii, and the energy drift of NVE MD.

``ΔE_max`` is measured along a path that drives one group radially across ``r_core`` and
``r_buffer`` in steps ``h``: each step's energy change minus the work done by the forces,
``|E_{k+1} − E_k + ½ (F_k + F_{k+1})·ΔR|``. For a continuous energy whose forces are its
gradient this residual is ``O(h³)`` (round-off at ``h = 1e-4`` Å); a jump of the energy, or
forces that are not its gradient, show up in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from mlpot.apps.qmml import QMMLCalculator, evaluate
from mlpot.errors import MlpotInputError
from mlpot.md.dynamics import make_dynamics, start_momenta


@dataclass
class ForceMismatch:
    """``ε_F``: ``|F_QM − F_ML|`` (eV/Å) over the interface atoms (``0 < s < 1``).

    Attributes:
        rms, max: root mean square and largest norm of the difference, eV/Å.
        n_atoms: interface atoms compared (0: nothing to compare, rms and max NaN).
        reference: ``"cluster"`` (both on the core plus every group inside ``r_buffer``,
            capped: the methods' own difference, free of truncation artefacts) or
            ``"full"`` (both on the whole system).
    """

    rms: float
    max: float
    n_atoms: int
    reference: str


@dataclass
class EnergyJumps:
    """``ΔE_max`` along a path across the switch radii.

    Attributes:
        max_jump: largest ``|ΔE − work|`` of one step, eV.
        at_distance: group distance from the centre (Å) in the middle of that step.
        largest_change: largest ``|ΔE|`` of one step (the smooth trend's scale), eV.
        distances, energies: the path, Å, and the hybrid energy along it, eV.
    """

    max_jump: float
    at_distance: float
    largest_change: float
    distances: np.ndarray
    energies: np.ndarray


@dataclass
class QMMLDiagnostics:
    """The seeds' figures: ``ε_F`` (eV/Å) and ``ΔE_max`` (eV), with their details."""

    force_mismatch_rms: float
    force_mismatch_max: float
    n_interface_atoms: int
    energy_jump_max: float
    force_mismatch: ForceMismatch
    energy_jumps: EnergyJumps


@dataclass
class NVEDrift:
    """Total energy of a velocity-Verlet run.

    Attributes:
        drift: slope of a straight line fitted to the total energy, meV/atom/ps.
        fluctuation: standard deviation about that line, meV/atom.
        max_deviation: largest ``|E(t) − E(0)|``, meV/atom.
        total: total energy at every step, eV, ``(steps + 1,)``.
    """

    drift: float
    fluctuation: float
    max_deviation: float
    total: np.ndarray


def force_mismatch(calc: QMMLCalculator, atoms: Atoms, *, full_qm: bool = False) -> ForceMismatch:
    """``ε_F`` of ``atoms`` on the interface atoms: QM against ML forces, both on the
    buffered cluster (the core and every group inside ``r_buffer``, capped), or with
    ``full_qm`` both on the whole system."""
    part = calc.partition(atoms)
    interface = part.interface_atoms()
    reference = "full" if full_qm else "cluster"
    if len(interface) == 0:
        return ForceMismatch(float("nan"), float("nan"), 0, reference)
    if full_qm:
        system, rows = atoms, interface
    else:
        cluster = calc.cluster(atoms, [part.groups[k] for k in part.active_groups()])
        row = {int(i): k for k, i in enumerate(cluster.indices)}
        system, rows = cluster.atoms, np.array([row[int(i)] for i in interface])
    _, f_qm, _ = evaluate(calc.qm, system, role="QM")
    _, f_ml, _ = evaluate(calc.ml, system, role="ML")
    norms = np.linalg.norm(f_qm[rows] - f_ml[rows], axis=1)
    return ForceMismatch(
        float(np.sqrt(np.mean(norms**2))), float(norms.max()), len(interface), reference
    )


def energy_jumps(
    calc: QMMLCalculator, atoms: Atoms, atom: int, *, step: float = 1e-4, points: int = 3
) -> EnergyJumps:
    """``ΔE_max``: drive the group that holds ``atom`` rigidly along the line from the QM
    centre through its centroid, ``2 points`` steps of ``step`` (Å) straddling each switch
    radius (``r_core`` when the path stays at positive distance, and ``r_buffer``), and
    return the largest energy change not accounted for by the forces' work (module doc)."""
    part = calc.partition(atoms)
    owner = [k for k, group in enumerate(part.groups) if atom in group]
    if not owner:
        raise MlpotInputError(f"atom {atom} is in no switched group", field="atom")
    group = part.groups[owner[0]]
    regions = calc.regions(atoms)
    vector = regions.placed(atoms, group, part.centre)[1]
    if np.linalg.norm(vector) == 0.0:
        raise MlpotInputError("the group's centroid is at the QM centre: no direction")
    unit = vector / np.linalg.norm(vector)
    offsets = step * (np.arange(-points, points) + 0.5)
    radii = [r for r in (calc.options["r_core"], calc.options["r_buffer"]) if r > points * step]
    worst, where, largest = 0.0, float("nan"), 0.0
    distances, energies = [], []
    for radius in radii:
        path = radius + offsets
        moved = [_moved(atoms, group, unit * (d - part.distances[owner[0]])) for d in path]
        results = [_energy_forces(calc, m) for m in moved]
        for k in range(len(path) - 1):
            (e0, f0), (e1, f1) = results[k], results[k + 1]
            work = 0.5 * float(np.sum((f0[group] + f1[group]) @ (unit * step)))
            residual = abs(e1 - e0 + work)
            largest = max(largest, abs(e1 - e0))
            if residual >= worst:
                worst, where = residual, float(0.5 * (path[k] + path[k + 1]))
        distances += path.tolist()
        energies += [e for e, _ in results]
    return EnergyJumps(worst, where, largest, np.array(distances), np.array(energies))


def diagnose(
    calc: QMMLCalculator,
    atoms: Atoms,
    *,
    atom: int | None = None,
    full_qm: bool = False,
    step: float = 1e-4,
) -> QMMLDiagnostics:
    """``ε_F`` and ``ΔE_max`` of ``atoms``; the driven group holds ``atom`` (default: the
    group whose distance from the centre is nearest the middle of the switch)."""
    part = calc.partition(atoms)
    if not part.groups:
        raise MlpotInputError("no switched group: nothing crosses the switch radii")
    if atom is None:
        middle = 0.5 * (calc.options["r_core"] + calc.options["r_buffer"])
        nearest = int(np.argmin(np.abs(part.distances - middle)))
        atom = int(part.groups[nearest][0])
    mismatch = force_mismatch(calc, atoms, full_qm=full_qm)
    jumps = energy_jumps(calc, atoms, atom, step=step)
    return QMMLDiagnostics(
        mismatch.rms, mismatch.max, mismatch.n_atoms, jumps.max_jump, mismatch, jumps
    )


def nve_drift(
    atoms: Atoms,
    calc: BaseCalculator,
    *,
    steps: int,
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    seed: int = 0,
) -> NVEDrift:
    """Velocity-Verlet MD of a copy of ``atoms`` with ``calc`` from Maxwell–Boltzmann
    momenta at ``temperature_K`` (K, seed ``seed``, no net momentum or rotation):
    drift (meV/atom/ps), fluctuation and largest deviation (meV/atom) of the total energy."""
    system = atoms.copy()
    system.calc = calc
    start_momenta(system, temperature_K, rng=np.random.default_rng(seed), zero_rotation=True)
    dynamics = make_dynamics(system, thermostat="nve", timestep_fs=timestep_fs)
    total = []  # ASE calls observers at the start and after every step
    dynamics.attach(lambda: total.append(system.get_total_energy()), interval=1)
    dynamics.run(steps)
    total = np.array(total)
    per_atom = (total - total[0]) / len(system) * 1e3  # meV/atom
    time_ps = np.arange(len(total)) * timestep_fs * 1e-3
    slope, intercept = np.polyfit(time_ps, per_atom, 1)
    fluctuation = float(np.std(per_atom - (slope * time_ps + intercept)))
    return NVEDrift(float(slope), fluctuation, float(np.abs(per_atom).max()), total)


def _moved(atoms: Atoms, group: np.ndarray, shift: np.ndarray) -> Atoms:
    moved = atoms.copy()
    moved.positions[group] += shift
    return moved


def _energy_forces(calc: QMMLCalculator, atoms: Atoms) -> tuple[float, np.ndarray]:
    atoms.calc = calc
    return float(atoms.get_potential_energy()), atoms.get_forces()
