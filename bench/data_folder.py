"""Benchmark data folders, read from the files themselves.

A data folder holds one training file (``*train*.xyz``) and test files (``*test*.xyz``):
:func:`data_files` finds them (``../shared/data/ethanol_dft`` and any folder laid out the
same way). When the test files' names end in their MD temperature (``*test*<T>K.xyz``, as
``../shared/data/aspirin_gfn2``), :func:`temperature_data` keys them by it. File names,
temperatures and elements all come from the folder, never from constants in a bench.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TemperatureData:
    """``train``: the training file; ``tests``: test file per temperature (K), ascending;
    ``elements``: atomic numbers present in the training file, sorted."""

    train: Path
    tests: dict[int, Path]
    elements: list[int]

    @property
    def temperatures(self) -> list[int]:
        return list(self.tests)


def number(path: Path) -> float:
    """The last number in a file's stem (0 without one): ``aspirin_test_600K`` -> 600."""
    found = re.findall(r"\d+(?:\.\d+)?", path.stem)
    return float(found[-1]) if found else 0.0


def data_files(folder: Path | str) -> tuple[Path, list[Path]]:
    """The training file and the test files, ordered by the number in their names; exits
    with a message when there is not exactly one training file."""
    folder = Path(folder)
    train = sorted(folder.glob("*train*.xyz"))
    if len(train) != 1:
        raise SystemExit(f"{folder}: expected one *train*.xyz file, found {len(train)}")
    return train[0], sorted(folder.glob("*test*.xyz"), key=lambda p: (number(p), p.name))


def temperature_data(folder: Path | str) -> TemperatureData:
    """The files of ``folder`` keyed by temperature (module doc); exits with a message
    naming what is missing."""
    import ase.io

    train, test_files = data_files(folder)
    tests = {}
    for path in test_files:
        found = re.search(r"(\d+)K$", path.stem)
        if found:
            tests[int(found.group(1))] = path
    if len(tests) < 2:
        raise SystemExit(
            f"{folder}: expected test files named *test*<T>K.xyz at two or more temperatures, "
            f"found {sorted(p.name for p in tests.values())}"
        )
    numbers = {int(z) for atoms in ase.io.iread(train) for z in atoms.numbers}
    return TemperatureData(train, dict(sorted(tests.items())), sorted(numbers))
