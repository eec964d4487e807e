"""Fitted torsion terms in files a force-field user loads, and read back.

* GROMACS topology ``[ dihedraltypes ]``, function type 9 (several lines of one atom-type
  quadruple add up): ``ai aj ak al 9 phi_s k n`` with ``phi_s`` in degrees and ``k`` in
  kJ/mol, ``V = k (1 + cos(n φ - phi_s))``. The posterior std of each ``k`` follows as a
  comment.
* OpenMM ForceField XML ``<PeriodicTorsionForce>`` with one ``<Proper>`` element:
  ``periodicityN``, ``phaseN`` (rad), ``kN`` (kJ/mol), the same functional form.

Both take the terms of :meth:`mlpot.apps.torsion.TorsionFit.terms` (eV, degrees) and
convert eV to kJ/mol (``1 eV = 96.485 kJ/mol``).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ase.units import kJ, mol

from mlpot.apps.torsion import TorsionTerm
from mlpot.errors import MlpotInputError

#: kJ/mol per eV
KJ_PER_MOL_PER_EV = mol / kJ


@dataclass(frozen=True)
class WrittenTerm:
    """A term as a force-field file holds it: atom types, periodicity, phase (degrees) and
    ``k`` (kJ/mol)."""

    types: tuple[str, str, str, str]
    periodicity: int
    phase: float
    k: float


def _check_types(types: Sequence[str]) -> tuple[str, str, str, str]:
    if len(types) != 4 or not all(isinstance(t, str) and t and t.split() == [t] for t in types):
        raise MlpotInputError(
            f"need four atom-type names without spaces, got {types!r}", field="types"
        )
    return tuple(types)


def _write(text: str, path: str | Path | None) -> str:
    if path is not None:
        Path(path).write_text(text)
    return text


def gromacs_dihedraltypes(
    terms: Sequence[TorsionTerm], types: Sequence[str], path: str | Path | None = None
) -> str:
    """A GROMACS ``[ dihedraltypes ]`` section (function type 9) of ``terms`` for the
    atom-type quadruple ``types``; written to ``path`` when given, and returned."""
    types = _check_types(types)
    lines = [
        "[ dihedraltypes ]",
        ";  ai    aj    ak    al  funct   phi_s(deg)   k(kJ/mol)  mult ; posterior std of k",
    ]
    for term in terms:
        k = term.k * KJ_PER_MOL_PER_EV
        sigma = term.k_std * KJ_PER_MOL_PER_EV
        lines.append(
            f"{types[0]:>5} {types[1]:>5} {types[2]:>5} {types[3]:>5}    9 "
            f"{term.phase:12.4f} {k:12.6f} {term.periodicity:5d} ; {sigma:.6f}"
        )
    return _write("\n".join(lines) + "\n", path)


def read_gromacs_dihedraltypes(text: str) -> list[WrittenTerm]:
    """The function-type 1, 4 and 9 lines of every ``[ dihedraltypes ]`` section of a
    topology text (four atom types per line)."""
    terms, inside = [], False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            inside = line.strip("[] ").lower() == "dihedraltypes"
            continue
        if not inside:
            continue
        fields = line.split()
        if len(fields) < 8 or fields[4] not in ("1", "4", "9"):
            raise MlpotInputError(
                f"line {number}: not a periodic dihedral type: {raw!r}", field="dihedraltypes"
            )
        try:
            phase, k, n = float(fields[5]), float(fields[6]), int(fields[7])
        except ValueError:
            raise MlpotInputError(
                f"line {number}: bad numbers: {raw!r}", field="dihedraltypes"
            ) from None
        terms.append(WrittenTerm(tuple(fields[:4]), n, phase, k))
    return terms


def openmm_xml(
    terms: Sequence[TorsionTerm], types: Sequence[str], path: str | Path | None = None
) -> str:
    """An OpenMM ForceField XML with one ``<Proper>`` of ``terms`` for ``types`` (phases in
    rad, ``k`` in kJ/mol); the posterior std of each ``k`` (kJ/mol) is in a comment."""
    types = _check_types(types)
    root = ET.Element("ForceField")
    force = ET.SubElement(root, "PeriodicTorsionForce")
    attributes = {f"type{q + 1}": t for q, t in enumerate(types)}
    for q, term in enumerate(terms, start=1):
        attributes[f"periodicity{q}"] = str(term.periodicity)
        attributes[f"phase{q}"] = repr(math.radians(term.phase))
        attributes[f"k{q}"] = repr(term.k * KJ_PER_MOL_PER_EV)
    stds = ", ".join(f"n={t.periodicity}: {t.k_std * KJ_PER_MOL_PER_EV:.6f}" for t in terms)
    force.append(ET.Comment(f" posterior std of k (kJ/mol): {stds} "))
    ET.SubElement(force, "Proper", attributes)
    ET.indent(root)
    return _write(ET.tostring(root, encoding="unicode") + "\n", path)


def read_openmm_torsions(text: str) -> list[WrittenTerm]:
    """Every ``<Proper>`` term of the ``<PeriodicTorsionForce>`` of an OpenMM ForceField
    XML text (phases back in degrees)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise MlpotInputError(f"not XML: {err}", field="openmm") from None
    terms = []
    for proper in root.iter("Proper"):
        types = tuple(proper.get(f"type{q}") or proper.get(f"class{q}") for q in range(1, 5))
        q = 1
        while proper.get(f"periodicity{q}") is not None:
            terms.append(
                WrittenTerm(
                    types,
                    int(proper.get(f"periodicity{q}")),
                    math.degrees(float(proper.get(f"phase{q}"))),
                    float(proper.get(f"k{q}")),
                )
            )
            q += 1
    return terms
