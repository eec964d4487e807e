"""Labelled structures from extxyz files, ASE databases or memory, with strict checks.

Labels are looked up under configurable keys. With no key given, each label is taken
from the first place that has it: the attached calculator's results (what ASE fills when
reading ``energy``/``forces``/``stress`` from extxyz or a database row), then
``atoms.info``/``atoms.arrays`` (or a database row's key-value pairs and data) under the
plain name, then under ``REF_<name>``. Units: eV, eV/Å, eV/Å³ (ASE's).

Every problem is an :class:`~mlpot.errors.MlpotInputError` naming file, frame and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from mlpot.data.graph import ENERGY, FORCES, STRESS, STRESS_MASK, Graph, atoms_to_graph
from mlpot.errors import MlpotInputError

DB_SUFFIXES = (".db", ".json")


@dataclass(frozen=True)
class LabelKeys:
    """Where each label lives; ``None`` means look in the default places."""

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None


@dataclass
class Sample:
    """One labelled structure and where it came from."""

    atoms: Atoms
    source: str
    frame: int
    energy: float | None = None
    forces: np.ndarray | None = None  # (N, 3)
    stress: np.ndarray | None = None  # (3, 3)
    extra: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)


def is_database(source: str) -> bool:
    return "://" in source or Path(source).suffix.lower() in DB_SUFFIXES


def read_structures(source: str | Path) -> list[tuple[Atoms, dict]]:
    """Frames of an extxyz (or any ASE-readable) file, or rows of an ASE database.

    Returns ``(atoms, lookup)`` pairs, ``lookup`` holding a database row's key-value pairs
    and data (empty for files).
    """
    source = str(source)
    if is_database(source):
        import ase.db

        if "://" not in source:
            if not Path(source).exists():
                raise MlpotInputError("database file not found", source=source)
            if Path(source).stat().st_size == 0:
                raise MlpotInputError("database file is empty", source=source)
        try:
            rows = list(ase.db.connect(source).select())
        except Exception as err:  # the db backends raise many kinds
            raise MlpotInputError(f"cannot read database: {err}", source=source) from None
        frames = [(row.toatoms(), {**row.key_value_pairs, **row.data}) for row in rows]
    else:
        import ase.io

        path = Path(source)
        if not path.exists():
            raise MlpotInputError("file not found", source=source)
        if path.stat().st_size == 0:
            raise MlpotInputError("file is empty", source=source)
        try:
            frames = [(a, {}) for a in ase.io.read(source, index=":")]
        except Exception as err:
            raise MlpotInputError(f"cannot parse file: {err}", source=source) from None
    if not frames:
        raise MlpotInputError("no structures found", source=source)
    return frames


def _lookup(atoms: Atoms, extra: dict, name: str, key: str | None):
    """Find a label: returns (value or None, the key it was found under)."""
    calc_results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    candidates = [key] if key is not None else [name, f"REF_{name}"]
    if key is None and name in calc_results:
        return calc_results[name], name
    for k in candidates:
        if key is not None and k in calc_results:
            return calc_results[k], k
        for store in (atoms.info, atoms.arrays, extra):
            if k in store:
                return store[k], k
    return None, key or name


def _as_finite(value, shape, *, source, frame, field_name) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MlpotInputError(
            f"not numeric: {value!r}", source=source, frame=frame, field=field_name
        ) from None
    if shape is not None and array.shape != shape:
        raise MlpotInputError(
            f"has shape {array.shape}, expected {shape}",
            source=source,
            frame=frame,
            field=field_name,
        )
    if not np.all(np.isfinite(array)):
        raise MlpotInputError("contains NaN or inf", source=source, frame=frame, field=field_name)
    return array


def _stress_3x3(value, *, source, frame, field_name) -> np.ndarray:
    array = _as_finite(value, None, source=source, frame=frame, field_name=field_name)
    if array.shape == (6,):
        xx, yy, zz, yz, xz, xy = array
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if array.shape == (9,):
        array = array.reshape(3, 3)
    if array.shape != (3, 3):
        raise MlpotInputError(
            f"has shape {array.shape}, expected (6,) Voigt or (3, 3)",
            source=source,
            frame=frame,
            field=field_name,
        )
    scale = max(float(np.abs(array).max()), 1e-12)
    if float(np.abs(array - array.T).max()) > 1e-6 * scale:
        raise MlpotInputError(
            "stress tensor is not symmetric (wrong layout?)",
            source=source,
            frame=frame,
            field=field_name,
        )
    return array


def read_dataset(
    source: str | Path,
    keys: LabelKeys = LabelKeys(),
    *,
    require_energy: bool = True,
    require_forces: bool = True,
) -> list[Sample]:
    """Read labelled samples; missing required labels, NaN/inf and bad shapes are errors."""
    source = str(source)
    return [
        _sample(atoms, extra, source, frame, keys, require_energy, require_forces)
        for frame, (atoms, extra) in enumerate(read_structures(source))
    ]


def samples_from_atoms(
    frames: Sequence[Atoms | Sample],
    keys: LabelKeys = LabelKeys(),
    *,
    source: str = "in memory",
    require_energy: bool = True,
    require_forces: bool = True,
) -> list[Sample]:
    """Labelled samples of structures in memory, checked as :func:`read_dataset` checks a
    file's: labels looked up the same way (e.g. a ``SinglePointCalculator``'s results),
    ``source`` and the index in ``frames`` name a bad one. A :class:`Sample` is kept as is."""
    return [
        frame
        if isinstance(frame, Sample)
        else _sample(frame, {}, source, k, keys, require_energy, require_forces)
        for k, frame in enumerate(frames)
    ]


def _sample(
    atoms: Atoms,
    extra: dict,
    source: str,
    frame: int,
    keys: LabelKeys,
    require_energy: bool,
    require_forces: bool,
) -> Sample:
    """One checked sample: its labels found (see the module docstring) and validated."""
    if not isinstance(atoms, Atoms):
        raise MlpotInputError(
            f"not a structure: {type(atoms).__name__}", source=source, frame=frame
        )
    n = len(atoms)
    if n == 0:
        raise MlpotInputError("structure has no atoms", source=source, frame=frame)
    _check_results_are_its_own(atoms, source, frame)
    energy, ekey = _lookup(atoms, extra, "energy", keys.energy)
    forces, fkey = _lookup(atoms, extra, "forces", keys.forces)
    stress, skey = _lookup(atoms, extra, "stress", keys.stress)
    if energy is None and require_energy:
        raise MlpotInputError(
            f"missing energy label (looked for {_where(keys.energy, 'energy')})",
            source=source,
            frame=frame,
            field=ekey,
        )
    if forces is None and require_forces:
        raise MlpotInputError(
            f"missing forces label (looked for {_where(keys.forces, 'forces')})",
            source=source,
            frame=frame,
            field=fkey,
        )
    if keys.stress is not None and stress is None:
        raise MlpotInputError("missing stress label", source=source, frame=frame, field=skey)
    sample = Sample(atoms=atoms, source=source, frame=frame)
    if energy is not None:
        sample.energy = float(_as_finite(energy, (), source=source, frame=frame, field_name=ekey))
    if forces is not None:
        sample.forces = _as_finite(forces, (n, 3), source=source, frame=frame, field_name=fkey)
    if stress is not None:
        if not atoms.pbc.all():
            raise MlpotInputError(
                "stress label on a structure that is not periodic in all three directions",
                source=source,
                frame=frame,
                field=skey,
            )
        sample.stress = _stress_3x3(stress, source=source, frame=frame, field_name=skey)
    _check_positions(atoms, source, frame)
    return sample


def _check_results_are_its_own(atoms: Atoms, source: str, frame: int) -> None:
    """Refuse a calculator whose results were computed for another structure (one live
    calculator shared by several frames holds only the last one's)."""
    calc = atoms.calc
    results = getattr(calc, "results", None)
    check_state = getattr(calc, "check_state", None)
    if not results or check_state is None or getattr(calc, "atoms", None) is None:
        return
    if {"positions", "numbers", "cell", "pbc"} & set(check_state(atoms)):
        raise MlpotInputError(
            "its calculator's results belong to another structure (one calculator shared "
            "by several frames keeps only the last one's): label each frame with its own "
            "SinglePointCalculator",
            source=source,
            frame=frame,
        )


def _where(key: str | None, name: str) -> str:
    if key is not None:
        return f"'{key}'"
    return f"calculator results, info/arrays '{name}' and 'REF_{name}'"


def _check_positions(atoms: Atoms, source: str, frame: int) -> None:
    if not np.all(np.isfinite(atoms.positions)):
        raise MlpotInputError("contains NaN or inf", source=source, frame=frame, field="positions")


def sample_to_graph(
    sample: Sample, cutoff: float, *, dtype: torch.dtype, elements: list[int] | None = None
) -> Graph:
    """Graph of a sample with its labels attached (missing stress is masked out)."""
    graph = atoms_to_graph(
        sample.atoms,
        cutoff,
        dtype=dtype,
        elements=elements,
        source=sample.source,
        frame=sample.frame,
    )
    n = sample.n_atoms
    nan = float("nan")
    graph[ENERGY] = torch.tensor([sample.energy if sample.energy is not None else nan], dtype=dtype)
    graph[FORCES] = (
        torch.as_tensor(sample.forces, dtype=dtype)
        if sample.forces is not None
        else torch.full((n, 3), nan, dtype=dtype)
    )
    has_stress = sample.stress is not None
    graph[STRESS] = (
        torch.as_tensor(sample.stress, dtype=dtype)[None]
        if has_stress
        else torch.zeros((1, 3, 3), dtype=dtype)
    )
    graph[STRESS_MASK] = torch.tensor([has_stress])
    return graph


def elements_of(samples: list[Sample]) -> list[int]:
    """Sorted atomic numbers present in the samples."""
    return sorted({int(z) for s in samples for z in s.atoms.numbers})
