"""Built-in systems by name, or every frame of a structure file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ase import Atoms

from mlpot.errors import MlpotInputError


def _molecule(name: str) -> Callable[[], Atoms]:
    def build() -> Atoms:
        from ase.build import molecule

        atoms = molecule(name)
        atoms.center()
        return atoms

    return build


def _copper(vacancy: bool) -> Callable[[], Atoms]:
    def build() -> Atoms:
        from ase.build import bulk

        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)  # 32 atoms
        if vacancy:
            del atoms[0]
        return atoms

    return build


SYSTEMS: dict[str, Callable[[], Atoms]] = {
    "ethanol": _molecule("CH3CH2OH"),
    "methanol": _molecule("CH3OH"),
    "water": _molecule("H2O"),
    "cu-fcc": _copper(vacancy=False),
    "cu-vacancy": _copper(vacancy=True),
}


def build_system(spec: str) -> list[Atoms]:
    """Structures for ``spec``: a built-in name (see ``SYSTEMS``), a structure file, or
    several of these separated by commas (e.g. ``cu-fcc,cu-vacancy``)."""
    if "," in spec:
        parts = [part.strip() for part in spec.split(",")]
        if not all(parts):
            raise MlpotInputError(f"empty entry in the system list {spec!r}", field="system")
        return [atoms for part in parts for atoms in build_system(part)]
    if spec in SYSTEMS:
        return [SYSTEMS[spec]()]
    path = Path(spec)
    if not path.exists():
        raise MlpotInputError(
            f"unknown system {spec!r}: neither a built-in ({', '.join(sorted(SYSTEMS))}) "
            "nor an existing structure file",
            field="system",
        )
    import ase.io

    try:
        frames = ase.io.read(path, index=":")
    except Exception as err:
        raise MlpotInputError(f"cannot read structures: {err}", source=str(path)) from None
    if not frames:
        raise MlpotInputError("no structures found", source=str(path))
    for atoms in frames:
        atoms.calc = None
    return frames
