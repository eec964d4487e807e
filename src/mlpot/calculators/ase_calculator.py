"""ASE calculator: every cheap property from one model evaluation per configuration."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mlpot.data.graph import atoms_to_graph
from mlpot.models.base import EnergyModel
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict


class MlpotCalculator(Calculator):
    """Energy, free energy, per-atom energies, forces and (for 3D-periodic cells) stress.

    Args:
        model: an energy model.
        dtype: ``float64`` (default) or ``float32`` for evaluation.
        device: torch device.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: EnergyModel,
        *,
        dtype: torch.dtype | str = torch.float64,
        device: str = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()

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
        out = predict(self.model, graph, forces=True, stress=periodic)
        energy = float(out[outputs.ENERGY].detach()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out[outputs.LOCAL_ENERGIES].detach().cpu().double().numpy(),
            "forces": out[outputs.FORCES].detach().cpu().double().numpy(),
        }
        if periodic:
            stress = out[outputs.STRESS].detach().cpu().double().numpy()[0]
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress).astype(np.float64)


def load_calculator(
    path, *, dtype: torch.dtype | str = torch.float64, device: str = "cpu"
) -> MlpotCalculator:
    """``load_calculator("model.pt")``: the ASE calculator of a saved model."""
    from mlpot.models.checkpoint import load_model

    return MlpotCalculator(load_model(path), dtype=dtype, device=device)
