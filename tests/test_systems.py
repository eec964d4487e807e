"""Built-in systems, structure files, and lists of them for ``mlpot learn``."""

from __future__ import annotations

import ase.io
import pytest

from mlpot.data.systems import BUILTIN_SYSTEMS, build_system, resolve_system
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


def test_learn_and_validate_accept_the_same_names(tmp_path):
    """One list of built-ins: ``learn``'s start structures and ``validate``'s system are
    the same structure for every name (one ethanol), and for a file."""
    for name in BUILTIN_SYSTEMS:
        (atoms,) = build_system(name)
        system = resolve_system(name)
        assert system.name == name and system.atoms == atoms
    molecule = resolve_system("ethanol")
    assert molecule.kind == "molecule" and len(molecule.atoms) == 9
    assert resolve_system("cu-vacancy").kind == "crystal"
    path = tmp_path / "two.xyz"
    ase.io.write(path, [resolve_system("cu-fcc").atoms, molecule.atoms])
    assert [len(a) for a in build_system(str(path))] == [32, 9]  # learn: every frame
    assert len(resolve_system(str(path)).atoms) == 32  # validate: the first


def test_validate_takes_one_system():
    with pytest.raises(MlpotInputError, match="one system at a time"):
        resolve_system("cu-fcc,cu-vacancy")
