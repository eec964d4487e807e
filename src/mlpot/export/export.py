"""``export_model``: an mlpot checkpoint -> a metatomic model file (TorchScript).

What exports: every short-range model (``mpnn`` and its shallow ensemble, ``bpnn`` with
ACSF and its shallow ensemble, committees, LLPR, sums with reference offsets, ZBL,
Lennard-Jones and D3-like dispersion terms). What is refused, with the reason:

* a delta-learned checkpoint (its baseline is an ASE calculator such as GFN2-xTB, not a
  torch model: the file would hold only the correction);
* long-range electrostatics (``coulomb``, ``qeq``): they split the batch
  per structure in Python and call torch-pme's reciprocal solvers, which this tracing
  does not capture; the engines' own long-range solvers are the route there;
* SOAP descriptors (featomic's calculator is a TorchScript extension of its own, not
  traced here).

The file is written only after :func:`mlpot.export.check.compare_export` finds the
exported model equal to the eager one on probe structures (relative difference below
:data:`mlpot.export.check.TOLERANCE`); otherwise nothing is written and the error says
which quantity differs where.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import torch

from mlpot.data.graph import atoms_to_graph, collate
from mlpot.errors import MlpotInputError
from mlpot.export.check import TOLERANCE, compare_export, probe_structures
from mlpot.models.base import EnergyModel, model_dtype
from mlpot.models.checkpoint import load_checkpoint, model_from_payload, torch_dtype

# Model kinds the tracing does not capture, with the reason given to the user.
_REFUSED = {
    "coulomb": "long-range electrostatics (torch-pme solvers, per-structure Python loops)",
    "qeq": "long-range electrostatics (charge equilibration per structure)",
}


def interaction_range(model: EnergyModel) -> float:
    """How far an atom's energy reaches, Å: the cutoff times the message-passing layers of
    an ``mpnn``, the cutoff otherwise; the largest over a model's terms and members."""
    reach = 0.0
    for module in model.modules():
        if isinstance(module, EnergyModel):
            layers = len(getattr(module, "interactions", [])) or 1
            reach = max(reach, module.cutoff * layers)
    return reach


def refusal(model: EnergyModel) -> str | None:
    """Why ``model`` cannot be exported, or None when it can."""
    for module in model.modules():
        if isinstance(module, EnergyModel) and module.name in _REFUSED:
            return f"a {module.name!r} term: {_REFUSED[module.name]}"
        if type(module).__name__ == "SOAP":
            return "SOAP descriptors (featomic's calculator is not traced)"
    return None


def trace_member_energies(model: EnergyModel) -> torch.jit.ScriptModule:
    """``graph -> (K, N)`` member per-atom energies of ``model``, traced on two probes."""
    from mlpot.export.metatomic_model import MemberEnergies

    probes = probe_structures(model.elements, model.cutoff)
    dtype = model_dtype(model)
    example = collate(
        [atoms_to_graph(atoms, model.cutoff, dtype=dtype) for atoms in probes.values()][:2]
    )
    with warnings.catch_warnings():
        # Checked below against the eager model instead (compare_export).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return torch.jit.trace(
            MemberEnergies(model).eval(), (example,), strict=False, check_trace=False
        )


def atomistic_model(model: EnergyModel, *, energy_scale: float = 1.0, name: str = "mlpot"):
    """The metatomic ``AtomisticModel`` of ``model`` (evaluation mode, its own dtype)."""
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput

    from mlpot.export.metatomic_model import MetatomicPotential
    from mlpot.models.checkpoint import package_version

    model = model.eval()
    ensemble = model.n_members > 0
    module = MetatomicPotential(
        trace_member_energies(model), model.cutoff, ensemble, float(energy_scale)
    )
    energy = ModelOutput(quantity="", unit="eV", sample_kind="atom")
    outputs = {"energy": energy}
    if ensemble:
        outputs["energy_uncertainty"] = ModelOutput(quantity="", unit="eV", sample_kind="atom")
        outputs["energy_ensemble"] = ModelOutput(quantity="", unit="eV", sample_kind="atom")
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=list(model.elements),
        interaction_range=interaction_range(model),
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype=str(model_dtype(model)).removeprefix("torch."),
    )
    metadata = ModelMetadata(
        name=name,
        description=f"mlpot {package_version()} model {model.name!r}"
        + (f" with {model.n_members} members" if ensemble else ""),
    )
    return AtomisticModel(module.eval(), metadata, capabilities)


def export_model(
    checkpoint: str | Path,
    output: str | Path,
    *,
    dtype: torch.dtype | str | None = None,
) -> list:
    """Write the metatomic model of ``checkpoint`` to ``output`` after checking it against
    the eager model; returns the differences found (all below tolerance). ``dtype``:
    float64 or float32 (default: the checkpoint's)."""
    from metatomic_ase import MetatomicCalculator

    from mlpot.calculators.ase_calculator import MlpotCalculator
    from mlpot.uncertainty.calibration import Calibration

    source = str(checkpoint)
    payload = load_checkpoint(checkpoint)
    if payload.get("baseline") is not None:
        raise MlpotInputError(
            "a delta-learned model cannot be exported: its baseline "
            f"({payload['baseline'].get('name')!r}) is an ASE calculator, not a torch model, "
            "so the file would hold only the correction",
            source=source,
            field="baseline",
        )
    model = model_from_payload(payload, source=source)
    why = refusal(model)
    if why is not None:
        raise MlpotInputError(f"cannot be exported: {why}", source=source, field="model")
    dtype = torch_dtype(dtype or payload.get("dtype", "float64"), field="dtype")
    model = model.to(dtype).eval()
    calibration = Calibration.from_dict(payload.get("calibration"))
    exported = atomistic_model(model, energy_scale=calibration.energy, name=Path(source).stem)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        candidate = Path(tmp) / output.name
        exported.save(str(candidate))
        eager = MlpotCalculator(model, dtype=dtype, calibration=calibration)
        differences = compare_export(
            eager,
            MetatomicCalculator(str(candidate), uncertainty_threshold=None),
            probe_structures(model.elements, model.cutoff),
        )
        worst = max(differences, key=lambda d: d.relative if math.isfinite(d.relative) else 1e300)
        if not worst.relative <= TOLERANCE[dtype]:
            raise MlpotInputError(
                f"the exported model differs from the eager one ({worst.quantity} on the "
                f"{worst.probe} probe: relative difference {worst.relative:.2e} > "
                f"{TOLERANCE[dtype]:.0e}); nothing written",
                source=source,
            )
        candidate.replace(output)
    return differences
