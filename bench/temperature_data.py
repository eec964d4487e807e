"""Benchmark data laid out by temperature, found from the files themselves.

A data folder holds one training file (``*train*.xyz``) and test files whose names end in
their MD temperature (``*test*<T>K.xyz``), as ``../shared/data/aspirin_gfn2`` does; any
other molecule labelled the same way works unchanged: the file names, the temperatures and
the elements all come from the folder, never from constants in a bench.
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


def temperature_data(folder: Path | str) -> TemperatureData:
    """The files of ``folder`` (module doc); exits with a message naming what is missing."""
    import ase.io

    folder = Path(folder)
    train = sorted(folder.glob("*train*.xyz"))
    if len(train) != 1:
        raise SystemExit(f"{folder}: expected one *train*.xyz file, found {len(train)}")
    tests = {}
    for path in folder.glob("*test*.xyz"):
        found = re.search(r"(\d+)K$", path.stem)
        if found:
            tests[int(found.group(1))] = path
    if len(tests) < 2:
        raise SystemExit(
            f"{folder}: expected test files named *test*<T>K.xyz at two or more temperatures, "
            f"found {sorted(p.name for p in tests.values())}"
        )
    numbers = {int(z) for atoms in ase.io.iread(train[0]) for z in atoms.numbers}
    return TemperatureData(train[0], dict(sorted(tests.items())), sorted(numbers))
