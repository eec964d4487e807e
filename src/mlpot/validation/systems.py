"""The system a validation runs on: a built-in name, a structure file, or an ``ase.Atoms``.

Built-ins:

* ``cu-fcc`` — fcc copper, a = 3.61 Å, the cubic cell repeated 2×2×2 (32 atoms): bulk,
  vacancy and interstitial, vacancy-hop NEB, elastic constants, equation of state;
* ``ethanol`` — one free ethanol molecule (ASE's ``CH3CH2OH``): vibrations, dimers, MD.

A system is a *crystal* when it is periodic in all three directions with a
three-dimensional cell; anything else (molecule, cluster, slab) is treated as finite in the
checks that need a volume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms

from mlpot.errors import MlpotInputError


@dataclass
class System:
    """A named reference structure.

    Attributes:
        name: built-in name or file name.
        atoms: the structure (positions Å, cell Å), without a calculator.
        description: one line for the report.
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


def _cu_fcc() -> System:
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    return System("cu-fcc", atoms, "fcc Cu, a = 3.61 Å, 2×2×2 cubic cells (32 atoms)")


def _ethanol() -> System:
    from ase.build import molecule

    atoms = molecule("CH3CH2OH")
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    return System("ethanol", atoms, "one ethanol molecule, C2H5OH (9 atoms), free")


BUILTIN_SYSTEMS: dict[str, Callable[[], System]] = {"cu-fcc": _cu_fcc, "ethanol": _ethanol}


def _from_file(path: Path) -> System:
    import ase.io

    try:
        atoms = ase.io.read(path, index=0)
    except Exception as err:  # ASE raises many types for unreadable files
        raise MlpotInputError(
            f"cannot read a structure ({err.__class__.__name__}: {err})",
            source=str(path),
            field="system",
        ) from None
    return _from_atoms(atoms, path.name, f"first structure of {path}", source=str(path))


def _from_atoms(atoms: Atoms, name: str, description: str, *, source: str = "system") -> System:
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


def resolve_system(spec: str | Path | Atoms | System) -> System:
    """A :class:`System` from a built-in name, a structure file path or an ``ase.Atoms``."""
    if isinstance(spec, System):
        return spec
    if isinstance(spec, Atoms):
        return _from_atoms(spec, spec.get_chemical_formula(), "structure given as ase.Atoms")
    if isinstance(spec, str) and spec in BUILTIN_SYSTEMS:
        return BUILTIN_SYSTEMS[spec]()
    path = Path(spec)
    if path.is_file():
        return _from_file(path)
    raise MlpotInputError(
        f"unknown system {str(spec)!r}: not a built-in ({', '.join(BUILTIN_SYSTEMS)}) "
        "and no such structure file",
        field="system",
    )
