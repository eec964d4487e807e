"""ASE calculator: every cheap property from one model evaluation per configuration."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mlpot.calculators.oracles import make_oracle
from mlpot.data.graph import atoms_to_graph
from mlpot.models.base import EnergyModel
from mlpot.models.checkpoint import torch_dtype
from mlpot.physics import outputs
from mlpot.uncertainty.calibration import Calibration
from mlpot.uncertainty.domain import DomainStatistics
from mlpot.uncertainty.ensemble import predict_full

UNCERTAINTY_PROPERTIES = [outputs.ENERGY_STD, outputs.FORCES_STD, outputs.STRESS_STD]
DOMAIN_PROPERTIES = [outputs.MAHALANOBIS, outputs.D_MIN, outputs.HULL_DISTANCE, outputs.IN_DOMAIN]


class MlpotCalculator(Calculator):
    """Energy, free energy, per-atom energies, forces and (for 3D-periodic cells) stress.

    An ensemble model (committee or shallow ensemble) adds ``energy_std`` (eV),
    ``forces_std`` (per atom, eV/Å) and ``stress_std`` (eV/Å³), scaled by its
    ``calibration``; ``domain`` statistics add per-atom ``mahalanobis`` (T²), ``d_min`` and
    (statistics with a hull) ``hull_distance`` (> 0: outside the training features' convex
    hull), and the structure's ``in_domain`` flag. Read them with
    ``calc.get_property(name, atoms)``.

    Args:
        model: an energy model.
        dtype: ``float64`` (default) or ``float32`` for evaluation.
        device: torch device.
        calibration: scale factors of the standard deviations (a checkpoint's field).
        domain: domain-of-applicability statistics (a checkpoint's field).
        force_uncertainty: derive ``forces_std``/``stress_std`` (one batched backward pass
            over the members); False keeps only ``energy_std``, at the cost of one model.
        baseline: for a delta-learned model, the baseline (an ASE calculator or an oracle
            spec ``{"name", "params"}``, a checkpoint's field): its energy, forces, per-atom
            energies and stress are added to the model's. Properties the baseline lacks
            (stress, per-atom energies) are then not offered.
        trust_code: allow a baseline spec that names code (``module:factory``) to be
            imported and run (see :func:`mlpot.calculators.oracles.make_oracle`).
    """

    def __init__(
        self,
        model: EnergyModel,
        *,
        dtype: torch.dtype | str = torch.float64,
        device: str = "cpu",
        calibration: Calibration | dict[str, Any] | None = None,
        domain: DomainStatistics | dict[str, Any] | None = None,
        force_uncertainty: bool = True,
        baseline: BaseCalculator | dict[str, Any] | None = None,
        trust_code: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dtype = torch_dtype(dtype)
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        if not isinstance(calibration, Calibration):
            calibration = Calibration.from_dict(calibration)
        if isinstance(domain, dict):
            domain = DomainStatistics.from_dict(domain)
        self.calibration, self.domain = calibration, domain
        self.force_uncertainty = force_uncertainty
        self.implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
        if self.model.n_members:
            self.implemented_properties += UNCERTAINTY_PROPERTIES
        if domain is not None:
            self.implemented_properties += [
                p for p in DOMAIN_PROPERTIES if domain.has_hull or p != outputs.HULL_DISTANCE
            ]
        if isinstance(baseline, dict):
            baseline = make_oracle(
                baseline["name"], trust_code=trust_code, **baseline.get("params", {})
            )
        self.baseline = baseline
        if baseline is not None:
            self.implemented_properties = [
                p
                for p in self.implemented_properties
                if p not in ("stress", "energies") or p in baseline.implemented_properties
            ]

    def calculate(
        self, atoms: Atoms | None = None, properties=None, system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        graph = atoms_to_graph(
            atoms, self.model.cutoff, dtype=self.dtype, elements=self.model.elements, source="atoms"
        )
        graph = {k: v.to(self.device) for k, v in graph.items()}
        periodic = bool(atoms.pbc.all()) and atoms.cell.rank == 3
        out = predict_full(
            self.model,
            graph,
            forces=True,
            stress=periodic,
            calibration=self.calibration,
            domain=self.domain,
            member_forces=self.force_uncertainty,
        )
        out = {key: value.cpu() for key, value in out.items()}
        energy = float(out[outputs.ENERGY][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out[outputs.LOCAL_ENERGIES].double().numpy(),
            "forces": out[outputs.FORCES].double().numpy(),
        }
        if periodic:
            stress = out[outputs.STRESS].double().numpy()[0]
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress).astype(np.float64)
        for name in (outputs.ENERGY_STD, outputs.STRESS_STD):
            if name in out:
                self.results[name] = float(out[name][0])
        if outputs.MEMBER_ENERGY in out:  # (K,) eV: the members' energies, uncalibrated
            self.results[outputs.MEMBER_ENERGY] = out[outputs.MEMBER_ENERGY][:, 0].double().numpy()
        for name in (outputs.FORCES_STD, outputs.MAHALANOBIS, outputs.D_MIN, outputs.HULL_DISTANCE):
            if name in out:
                self.results[name] = out[name].double().numpy()
        if outputs.IN_DOMAIN in out:
            self.results[outputs.IN_DOMAIN] = bool(out[outputs.IN_DOMAIN][0])
        if self.baseline is not None:
            self._add_baseline(atoms)
        self.extend_results(out)

    def energies_and_forces(self, structures: list[Atoms]) -> list[tuple[float, np.ndarray]]:
        """Energy (eV) and forces (eV/Å) of many structures in one batched model pass
        (e.g. the beads of a ring polymer); no uncertainty or domain outputs. A
        delta-learned model adds its baseline structure by structure."""
        from mlpot.data.graph import collate
        from mlpot.physics.derivatives import predict

        graphs = [
            atoms_to_graph(
                a, self.model.cutoff, dtype=self.dtype, elements=self.model.elements, source="atoms"
            )  # fmt: skip
            for a in structures
        ]
        graph = {k: v.to(self.device) for k, v in collate(graphs).items()}
        out = predict(self.model, graph, forces=True)
        energies = out[outputs.ENERGY].detach().double().cpu().numpy()
        forces = out[outputs.FORCES].detach().double().cpu().numpy()
        starts = np.cumsum([0] + [len(a) for a in structures])
        results = [(float(energies[k]), forces[starts[k] : starts[k + 1]])
                   for k in range(len(structures))]  # fmt: skip
        if self.baseline is not None:
            for k, atoms in enumerate(structures):
                copy = atoms.copy()
                copy.calc = self.baseline
                energy, f = results[k]
                results[k] = (energy + copy.get_potential_energy(), f + copy.get_forces())
        return results

    def extend_results(self, out: dict[str, torch.Tensor]) -> None:
        """Hook for wrappers (e.g. an exploration bias): add to ``self.results`` from the raw
        outputs ``out`` of the same evaluation, member outputs included. Does nothing here."""

    def _add_baseline(self, atoms: Atoms) -> None:
        """Delta-learning: add the baseline's energy, forces (and stress, energies)."""
        copy = atoms.copy()
        copy.calc = self.baseline
        energy = float(copy.get_potential_energy())
        self.results["energy"] += energy
        self.results["free_energy"] += energy
        self.results["forces"] = self.results["forces"] + copy.get_forces()
        for name in ("stress", "energies"):
            if name not in self.results:
                continue
            if name in self.baseline.implemented_properties:
                self.results[name] = self.results[name] + copy.calc.get_property(name, copy)
            else:
                del self.results[name]


def load_calculator(
    path,
    *,
    trust_code: bool = False,
    dtype: torch.dtype | str = torch.float64,
    device: str = "cpu",
    force_uncertainty: bool = True,
    domain_scores: bool = True,
) -> MlpotCalculator:
    """``load_calculator("model.pt")``: the ASE calculator of a saved model, with the
    checkpoint's calibration and domain statistics; a delta-learned checkpoint's
    baseline is run and added. ``domain_scores=False`` leaves out T², d_min and
    ``in_domain`` (for aspirin they cost about 1.6 single-model evaluations: the nearest
    of up to 2000 reference atoms per element); ``force_uncertainty=False`` leaves out
    ``forces_std`` and ``stress_std``. A baseline that names code (``module:factory``) is
    refused unless ``trust_code`` is True: pass it only for a checkpoint you trust."""
    from mlpot.models.checkpoint import load_checkpoint, model_from_payload

    payload = load_checkpoint(path, trust_code=trust_code)
    return MlpotCalculator(
        model_from_payload(payload, source=str(path)),
        dtype=dtype,
        device=device,
        calibration=payload["calibration"],
        domain=payload["domain"] if domain_scores else None,
        force_uncertainty=force_uncertainty,
        baseline=payload.get("baseline"),
        trust_code=trust_code,
    )
