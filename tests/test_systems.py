"""Built-in systems, structure files, and lists of them for ``mlpot learn``."""

from __future__ import annotations

import ase.io
import pytest

from mlpot.data.systems import build_system
from mlpot.errors import MlpotInputError


def test_builtin_and_list_of_systems(tmp_path):
    (bulk,) = build_system("cu-fcc")
    (vacancy,) = build_system("cu-vacancy")
    assert len(bulk) == 32 and len(vacancy) == 31
    ase.io.write(tmp_path / "two.xyz", [bulk, vacancy])
    both = build_system(f"cu-fcc, {tmp_path / 'two.xyz'},ethanol")
    assert [len(a) for a in both] == [32, 32, 31, 9]


@pytest.mark.parametrize("spec", ["cu-fcc,,ethanol", "cu-fcc,nonsense"])
def test_bad_system_list_names_the_entry(spec):
    with pytest.raises(MlpotInputError, match="system"):
        build_system(spec)
