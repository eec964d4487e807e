"""The systems every command runs on: a built-in name, a structure file, or ``ase.Atoms``.

One list of names serves ``mlpot learn`` (``system:``, where a comma-separated list of
names and files gives several start structures) and ``mlpot validate --system`` (one
structure). Built-ins (Å; molecules centred in 5 Å of vacuum, not periodic):

* ``ethanol``, ``methanol``, ``water`` — one free molecule (ASE's ``CH3CH2OH``,
  ``CH3OH``, ``H2O`` geometries);
* ``cu-fcc`` — fcc copper, a = 3.61 Å, the cubic cell repeated 2×2×2 (32 atoms);
* ``cu-vacancy`` — the same cell with one atom removed (31 atoms).

A system is a *crystal* when it is periodic in all three directions with a
three-dimensional cell; anything else (molecule, cluster, slab) is treated as finite by
what needs a volume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms

from mlpot.errors import MlpotInputError


@dataclass
class System:
    """A named structure.

    Attributes:
        name: built-in name or file name.
        atoms: the structure (positions Å, cell Å), without a calculator.
        description: one line for reports.
    """

    name: str
    atoms: Atoms
    description: str

    @property
    def is_crystal(self) -> bool:
        """Periodic in three dimensions with a non-degenerate cell."""
        return bool(self.atoms.pbc.all()) and self.atoms.cell.rank == 3

    @property
    def is_elemental(self) -> bool:
        return len(set(self.atoms.numbers.tolist())) == 1

    @property
    def kind(self) -> str:
        """``crystal``, ``molecule`` (no periodicity) or ``partly periodic``."""
        if self.is_crystal:
            return "crystal"
        return "molecule" if not self.atoms.pbc.any() else "partly periodic"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "formula": self.atoms.get_chemical_formula(),
            "n_atoms": len(self.atoms),
            "description": self.description,
        }


def _molecule(name: str, formula: str, description: str) -> Callable[[], System]:
    def build() -> System:
        from ase.build import molecule

        atoms = molecule(formula)
        atoms.center(vacuum=5.0)
        atoms.pbc = False
        return System(name, atoms, description)

    return build


def _copper(name: str, *, vacancy: bool) -> Callable[[], System]:
    def build() -> System:
        from ase.build import bulk

        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)  # 32 atoms
        if vacancy:
            del atoms[0]
            return System(name, atoms, "fcc Cu, a = 3.61 Å, 2×2×2 cubic cells, one vacancy")
        return System(name, atoms, "fcc Cu, a = 3.61 Å, 2×2×2 cubic cells (32 atoms)")

    return build


BUILTIN_SYSTEMS: dict[str, Callable[[], System]] = {
    "cu-fcc": _copper("cu-fcc", vacancy=False),
    "cu-vacancy": _copper("cu-vacancy", vacancy=True),
    "ethanol": _molecule("ethanol", "CH3CH2OH", "one ethanol molecule, C2H5OH (9 atoms), free"),
    "methanol": _molecule("methanol", "CH3OH", "one methanol molecule, CH3OH (6 atoms), free"),
    "water": _molecule("water", "H2O", "one water molecule, H2O (3 atoms), free"),
}


def _unknown(spec: str) -> MlpotInputError:
    return MlpotInputError(
        f"unknown system {spec!r}: not a built-in ({', '.join(BUILTIN_SYSTEMS)}) "
        "and no such structure file",
        field="system",
    )


def _from_atoms(atoms: Atoms, name: str, description: str, *, source: str = "system") -> System:
    """A checked copy of ``atoms`` without its calculator."""
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise MlpotInputError("the system has no atoms", source=source, field="system")
    atoms = atoms.copy()
    atoms.calc = None
    if atoms.pbc.any() and atoms.cell.rank < int(atoms.pbc.sum()):
        raise MlpotInputError(
            f"periodic along {atoms.pbc.tolist()} but the cell has rank {atoms.cell.rank}",
            source=source,
            field="cell",
        )
    return System(name, atoms, description)


def _from_file(path: Path, *, first_only: bool) -> list[System]:
    import ase.io

    try:
        frames = ase.io.read(path, index=0 if first_only else ":")
    except Exception as err:  # ASE raises many types for unreadable files
        raise MlpotInputError(
            f"cannot read a structure ({err.__class__.__name__}: {err})",
            source=str(path),
            field="system",
        ) from None
    frames = [frames] if isinstance(frames, Atoms) else frames
    if not frames:
        raise MlpotInputError("no structures found", source=str(path), field="system")
    where = "first structure" if first_only else "structure {k}"
    return [
        _from_atoms(atoms, path.name, f"{where.format(k=k)} of {path}", source=str(path))
        for k, atoms in enumerate(frames)
    ]


def _entries(spec: str) -> list[str]:
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise MlpotInputError(f"empty entry in the system list {spec!r}", field="system")
    return parts


def read_systems(spec: str | Path) -> list[System]:
    """Every structure ``spec`` names: a built-in name, a structure file (every frame), or
    several of these separated by commas (e.g. ``cu-fcc,cu-vacancy``)."""
    spec = str(spec)
    if "," in spec:
        return [system for part in _entries(spec) for system in read_systems(part)]
    if spec in BUILTIN_SYSTEMS:
        return [BUILTIN_SYSTEMS[spec]()]
    path = Path(spec)
    if not path.is_file():
        raise _unknown(spec)
    return _from_file(path, first_only=False)


def build_system(spec: str) -> list[Atoms]:
    """The structures of :func:`read_systems` (``mlpot learn``'s start structures)."""
    return [system.atoms for system in read_systems(spec)]


def resolve_system(spec: str | Path | Atoms | System) -> System:
    """One :class:`System` (``mlpot validate``): a built-in name, the first structure of a
    file, or an ``ase.Atoms``; a comma-separated list is refused (one system at a time)."""
    if isinstance(spec, System):
        return spec
    if isinstance(spec, Atoms):
        return _from_atoms(spec, spec.get_chemical_formula(), "structure given as ase.Atoms")
    if isinstance(spec, str) and "," in spec:
        raise MlpotInputError(
            f"one system at a time, got the list {_entries(spec)}", field="system"
        )
    if isinstance(spec, str) and spec in BUILTIN_SYSTEMS:
        return BUILTIN_SYSTEMS[spec]()
    path = Path(spec)
    if not path.is_file():
        raise _unknown(str(spec))
    return _from_file(path, first_only=True)[0]
