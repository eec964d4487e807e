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
    """Energy, forces and dipole of a molecule from PySCF (RKS/UKS with ``functional``, or
    HF); on request its polarisability by finite fields.

    Args:
        functional: exchange-correlation functional (``"hf"`` for Hartree-Fock).
        basis: Gaussian basis set name.
        charge, spin: total charge and ``2S`` (number of unpaired electrons).
        max_cycle, conv_tol: SCF settings; an unconverged SCF raises.
        field: strength (atomic units) of the uniform fields of the polarisability, whose
            ``α_ij = ∂μ_i/∂E_j`` comes from central differences of the dipole under ``±E``
            along each axis (six more SCF runs; electrons feel ``+E·r``, origin at 0).

    Units as ASE's: dipole e·Å (about the coordinate origin), polarisability e·Å²/V.
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole", "polarizability"]

    def __init__(
        self,
        functional: str = "pbe",
        basis: str = "def2-svp",
        charge: int = 0,
        spin: int = 0,
        max_cycle: int = 100,
        conv_tol: float = 1e-9,
        field: float = 1e-3,
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
            field=field,
        )

    def _solve(self, mol, field: np.ndarray | None = None):
        """A converged SCF of ``mol`` (in the uniform ``field``, a.u., when given)."""
        from pyscf import dft, scf

        s = self.settings
        if s["functional"].lower() == "hf":
            mf = scf.RHF(mol) if s["spin"] == 0 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if s["spin"] == 0 else dft.UKS(mol)
            mf.xc = s["functional"]
        mf.max_cycle, mf.conv_tol = s["max_cycle"], s["conv_tol"]
        if field is not None:
            bare = mf.get_hcore()
            dipole_integrals = mol.intor("int1e_r", comp=3)
            perturbed = bare + np.einsum("x,xij->ij", field, dipole_integrals)
            mf.get_hcore = lambda *args, **kwargs: perturbed
        energy = mf.kernel()
        if not mf.converged:
            raise RuntimeError(f"PySCF SCF did not converge in {s['max_cycle']} cycles")
        return mf, energy

    def calculate(
        self, atoms: Atoms | None = None, properties=None, system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        from pyscf import gto

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
        mf, energy = self._solve(mol)
        gradient = mf.nuc_grad_method().kernel()  # Hartree/Bohr
        dipole = np.asarray(mf.dip_moment(unit="AU", verbose=0))  # e Bohr
        self.results = {
            "energy": energy * Hartree,
            "free_energy": energy * Hartree,
            "forces": -np.asarray(gradient) * Hartree / Bohr,
            "dipole": dipole * Bohr,
        }
        if properties is not None and "polarizability" in properties:
            alpha = np.empty((3, 3))
            for j in range(3):
                shifted = []
                for sign in (1.0, -1.0):
                    field = np.zeros(3)
                    field[j] = sign * s["field"]
                    mf_j, _ = self._solve(mol, field)
                    shifted.append(np.asarray(mf_j.dip_moment(unit="AU", verbose=0)))
                alpha[:, j] = (shifted[0] - shifted[1]) / (2 * s["field"])  # a.u.
            self.results["polarizability"] = 0.5 * (alpha + alpha.T) * Bohr**2 / Hartree


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

#: Response properties each built-in oracle gives besides energy and forces (its
#: calculator's ``implemented_properties``, known without importing the calculator):
#: ``dipole`` e·Å, ``polarizability`` e·Å²/V. A ``module:factory`` oracle says what it
#: gives only once built.
RESPONSE_PROPERTIES: dict[str, tuple[str, ...]] = {
    "emt": (),
    "lj": (),
    "xtb": ("dipole",),
    "pyscf": ("dipole", "polarizability"),
}


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
