"""Multi-state (diabatic) models: adiabatic energies, forces on every state and
nonadiabatic coupling vectors, training on adiabatic labels, and saving.

A :class:`~mlpot.models.diabatic.DiabaticModel` gives each structure a symmetric diabatic
matrix ``H (n, n)`` eV. Here it becomes

* **adiabatic energies** ``E_0 ≤ … ≤ E_{n-1}``, the eigenvalues of ``H`` (eV);
* **forces on state n**, ``F_n = -∇E_n = -⟨ψ_n|∇H|ψ_n⟩`` (eV/Å; Hellmann–Feynman, exact
  for the eigenvalue of a symmetric matrix);
* **nonadiabatic coupling vectors** ``d_mn = ⟨ψ_m|∇ψ_n⟩ = ⟨ψ_m|∇H|ψ_n⟩ / (E_n - E_m)``
  (1/Å; from differentiating ``H ψ_n = E_n ψ_n`` and projecting on ``ψ_m``), antisymmetric,
  and the numerators ``h_mn = ⟨ψ_m|∇H|ψ_n⟩`` (eV/Å, smooth, finite at a degeneracy).

``∇H_kl`` comes from autograd (one backward pass per independent element), and is
contracted with the eigenvectors ``ψ_n`` (the columns of ``U``, ``H = U diag(E) Uᵀ``).

**Phase (sign) convention.** An adiabatic state is defined up to its sign, and ``d_mn``
flips with ``ψ_m`` or ``ψ_n``. Here each ``ψ_n`` is chosen with ``U_nn = ⟨n|ψ_n⟩ ≥ 0``:
adiabatic state ``n`` overlaps positively with diabatic state ``n``. For two states this is
smooth through an avoided crossing (where the rule "largest component positive" would jump
at the crossing itself): ``U`` is the rotation by the mixing angle
``θ = -½ atan2(2 H_01, H_11 - H_00) ∈ (-π/2, π/2)`` and ``d_01 = -∇θ``. The sign of the
learned coupling ``H_01`` is not fixed by adiabatic data, so the overall sign of a learned
``d_mn`` relative to another program's is arbitrary (but the same along a smooth path).

**What adiabatic labels determine.** Any position-dependent rotation ``O(x) H O(x)ᵀ`` has
the same eigenvalues and the same forces but couplings that differ by ``Oᵀ∇O``: adiabatic
energies and forces alone do not determine the coupling vectors (only, between asymptotic
regions where the coupling vanishes, their integral across a crossing, ``π/2`` for two
states). Training therefore also takes coupling labels when they exist (``nac_m_n``). On
the known-answer test (``bench/diabatic.py``, 40 structures, 4 seeds; exact peak 2.67 /Å):

* labels of consistent sign (``nac_phase="global"``, e.g. phase-tracked along a scan or a
  trajectory with :func:`align_nac_phases`): the whole coupling profile, max error
  0.02–0.08 /Å, peak within 0.005 Å and 3 %;
* a random sign per structure, as quantum chemistry gives them (``"structure"``, compared
  up to sign): the peak (within 0.035 Å, 3–17 % low) but not the sign of the tails, which
  flips (max error 1.1–1.7 /Å);
* energies and forces only: adiabats within 2–3 meV, but couplings that are the model's
  smoothness prior, not a prediction (peak 19–40 % low, once at the wrong place).

**Labels** (ASE ``Atoms`` of an extxyz file): ``info["adiabatic_energies"] (n,)`` eV,
ascending; optionally ``arrays["adiabatic_forces"] (N, 3n)`` eV/Å (state ``n`` in columns
``3n..3n+2``) and ``arrays["nac_m_n"] (N, 3)`` 1/Å for ``m < n`` (any sign).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from mlpot.data.graph import BATCH, POSITIONS, Graph, atoms_to_graph, collate, graph_to
from mlpot.errors import MlpotInputError
from mlpot.models.base import model_device, model_dtype
from mlpot.models.checkpoint import atomic_save, package_version, read_model_file, torch_dtype
from mlpot.models.diabatic import DiabaticModel, build_diabatic_model

#: ``atoms.info`` key of the adiabatic energies ``(n,)`` eV, ascending.
ENERGIES = "adiabatic_energies"
#: ``atoms.arrays`` key of the forces on every state ``(N, 3n)`` eV/Å.
FORCES = "adiabatic_forces"
#: File format name of a saved diabatic model.
FORMAT = "mlpot-diabatic"
FORMAT_VERSION = 1
#: How the signs of coupling-vector labels relate (see
#: :func:`mlpot.apps.diabatic_training.fit_diabatic`).
NAC_PHASES = ("structure", "global")


def nac_key(m: int, n: int) -> str:
    """``atoms.arrays`` key of the coupling vector label ``d_mn (N, 3)`` 1/Å, ``m < n``."""
    return f"nac_{m}_{n}"


# -- adiabatic states and their derivatives ---------------------------------------------------


@dataclass(frozen=True)
class AdiabaticPrediction:
    """Adiabatic quantities of the structures of a graph (``S`` structures, ``N`` atoms,
    ``n`` states).

    Attributes:
        energies: adiabatic energies ``(S, n)`` eV, ascending.
        diabatic: the diabatic matrices ``(S, n, n)`` eV.
        vectors: ``U (S, n, n)``: column ``n`` is adiabatic state ``n`` in the diabatic
            basis, with ``U_nn ≥ 0`` (the phase convention of the module docstring).
        forces: forces on every state ``(n, N, 3)`` eV/Å, or None.
        couplings: ``h_mn = ⟨ψ_m|∇H|ψ_n⟩ (n, n, N, 3)`` eV/Å (symmetric; ``h_nn = -F_n``),
            or None.
        nac: nonadiabatic coupling vectors ``d_mn (n, n, N, 3)`` 1/Å (antisymmetric, zero
            diagonal; ``inf`` where states are degenerate and that was allowed), or None.
        degenerate: ``(S, n, n)`` True where ``|E_n - E_m|`` is below the threshold
            (``m ≠ n``), or None.
    """

    energies: torch.Tensor
    diabatic: torch.Tensor
    vectors: torch.Tensor
    forces: torch.Tensor | None = None
    couplings: torch.Tensor | None = None
    nac: torch.Tensor | None = None
    degenerate: torch.Tensor | None = None


def adiabatic_states(hamiltonian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues ``(S, n)`` eV, ascending, and eigenvectors ``U (S, n, n)`` (columns) of
    symmetric matrices ``(S, n, n)``, each column's sign chosen so that ``U_nn ≥ 0``."""
    energies, vectors = torch.linalg.eigh(hamiltonian)
    diagonal = torch.diagonal(vectors, dim1=-2, dim2=-1)  # (S, n)
    sign = torch.where(diagonal < 0, -1.0, 1.0).to(vectors.dtype)  # (S, n)
    return energies, vectors * sign[:, None, :]


def hamiltonian_gradients(
    hamiltonian: torch.Tensor, positions: torch.Tensor, *, create_graph: bool = False
) -> torch.Tensor:
    """``∂H_kl/∂x_a (n, n, N, 3)`` eV/Å for matrices ``(S, n, n)`` computed from
    ``positions (N, 3)`` (structures independent: each atom's row is the derivative of its
    own structure's matrix), one backward pass per element ``k ≤ l``."""
    n = hamiltonian.shape[-1]
    grads = [[None] * n for _ in range(n)]
    for k in range(n):
        for m in range(k, n):
            (grad,) = torch.autograd.grad(
                hamiltonian[:, k, m].sum(),
                positions,
                retain_graph=True,
                create_graph=create_graph,
                allow_unused=True,
            )
            grad = torch.zeros_like(positions) if grad is None else grad
            grads[k][m] = grads[m][k] = grad
    return torch.stack([torch.stack(row) for row in grads])  # (n, n, N, 3)


def _couplings(vectors: torch.Tensor, gradients: torch.Tensor, batch: torch.Tensor):
    """``h_mn(a) = Σ_kl U_km ∂H_kl/∂x_a U_ln``, ``(n, n, N, 3)`` eV/Å."""
    per_atom = vectors[batch]  # (N, n, n)
    return torch.einsum("akm,klad,aln->mnad", per_atom, gradients, per_atom)


def _nac(
    energies: torch.Tensor,
    couplings: torch.Tensor,
    batch: torch.Tensor,
    min_gap: float,
    allow_degenerate: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``d_mn = h_mn / (E_n - E_m)`` ``(n, n, N, 3)`` 1/Å and the degenerate pairs
    ``(S, n, n)``; a degeneracy is an error unless allowed (then ``d_mn = inf``)."""
    n = energies.shape[1]
    gap = energies[:, None, :] - energies[:, :, None]  # (S, m, n): E_n - E_m
    off = ~torch.eye(n, dtype=torch.bool, device=energies.device)
    degenerate = (gap.abs() < min_gap) & off  # (S, n, n)
    if bool(degenerate.any()) and not allow_degenerate:
        s, m, k = (int(v) for v in torch.nonzero(degenerate)[0])
        raise MlpotInputError(
            f"states {m} and {k} are degenerate (|E_{k} - E_{m}| = {float(gap[s, m, k].abs()):.3g}"
            f" eV < {min_gap:g} eV): their coupling vector is singular; ask for the "
            "couplings h_mn instead, or allow_degenerate=True (inf there)",
            frame=s,
            field="nac",
        )
    safe = torch.where(degenerate | ~off, torch.ones_like(gap), gap)  # (S, n, n)
    per_atom = safe[batch].permute(1, 2, 0)[..., None]  # (n, n, N, 1)
    nac = torch.where(off[:, :, None, None], couplings / per_atom, torch.zeros_like(couplings))
    flagged = degenerate[batch].permute(1, 2, 0)[..., None]  # (n, n, N, 1)
    return torch.where(flagged, torch.full_like(nac, math.inf), nac), degenerate


def predict_adiabatic(
    model: Callable[[Graph], torch.Tensor],
    graph: Graph,
    *,
    forces: bool = True,
    nac: bool = True,
    min_gap: float = 1e-6,
    allow_degenerate: bool = False,
    create_graph: bool = False,
) -> AdiabaticPrediction:
    """Adiabatic energies and, on request, forces on every state and coupling vectors.

    Args:
        model: any ``graph -> H (S, n, n)`` eV differentiable in the positions (a
            :class:`~mlpot.models.diabatic.DiabaticModel`).
        graph: one or more structures.
        forces: compute ``F_n`` (eV/Å).
        nac: compute ``d_mn`` (1/Å). The couplings ``h_mn`` (eV/Å) come with either.
        min_gap: gap (eV) below which two states count as degenerate.
        allow_degenerate: put ``inf`` in ``d_mn`` of degenerate pairs instead of raising
            :class:`MlpotInputError` (which names the structure and the states).
        create_graph: keep the derivatives differentiable (training on them).
    """
    graph = dict(graph)
    derivatives = forces or nac
    if derivatives:
        graph[POSITIONS] = graph[POSITIONS].detach().requires_grad_(True)
    with torch.enable_grad() if derivatives or create_graph else torch.no_grad():
        hamiltonian = model(graph)  # (S, n, n)
        energies, vectors = adiabatic_states(hamiltonian)  # (S, n), (S, n, n)
        if not derivatives:
            return AdiabaticPrediction(energies, hamiltonian, vectors)  # differentiable
        gradients = hamiltonian_gradients(
            hamiltonian, graph[POSITIONS], create_graph=create_graph
        )  # (n, n, N, 3)
        couplings = _couplings(vectors, gradients, graph[BATCH])  # (n, n, N, 3)
    state_forces = -torch.diagonal(couplings, dim1=0, dim2=1).permute(2, 0, 1)  # (n, N, 3)
    if not create_graph:
        energies, hamiltonian, vectors = energies.detach(), hamiltonian.detach(), vectors.detach()
        state_forces, couplings = state_forces.detach(), couplings.detach()
    result = AdiabaticPrediction(
        energies, hamiltonian, vectors, forces=state_forces if forces else None, couplings=couplings
    )
    if not nac:
        return result
    vectors_nac, degenerate = _nac(energies, couplings, graph[BATCH], min_gap, allow_degenerate)
    return dataclasses.replace(result, nac=vectors_nac, degenerate=degenerate)


def evaluate(
    model: DiabaticModel,
    structures: Atoms | list[Atoms],
    *,
    forces: bool = True,
    nac: bool = True,
    min_gap: float = 1e-6,
    allow_degenerate: bool = False,
) -> AdiabaticPrediction:
    """:func:`predict_adiabatic` on ASE structures (one, or a list evaluated as one batch):
    energies eV, forces eV/Å, coupling vectors 1/Å (on the model's device)."""
    frames = [structures] if isinstance(structures, Atoms) else list(structures)
    graph = collate([structure_graph(model, atoms, k) for k, atoms in enumerate(frames)])
    graph = graph_to(graph, model_device(model))
    return predict_adiabatic(
        model, graph, forces=forces, nac=nac, min_gap=min_gap, allow_degenerate=allow_degenerate
    )


def structure_graph(
    model: DiabaticModel, atoms: Atoms, frame: int, source: str = "structures"
) -> Graph:
    return atoms_to_graph(
        atoms,
        model.cutoff,
        dtype=model_dtype(model),
        elements=model.elements,
        source=source,
        frame=frame,
    )


# -- labels -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateLabels:
    """Adiabatic labels of one structure.

    Attributes:
        energies: ``(n,)`` eV, ascending.
        forces: ``(n, N, 3)`` eV/Å, or None.
        nac: ``{(m, n): d_mn (N, 3)}`` 1/Å for the pairs ``m < n`` that have labels.
    """

    energies: np.ndarray
    forces: np.ndarray | None
    nac: dict[tuple[int, int], np.ndarray]


def _finite(values: Any, shape: tuple[int, ...], what: str, frame: int, source: str):
    array = np.asarray(values, dtype=np.float64)
    if array.shape != shape:
        raise MlpotInputError(
            f"expected shape {shape} for {what}, got {array.shape}",
            source=source,
            frame=frame,
            field=what.split()[0],
        )
    if not np.all(np.isfinite(array)):
        raise MlpotInputError("contains NaN or inf", source=source, frame=frame, field=what)
    return array


def read_labels(atoms: Atoms, n_states: int, *, frame: int, source: str = "data") -> StateLabels:
    """The adiabatic labels of ``atoms`` (module docstring), checked: a missing or
    misshapen field, the wrong number of states, non-finite values or energies not in
    ascending order raise :class:`MlpotInputError` naming the frame and the field."""
    if ENERGIES not in atoms.info:
        raise MlpotInputError(
            "missing adiabatic energies", source=source, frame=frame, field=ENERGIES
        )
    energies = np.atleast_1d(np.asarray(atoms.info[ENERGIES], dtype=np.float64))
    if energies.shape != (n_states,):
        raise MlpotInputError(
            f"expected {n_states} adiabatic energies (one per state), got {energies.size}",
            source=source,
            frame=frame,
            field=ENERGIES,
        )
    energies = _finite(energies, (n_states,), ENERGIES, frame, source)
    if np.any(np.diff(energies) < 0):
        raise MlpotInputError(
            f"adiabatic energies must be ascending (state 0 lowest), got {energies.tolist()}",
            source=source,
            frame=frame,
            field=ENERGIES,
        )
    n_atoms = len(atoms)
    forces = None
    if FORCES in atoms.arrays:
        flat = _finite(atoms.arrays[FORCES], (n_atoms, 3 * n_states), FORCES, frame, source)
        forces = flat.reshape(n_atoms, n_states, 3).transpose(1, 0, 2)  # (n, N, 3)
    nac = {}
    for m in range(n_states):
        for n in range(m + 1, n_states):
            if nac_key(m, n) in atoms.arrays:
                key = nac_key(m, n)
                nac[(m, n)] = _finite(atoms.arrays[key], (n_atoms, 3), key, frame, source)
    return StateLabels(energies, forces, nac)


def align_nac_phases(frames: list[Atoms], n_states: int) -> list[Atoms]:
    """Copies of ``frames``, an ordered path (a scan or a trajectory, same atoms in the same
    order), with the coupling labels' signs tracked by continuity: ``d_mn`` of each frame
    is flipped where its overlap ``Σ_a d_mn(a) · d_mn'(a)`` with the last earlier frame
    that has it is negative. Then train with ``nac_phase="global"``. Consecutive frames
    must be close in Cartesian coordinates (no re-orientation between them) and the steps
    small next to the coupling's changes (a true sign change of ``d_mn`` between two frames
    goes unnoticed)."""
    out = [atoms.copy() for atoms in frames]
    for m in range(n_states):
        for n in range(m + 1, n_states):
            key, previous = nac_key(m, n), None
            for k, atoms in enumerate(out):
                if key not in atoms.arrays:
                    continue
                vectors = np.asarray(atoms.arrays[key], dtype=np.float64)
                if previous is not None and previous.shape != vectors.shape:
                    raise MlpotInputError(
                        f"{len(vectors)} atoms after {len(previous)}: phases are tracked along "
                        "a path of one structure",
                        source="frames",
                        frame=k,
                        field=key,
                    )
                if previous is not None and float(np.sum(previous * vectors)) < 0:
                    vectors = -vectors
                    atoms.arrays[key] = vectors
                previous = vectors
    return out


# -- saving and loading -----------------------------------------------------------------------


def save_diabatic(path: str | Path, model: DiabaticModel, *, training: dict | None = None) -> None:
    """Write ``model`` as plain tensors and dicts (format ``mlpot-diabatic``): its config
    (the body as a registry spec), weights, dtype, units and ``training`` metadata."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlpot_version": package_version(),
        "config": model.config(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "dtype": str(model_dtype(model)).removeprefix("torch."),
        "units": {"energy": "eV", "length": "Å", "forces": "eV/Å", "nac": "1/Å"},
        "training": training or {},
    }
    atomic_save(payload, path)


def load_diabatic(
    path: str | Path, *, dtype: torch.dtype | str | None = None, device: str = "cpu"
) -> DiabaticModel:
    """Rebuild a model written by :func:`save_diabatic`, on ``device``, in evaluation mode.
    The file is read with ``torch.load(weights_only=True)``: nothing in it is imported or
    run; the body is rebuilt from the registry."""
    source = str(path)
    payload = read_model_file(path, FORMAT, "diabatic model")
    if payload.get("format_version") != FORMAT_VERSION:
        raise MlpotInputError(
            f"unsupported format version {payload.get('format_version')!r} "
            f"(this mlpot reads {FORMAT_VERSION})",
            source=source,
            field="format_version",
        )
    config = payload.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("body"), dict):
        raise MlpotInputError("must be a dict with a 'body' spec", source=source, field="config")
    try:
        model = build_diabatic_model(config)
    except (MlpotInputError, ValueError, TypeError) as err:
        raise MlpotInputError(str(err), source=source, field="config") from None
    model = model.to(torch_dtype(payload.get("dtype", "float64"), source=source))
    try:
        model.load_state_dict(payload.get("state_dict"))
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise MlpotInputError(
            f"weights do not fit the model config: {err}", source=source, field="state_dict"
        ) from None
    if dtype is not None:
        model = model.to(torch_dtype(dtype, field="dtype"))
    return model.to(device).eval()
