"""QM/ML hybrid calculator: a quantum-mechanical oracle near a centre, a learned potential
elsewhere, joined by a C²-continuous switch so that the energy is conserved in MD.

Regions. The QM core ``A`` (``qm_atoms``, e.g. a reacting molecule) is always QM. Every
other atom belongs to a switched group ``m``: by default a molecule (covalent connectivity,
found once on the first configuration), or single atoms, or groups given by the user. A
group's weight is ``s_m = s(d_m)``, ``d_m`` (Å) the distance of its centroid from the QM
centre (the centroid of ``centre`` atoms, of ``A`` by default, or a fixed point), ``s`` the
quintic smoothstep: 1 for ``d <= r_core``, 0 for ``d >= r_buffer``, C² in between.

Energy (eV)::

    E = E_ML(all) + Δ(A) + Σ_m s_m δ_m + Σ_{m<n} s_m s_n δ_mn,      Δ(X) = E_QM(X) − E_ML(X)
    δ_m = Δ(A ∪ m) − Δ(A),   δ_mn = Δ(A ∪ m ∪ n) − Δ(A ∪ m) − Δ(A ∪ n) + Δ(A)

with ``E_ML(all)`` the learned potential on the whole system and ``Δ(X)`` the QM − ML
difference on the isolated cluster ``X``: a many-body expansion of the QM correction
around the core, to three bodies (core + two groups; ``body_order=2`` stops at core + one
group). A covalent bond that ``X`` cuts is capped by a hydrogen link atom on the bond (at
``g = (R_i + R_H)/(R_i + R_j)`` of it, covalent radii ``R``) seen by both QM and ML, so
that cap artefacts cancel to first order (subtractive, ONIOM-like embedding).

Per-atom energies. ``E = Σ_i [s_i ε_i^QM + (1 − s_i) ε_i^ML]`` with ``s_i = 1`` in ``A`` and
``s_m`` in group ``m``; ``ε_i^ML`` are the learned local energies in the full system and
the per-atom QM energies are ``ε_i^QM = ε_i^ML + δ_i``, where ``s_i δ_i`` shares the cluster
corrections equally among the atoms that own them: ``Δ(A)/|A|`` in the core, ``s_m δ_m/|m|``
in group ``m``, and half of ``s_m s_n δ_mn`` to each of the two groups. So the QM energy of
a cluster is partitioned as learned local energies in the real environment plus the
cluster's QM correction. QM terms beyond three bodies, and all QM effects beyond
``r_buffer`` (long-range electrostatics included), stay at the ML level; inside the switch
zone the energy is partly ML, so ``r_core`` should enclose the atoms where the learned
potential is poor (ε_F in the interface measures it; ``bench/qmml.py`` maps the error of a
proton transfer against the radii and the body order).

Continuity and forces. Every cluster has a fixed composition and a weight that is a C²
function of the positions; a group enters or leaves the sum only where ``s``, ``s'`` and
``s''`` vanish, so the energy has no jumps (``ΔE_max`` is at round-off or the oracle's SCF
noise, see :func:`mlpot.apps.qmml_diagnostics.energy_jumps`). Forces are its exact negative
gradient: ``F = F_ML + F_Δ(A) + Σ_m (s_m F_δm − δ_m s'_m ∇d_m) + Σ_{m<n} (s_m s_n F_δmn −
δ_mn [s_n s'_m ∇d_m + s_m s'_n ∇d_n])``, the switch terms acting on the groups' atoms and
the centre atoms; a link atom's force goes to its two bond atoms as ``(1 − g, g)``.

Limits: ``qm_atoms`` = all atoms gives ``E_QM``; no group inside ``r_buffer`` gives
``E_ML + Δ(A)``; a system of the core and two groups, both inside ``r_core``, gives
``E_QM`` (three bodies). Cost per call: one ML evaluation of the whole system and
``1 + n + n(n − 1)/2`` QM and ML cluster evaluations (``1 + n`` at two bodies), ``n`` the
number of groups inside ``r_buffer``. Periodic cells use minimum images (``r_buffer``
below half the cell's smallest width); stress is not offered. Link atoms suit covalent
bonds: pass ``capping=False`` for metals (with ``groups="atoms"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, Calculator, all_changes

from mlpot.apps.qmml_regions import GROUP_MODES, Cluster, Partition, Regions, Switch, switch
from mlpot.errors import MlpotInputError

__all__ = [
    "Cluster",
    "Partition",
    "QMMLCalculator",
    "Regions",
    "Switch",
    "evaluate",
    "load_qmml_calculator",
    "switch",
]


class QMMLCalculator(Calculator):
    """Energy, forces and per-atom energies of the switched QM/ML embedding (module doc).

    Args:
        qm: the QM oracle, any ASE calculator (e.g. ``make_oracle("xtb")``). It sees only
            isolated clusters and is reset before each, so its answers do not depend on
            the order of calls. Charges and magnetic moments of a cluster are the sums of
            its atoms' initial ones (set them on the system for a charged fragment).
        ml: the learned potential, any ASE calculator (e.g. ``load_calculator(path)``);
            ``energies`` is offered when it gives per-atom energies.
        qm_atoms: indices of the QM core (always QM); may be empty if a centre is given.
        r_core, r_buffer: switch radii (Å), ``0 <= r_core < r_buffer``.
        centre: atom index or indices whose centroid is the QM centre (default: the core);
            they move, so the switch forces act on them too.
        centre_point: a fixed QM centre (Å) instead of ``centre``.
        groups: ``"molecules"`` (covalently bonded components of the non-core atoms),
            ``"atoms"``, or explicit disjoint lists; atoms in no group stay ML.
        capping: cap bonds cut by a cluster with hydrogen link atoms; False leaves them
            open (dangling bonds).
        ml_elements: atomic numbers the ML model covers, checked (with H when link atoms
            are needed) on the first configuration.
        body_order: 2 expands the QM correction to the core plus one group; 3 adds the
            core plus each pair of groups inside ``r_buffer`` (module doc).
    """

    def __init__(
        self,
        qm: BaseCalculator,
        ml: BaseCalculator,
        *,
        qm_atoms: Sequence[int],
        r_core: float,
        r_buffer: float,
        centre: int | Sequence[int] | None = None,
        centre_point: Sequence[float] | None = None,
        groups: str | Sequence[Sequence[int]] = "molecules",
        capping: bool = True,
        ml_elements: Sequence[int] | None = None,
        body_order: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= r_core < r_buffer:
            raise MlpotInputError(
                f"switch radii must satisfy 0 <= r_core < r_buffer (got r_core={r_core}, "
                f"r_buffer={r_buffer} Å)",
                field="r_buffer",
            )
        if body_order not in (2, 3):
            raise MlpotInputError(
                f"body_order must be 2 or 3 (got {body_order})", field="body_order"
            )
        if centre is not None and centre_point is not None:
            raise MlpotInputError("give centre (atoms) or centre_point, not both", field="centre")
        if isinstance(groups, str) and groups not in GROUP_MODES:
            raise MlpotInputError(
                f"groups must be one of {GROUP_MODES} or lists of indices", field="groups"
            )
        self.qm, self.ml = qm, ml
        self.options = {
            "qm_atoms": np.asarray(qm_atoms, dtype=int).reshape(-1),
            "r_core": float(r_core),
            "r_buffer": float(r_buffer),
            "centre": None if centre is None else np.asarray(centre, dtype=int).reshape(-1),
            "centre_point": None if centre_point is None else np.asarray(centre_point, float),
            "groups": groups,
            "capping": capping,
        }
        point = self.options["centre_point"]
        if point is not None and point.shape != (3,):
            raise MlpotInputError("centre_point must be 3 coordinates (Å)", field="centre")
        if centre is None and point is None and len(self.options["qm_atoms"]) == 0:
            raise MlpotInputError("empty qm_atoms needs a centre or centre_point", field="centre")
        self.ml_elements = None if ml_elements is None else {int(z) for z in ml_elements}
        self.body_order = body_order
        self.implemented_properties = ["energy", "free_energy", "forces"]
        if "energies" in ml.implemented_properties:
            self.implemented_properties.append("energies")
        self._regions: Regions | None = None
        self._numbers: np.ndarray | None = None

    def regions(self, atoms: Atoms) -> Regions:
        """The regions of ``atoms`` (built on the first configuration, and again only when
        the atomic numbers change)."""
        if self._regions is None or not np.array_equal(self._numbers, atoms.numbers):
            regions = Regions.build(atoms, **self.options)
            self._check_elements(atoms, regions)
            self._regions, self._numbers = regions, atoms.numbers.copy()
        return self._regions

    def _check_elements(self, atoms: Atoms, regions: Regions) -> None:
        if self.ml_elements is None:
            return
        needed = set(atoms.numbers.tolist()) | ({1} if len(regions.bonds) else set())
        missing = sorted(needed - self.ml_elements)
        if missing:
            raise MlpotInputError(
                f"atomic numbers {missing} are not covered by the ML model (it knows "
                f"{sorted(self.ml_elements)}; link atoms need H)",
                field="numbers",
            )

    def partition(self, atoms: Atoms) -> Partition:
        """Centre, groups, distances and switch values (Å) for ``atoms``."""
        return self.regions(atoms).partition(atoms)

    def cluster(self, atoms: Atoms, groups: Sequence[np.ndarray]) -> Cluster:
        """The capped cluster of the core and ``groups`` (lists of system indices)."""
        return self.regions(atoms).cluster(atoms, groups)

    def delta(self, atoms: Atoms, groups: Sequence[np.ndarray]) -> tuple[float, np.ndarray]:
        """``Δ = E_QM − E_ML`` (eV) of the cluster of the core and ``groups``, and its
        negative gradient on the system's atoms ``(n_atoms, 3)`` (eV/Å)."""
        cluster = self.cluster(atoms, groups)
        e_qm, f_qm, _ = evaluate(self.qm, cluster.atoms, role="QM")
        e_ml, f_ml, _ = evaluate(self.ml, cluster.atoms, role="ML")
        return e_qm - e_ml, cluster.system_forces(f_qm - f_ml, len(atoms))

    def calculate(
        self, atoms: Atoms | None = None, properties=None, system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        regions = self.regions(atoms)
        part = regions.partition(atoms)
        want_local = "energies" in self.implemented_properties
        energy, forces, local = evaluate(self.ml, atoms, role="ML", energies=want_local)
        core = regions.core
        delta_core, force_core = 0.0, np.zeros((len(atoms), 3))
        if len(core):
            delta_core, force_core = self.delta(atoms, [])
        energy, forces = energy + delta_core, forces + force_core
        shares = np.zeros(len(atoms))  # s_i δ_i, eV
        shares[core] = delta_core / max(len(core), 1)
        active = part.active_groups()
        value, slope = part.switch.value, part.switch.first
        gradients = {k: regions.distance_gradient(atoms, part, k) for k in active}
        pair_terms = {}  # k -> (δ_k, its negative gradient)
        for k in active:
            group, s = part.groups[k], value[k]
            delta, force = self.delta(atoms, [group])
            delta, force = delta - delta_core, force - force_core
            pair_terms[k] = delta, force
            energy += s * delta
            forces += s * force - delta * slope[k] * gradients[k]
            shares[group] += s * delta / len(group)
        if self.body_order == 3:
            for k, m in combinations(active, 2):
                delta, force = self.delta(atoms, [part.groups[k], part.groups[m]])
                delta -= delta_core + pair_terms[k][0] + pair_terms[m][0]
                force = force - force_core - pair_terms[k][1] - pair_terms[m][1]
                weight = value[k] * value[m]
                energy += weight * delta
                forces += weight * force - delta * (
                    value[m] * slope[k] * gradients[k] + value[k] * slope[m] * gradients[m]
                )
                for group in (part.groups[k], part.groups[m]):
                    shares[group] += 0.5 * weight * delta / len(group)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        if want_local:
            self.results["energies"] = local + shares


def evaluate(
    calc: BaseCalculator, atoms: Atoms, *, role: str, energies: bool = False
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy (eV), forces ``(n, 3)`` (eV/Å) and, with ``energies``, per-atom energies
    ``(n,)`` (eV) of a copy of ``atoms`` by ``calc``, reset first; bad input is re-raised
    naming the ``role`` (``"QM"`` or ``"ML"``). A ``Calculator`` is reset, so that an SCF
    starts from its default guess, not from the previous cluster's answer."""
    copy = atoms.copy()
    if isinstance(calc, Calculator):
        calc.reset()
    try:
        forces = np.array(calc.get_property("forces", copy), dtype=np.float64)
        energy = float(calc.get_property("energy", copy))
        local = np.array(calc.get_property("energies", copy), np.float64) if energies else None
    except MlpotInputError as err:
        raise MlpotInputError(f"{role} calculator: {err.reason}", field=err.field) from None
    except NotImplementedError as err:
        raise MlpotInputError(
            f"{role} calculator cannot treat {copy.symbols}: {err}", field="numbers"
        ) from None
    return energy, forces, local


def load_qmml_calculator(
    model: str,
    *,
    oracle: str = "xtb",
    oracle_params: dict[str, Any] | None = None,
    trust_code: bool = False,
    device: str = "cpu",
    **options: Any,
) -> QMMLCalculator:
    """The hybrid of a saved model (``model.pt``, the ML part, evaluated on ``device``) and
    an oracle named as in :func:`mlpot.calculators.oracles.make_oracle` (the QM part);
    ``options`` are :class:`QMMLCalculator`'s keywords (``qm_atoms``, ``r_core``, ...)."""
    from mlpot.calculators.ase_calculator import load_calculator
    from mlpot.calculators.oracles import make_oracle

    ml = load_calculator(
        model, trust_code=trust_code, force_uncertainty=False, domain_scores=False, device=device
    )
    qm = make_oracle(oracle, trust_code=trust_code, **(oracle_params or {}))
    options.setdefault("ml_elements", list(ml.model.elements))
    return QMMLCalculator(qm, ml, **options)
