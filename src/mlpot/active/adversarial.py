"""Adversarial exploration: MD on the model's energy plus a bias towards high uncertainty.

The bias is a function of the committee's (calibrated) energy variance
``σ² = s² Σ_k (E_k - Ē)² / (K - 1)`` over its ``K`` members, ``s`` the energy calibration
factor, scaled per atom with the width ``B`` (eV/atom) and the strength ``A`` (eV):

* ``gaussian`` (uncertainty-driven dynamics, Kulichenko et al., *Nat. Comput. Sci.* 3, 230
  (2023)): ``E_bias = A [exp(-σ² / (N B²)) - 1]``, bounded in ``[-A, 0]``, so the bias
  cannot push the system arbitrarily far where the members disagree;
* ``quadratic``: ``E_bias = -A σ² / (N B²)``, the small-σ limit of the former (unbounded).

Both lower the energy where the members disagree, so MD drifts towards configurations
the model is unsure of. Forces and stress of the bias are exact: by the chain rule
``dσ²/dx = 2 s² / (K - 1) Σ_k (E_k - Ē) dE_k/dx`` with the members' autograd forces (and
strain derivatives) from the very evaluation that gives the mean forces, so the bias costs
no extra pass through the model.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress

from mlpot.calculators import MlpotCalculator
from mlpot.errors import MlpotInputError
from mlpot.physics import outputs

BIAS_FORMS = ("gaussian", "quadratic")
BIAS_ENERGY = "bias_energy"  # eV, the bias part of ``energy``
BIAS_FORCES = "bias_forces"  # (N, 3) eV/Å, the bias part of ``forces``
ENERGY_VARIANCE = "energy_variance"  # eV², the calibrated member variance σ²


class AdversarialCalculator(MlpotCalculator):
    """An :class:`MlpotCalculator` whose energy, forces and stress include the bias above.

    ``energy``, ``free_energy``, ``forces`` and ``stress`` are biased (MD runs on them);
    ``bias_energy``, ``bias_forces`` and ``energy_variance`` report the bias, and the
    uncertainty and domain outputs are those of the unbiased model. Per-atom ``energies``
    are not reported (the bias is not a sum over atoms).

    Args:
        model: an ensemble model (committee or shallow ensemble).
        strength: ``A``, eV (> 0).
        width: ``B``, eV/atom (> 0).
        form: ``gaussian`` or ``quadratic``.
        **kwargs: as :class:`MlpotCalculator` (``calibration``, ``domain``, ``dtype``, ...).
    """

    def __init__(
        self,
        model,
        *,
        strength: float,
        width: float,
        form: Literal["gaussian", "quadratic"] = "gaussian",
        **kwargs,
    ) -> None:
        if not (strength > 0 and width > 0):
            raise MlpotInputError(
                f"bias strength ({strength} eV) and width ({width} eV/atom) must be positive",
                field="explore",
            )
        if form not in BIAS_FORMS:
            raise MlpotInputError(f"bias form must be one of {BIAS_FORMS}", field="explore")
        if kwargs.get("force_uncertainty") is False:
            raise MlpotInputError("the bias needs per-member forces", field="force_uncertainty")
        super().__init__(model, **kwargs)
        if self.model.n_members < 2:
            raise MlpotInputError(
                f"adversarial exploration needs an ensemble model, not {model.name!r}",
                field="model",
            )
        self.strength, self.width, self.form = float(strength), float(width), form
        self.implemented_properties = [
            p for p in self.implemented_properties if p != "energies"
        ] + [BIAS_ENERGY, BIAS_FORCES, ENERGY_VARIANCE]

    def bias(self, variance: float, n_atoms: int) -> tuple[float, float]:
        """``E_bias`` (eV) and ``dE_bias/dσ²`` (1/eV) at calibrated variance ``σ²`` (eV²)."""
        scale = 1.0 / (n_atoms * self.width**2)  # 1/eV²
        if self.form == "gaussian":
            decay = math.exp(-variance * scale)
            return self.strength * (decay - 1.0), -self.strength * scale * decay
        return -self.strength * variance * scale, -self.strength * scale

    def extend_results(self, out: dict[str, torch.Tensor]) -> None:
        energies = out[outputs.MEMBER_ENERGY][:, 0].double()  # (K,)
        k = energies.shape[0]
        s2 = self.calibration.energy**2
        deviation = energies - energies.mean()  # (K,)
        weights = 2.0 * s2 / (k - 1) * deviation  # (K,) dσ²/dE_k
        variance = float(s2 * (deviation**2).sum() / (k - 1))
        energy, slope = self.bias(variance, len(self.atoms))
        member_forces = out[outputs.MEMBER_FORCES].double()  # (K, N, 3) = -dE_k/dx
        # F_bias = -dE_bias/dx = -slope * Σ_k w_k dE_k/dx = slope * Σ_k w_k F_k
        forces = slope * torch.einsum("k,knc->nc", weights, member_forces).numpy()  # (N, 3)
        self.results[BIAS_ENERGY] = energy
        self.results[BIAS_FORCES] = forces
        self.results[ENERGY_VARIANCE] = variance
        self.results["energy"] += energy
        self.results["free_energy"] += energy
        self.results["forces"] = self.results["forces"] + forces
        self.results.pop("energies", None)
        if "stress" in self.results:
            # σ_k = (1/V) dE_k/dε, so the bias stress is slope * Σ_k w_k σ_k
            member_stress = out[outputs.MEMBER_STRESS][:, 0].double()  # (K, 3, 3)
            stress = slope * torch.einsum("k,kij->ij", weights, member_stress).numpy()
            self.results["stress"] = self.results["stress"] + full_3x3_to_voigt_6_stress(
                stress
            ).astype(np.float64)


def adversarial_calculator(
    path, *, strength: float, width: float, form: str = "gaussian"
) -> AdversarialCalculator:
    """The biased calculator of a saved ensemble model (its calibration and domain)."""
    from mlpot.models.checkpoint import load_checkpoint, model_from_payload

    payload = load_checkpoint(path)
    return AdversarialCalculator(
        model_from_payload(payload, source=str(path)),
        strength=strength,
        width=width,
        form=form,
        calibration=payload["calibration"],
        domain=payload["domain"],
        baseline=payload.get("baseline"),
    )
