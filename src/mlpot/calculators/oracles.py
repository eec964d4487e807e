"""Oracles: reference calculators named in config, built by one factory.

Every oracle is an ASE calculator. Active learning labels with them, validation compares
against them, and delta-learning uses one as the cheap baseline under a learned
correction, so the factory lives here, below all three. Built-in names:

* ``emt`` — ASE's effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O roughly);
* ``lj`` — ASE's Lennard-Jones (``sigma``, ``epsilon``, ``rc``, ``smooth``);
* ``xtb`` — GFN2-xTB or GFN1-xTB through tblite (``method``, ``accuracy``,
  ``electronic_temperature``; needs the ``xtb`` extra);
* ``pyscf`` — Kohn-Sham DFT or Hartree-Fock through PySCF for molecules (``functional``,
  ``basis``, ``charge``, ``spin``; needs the ``dft`` extra);
* ``module:factory`` — any importable callable returning an ASE calculator. It imports and
  runs code, so it is built only with ``trust_code=True`` (the command line's
  ``--trust-code``): a name read from a checkpoint or a config never runs code on its own
  (see :mod:`mlpot.trust`).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.units import Bohr, Hartree

from mlpot.errors import MlpotInputError
from mlpot.trust import BUILTIN_ORACLES, check_oracle_name


def _emt(**params: Any) -> Calculator:
    from ase.calculators.emt import EMT

    return EMT(**params)


def _lj(**params: Any) -> Calculator:
    from ase.calculators.lj import LennardJones

    return LennardJones(**params)


def _xtb(method: str = "GFN2-xTB", **params: Any) -> Calculator:
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise MlpotInputError(
            "oracle 'xtb' needs tblite: pip install 'mlpot[xtb]'", field="oracle"
        ) from None
    aliases = {
        "gfn2": "GFN2-xTB",
        "gfn1": "GFN1-xTB",
        "gfn2-xtb": "GFN2-xTB",
        "gfn1-xtb": "GFN1-xTB",
    }
    return TBLite(method=aliases.get(method.lower(), method), verbosity=0, **params)


class PySCFCalculator(Calculator):
    """Energy and forces of a molecule from PySCF (RKS/UKS with ``functional``, or HF).

    Args:
        functional: exchange-correlation functional (``"hf"`` for Hartree-Fock).
        basis: Gaussian basis set name.
        charge, spin: total charge and ``2S`` (number of unpaired electrons).
        max_cycle, conv_tol: SCF settings; an unconverged SCF raises.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        functional: str = "pbe",
        basis: str = "def2-svp",
        charge: int = 0,
        spin: int = 0,
        max_cycle: int = 100,
        conv_tol: float = 1e-9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.settings = dict(
            functional=functional,
            basis=basis,
            charge=charge,
            spin=spin,
            max_cycle=max_cycle,
            conv_tol=conv_tol,
        )

    def calculate(
        self, atoms: Atoms | None = None, properties=None, system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        from pyscf import dft, gto, scf

        s = self.settings
        if self.atoms.pbc.any():
            raise MlpotInputError(
                "the pyscf oracle handles molecules only (pbc must be False)", field="oracle"
            )
        mol = gto.M(
            atom=[(a.symbol, tuple(a.position)) for a in self.atoms],
            unit="Angstrom",
            basis=s["basis"],
            charge=s["charge"],
            spin=s["spin"],
            verbose=0,
        )
        if s["functional"].lower() == "hf":
            mf = scf.RHF(mol) if s["spin"] == 0 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if s["spin"] == 0 else dft.UKS(mol)
            mf.xc = s["functional"]
        mf.max_cycle, mf.conv_tol = s["max_cycle"], s["conv_tol"]
        energy = mf.kernel()
        if not mf.converged:
            raise RuntimeError(f"PySCF SCF did not converge in {s['max_cycle']} cycles")
        gradient = mf.nuc_grad_method().kernel()  # Hartree/Bohr
        self.results = {
            "energy": energy * Hartree,
            "free_energy": energy * Hartree,
            "forces": -np.asarray(gradient) * Hartree / Bohr,
        }


def _pyscf(**params: Any) -> Calculator:
    try:
        import pyscf  # noqa: F401
    except ImportError:
        raise MlpotInputError(
            "oracle 'pyscf' needs PySCF: pip install 'mlpot[dft]'", field="oracle"
        ) from None
    return PySCFCalculator(**params)


ORACLES = {"emt": _emt, "lj": _lj, "xtb": _xtb, "pyscf": _pyscf}


assert set(ORACLES) == set(BUILTIN_ORACLES)  # mlpot.trust knows the built-in names


def make_oracle(name: str, /, *, trust_code: bool = False, **params: Any) -> Calculator:
    """A fresh ASE calculator for oracle ``name`` (see module docstring) with ``params``.

    A ``module:factory`` name imports and runs code: it raises :class:`MlpotInputError`
    (field ``oracle``) unless ``trust_code`` is True. Built-in names need no trust.
    """
    if isinstance(name, str) and name in ORACLES:
        factory = ORACLES[name]
    else:
        check_oracle_name(name, trust_code=trust_code)  # unknown, malformed or untrusted
        module_name, _, attribute = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as err:
            raise MlpotInputError(
                f"cannot import oracle factory {name!r}: {err}", field="oracle"
            ) from None
        if not callable(factory):
            raise MlpotInputError(f"oracle factory {name!r} is not callable", field="oracle")
    try:
        return factory(**params)
    except TypeError as err:
        raise MlpotInputError(
            f"bad parameters for oracle {name!r}: {err}", field="oracle"
        ) from None
