"""Delta-learning: learn the difference between the labels and a cheap baseline calculator.

With a baseline ``b`` (any oracle name: ``emt``, ``lj``, ``xtb``, ``pyscf``,
``module:factory``) the model is trained on ``label - b`` (energy, forces, and stress where
both give one) and predicts ``b + correction``: the checkpoint stores the baseline spec and
:func:`mlpot.calculators.load_calculator` runs the baseline itself and adds it. The errors
of ``b + correction`` against the labels equal those of the correction against the
residual targets, which is how training, validation and ``mlpot eval`` measure them.

Baseline labels are computed once per structure (progress bar) and cached in a file keyed
by the structure and the baseline spec, so a resumed run does not recompute them.

A ``module:factory`` baseline imports and runs code: a config naming one parses (the name is
checked, nothing is imported), and building it needs ``trust_code=True``
(:func:`mlpot.training.run.run_training`, ``mlpot train --trust-code``).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from pydantic import BaseModel, ConfigDict, model_validator
from tqdm.auto import tqdm

from mlpot.calculators.oracles import ORACLES, check_oracle_name, make_oracle
from mlpot.data.dataset import Sample
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import atomic_save
from mlpot.training import distributed

CACHE_FILE = "baseline_labels.pt"
_SAVE_EVERY_S = 30.0


class BaselineConfig(BaseModel):
    """The ``baseline:`` section of a train config.

    Args:
        name: oracle name (see :mod:`mlpot.calculators.oracles`).
        params: keyword arguments of that oracle.
        cache: file of cached baseline labels (default: ``OUTPUT/baseline_labels.pt``).
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = {}
    cache: str | None = None

    @model_validator(mode="after")
    def _buildable(self):
        # unknown name or bad params: a clear error now. Only a built-in oracle is built
        # (mlpot's own code); a module:factory name is checked, not imported: whether it
        # may run is decided when training starts (trust_code).
        if self.name in ORACLES:
            make_oracle(self.name, **self.params)
        else:
            check_oracle_name(self.name, trust_code=True)
        return self

    def spec(self) -> dict[str, Any]:
        """What the checkpoint stores: ``{"name", "params"}``."""
        return {"name": self.name, "params": dict(self.params)}


@dataclass(frozen=True)
class BaselineLabels:
    """What the baseline says about one structure: eV, eV/Å ``(N, 3)``, eV/Å³ ``(3, 3)``."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None


def structure_key(atoms: Atoms, spec: dict[str, Any]) -> str:
    """A hash of the structure (numbers, positions, cell, pbc) and the baseline spec."""
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(atoms.cell.array, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(atoms.pbc, dtype=bool).tobytes())
    return digest.hexdigest()


def baseline_labels(atoms: Atoms, calc, *, source: str = "structure", frame=None):
    """Energy, forces and (for 3D-periodic cells, when the baseline has it) stress."""
    atoms = atoms.copy()  # drops the labels' calculator; positions and cell are kept
    atoms.calc = calc
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(), dtype=np.float64)
        stress = None
        if atoms.pbc.all() and "stress" in calc.implemented_properties:
            from ase.stress import voigt_6_to_full_3x3_stress

            stress = voigt_6_to_full_3x3_stress(np.asarray(atoms.get_stress(), dtype=np.float64))
    except MlpotInputError:
        raise
    except Exception as err:  # any calculator failure, named by structure
        raise MlpotInputError(
            f"baseline calculation failed: {err.__class__.__name__}: {err}",
            source=source,
            frame=frame,
            field="baseline",
        ) from None
    return BaselineLabels(energy, forces, stress)


def _read_cache(path: Path | None) -> dict[str, dict[str, torch.Tensor]]:
    if path is None or not path.exists():
        return {}
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MlpotInputError(f"unreadable baseline cache: {err}", source=str(path)) from None
    if not isinstance(cache, dict) or not all(_valid_entry(v) for v in cache.values()):
        raise MlpotInputError(
            "not a baseline cache (entries of 'energy', 'forces' and optional 'stress' "
            "tensors); delete it to recompute the baseline labels",
            source=str(path),
        )
    return cache


def _valid_entry(entry: Any) -> bool:
    """A cache entry: a scalar energy, ``(N, 3)`` forces, optionally a ``(3, 3)`` stress."""
    if not isinstance(entry, dict) or set(entry) - {"energy", "forces", "stress"}:
        return False
    energy, forces, stress = entry.get("energy"), entry.get("forces"), entry.get("stress")
    return (
        isinstance(energy, torch.Tensor)
        and energy.numel() == 1
        and isinstance(forces, torch.Tensor)
        and forces.ndim == 2
        and forces.shape[1] == 3
        and (stress is None or (isinstance(stress, torch.Tensor) and stress.shape == (3, 3)))
    )


def compute_baseline(
    samples: list[Sample],
    spec: dict[str, Any],
    *,
    cache: str | Path | None = None,
    progress: bool = True,
    trust_code: bool = False,
) -> list[BaselineLabels]:
    """Baseline labels of every sample, from ``cache`` where it has them; new ones are
    added to the cache (written every 30 s and at the end, so a kill loses little; under
    torchrun by process 0 only). ``trust_code``: allow a ``module:factory`` baseline to run."""
    path = Path(cache) if cache is not None else None
    writes = path is not None and distributed.current().main
    if spec["name"] not in ORACLES:  # refused even when every label is in the cache
        check_oracle_name(spec["name"], trust_code=trust_code)
    stored = _read_cache(path)
    calc = None
    out, new, last_save = [], 0, time.monotonic()
    for sample in tqdm(
        samples, desc=f"baseline {spec['name']}", unit="structure", disable=not progress
    ):
        key = structure_key(sample.atoms, spec)
        if key not in stored:
            if calc is None:
                calc = make_oracle(spec["name"], trust_code=trust_code, **spec.get("params", {}))
            labels = baseline_labels(sample.atoms, calc, source=sample.source, frame=sample.frame)
            entry = {
                "energy": torch.tensor(labels.energy, dtype=torch.float64),
                "forces": torch.from_numpy(labels.forces),
            }
            if labels.stress is not None:
                entry["stress"] = torch.from_numpy(labels.stress)
            stored[key] = entry
            new += 1
            if writes and time.monotonic() - last_save > _SAVE_EVERY_S:
                atomic_save(stored, path)
                last_save = time.monotonic()
        entry = stored[key]
        if entry["forces"].shape[0] != len(sample.atoms):
            raise MlpotInputError(
                f"cached baseline forces of {entry['forces'].shape[0]} atoms for a structure "
                f"of {len(sample.atoms)}; delete the cache to recompute it",
                source=str(path),
                field="forces",
            )
        out.append(
            BaselineLabels(
                float(entry["energy"]),
                entry["forces"].numpy(),
                entry["stress"].numpy() if "stress" in entry else None,
            )
        )
    if writes and new:
        atomic_save(stored, path)
    return out


def subtract_baseline(samples: list[Sample], labels: list[BaselineLabels]) -> list[Sample]:
    """Samples whose labels are ``label - baseline``. A stress label is dropped (with a
    warning) where the baseline gives no stress: the correction cannot learn it then."""
    out, dropped = [], 0
    for sample, base in zip(samples, labels, strict=True):
        stress = None
        if sample.stress is not None:
            if base.stress is None:
                dropped += 1
            else:
                stress = sample.stress - base.stress
        out.append(
            replace(
                sample,
                energy=None if sample.energy is None else sample.energy - base.energy,
                forces=None if sample.forces is None else sample.forces - base.forces,
                stress=stress,
            )
        )
    if dropped:
        warnings.warn(
            f"the baseline gives no stress: {dropped} stress labels are not used",
            stacklevel=2,
        )
    return out


def delta_targets(
    samples: list[Sample],
    spec: dict[str, Any],
    *,
    cache: str | Path | None = None,
    progress: bool = True,
    trust_code: bool = False,
) -> list[Sample]:
    """``samples`` with ``label - baseline`` targets (see :func:`compute_baseline`)."""
    if not samples:
        return []
    labels = compute_baseline(samples, spec, cache=cache, progress=progress, trust_code=trust_code)
    return subtract_baseline(samples, labels)


def delta_splits(
    splits: tuple[list[Sample], ...],
    spec: dict[str, Any],
    *,
    cache: str | Path | None,
    progress: bool = True,
    trust_code: bool = False,
) -> tuple[list[Sample], ...]:
    """:func:`delta_targets` of several sample lists with one progress bar and cache."""
    flat = [s for part in splits for s in part]
    converted = delta_targets(flat, spec, cache=cache, progress=progress, trust_code=trust_code)
    out, start = [], 0
    for part in splits:
        out.append(converted[start : start + len(part)])
        start += len(part)
    return tuple(out)
