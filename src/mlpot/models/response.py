"""Learned response properties of molecules: the dipole moment and the polarisability.

**Dipole** (:class:`DipoleModel`): ``μ = Σ_i q_i r_i + Σ_i μ_i`` (e·Å, ASE's unit), per
structure, with

* ``q_i``: a read-out of the body's invariant per-atom features ``h_i`` (the last
  message-passing layer of an ``mpnn``), shifted equally within each structure so that the
  charges add up to the structure's total charge (``TOTAL_CHARGE`` in the graph; neutral
  when absent). For a neutral structure the dipole then does not depend on the origin; for
  a charged one it is taken about the coordinate origin, as the oracles (xTB, PySCF)
  report it.
* ``μ_i = Σ_j c_ij r_ij``: atomic dipoles along the edges, ``c_ij = Σ_k A_k(h_i) B_k(h_j)
  R_k(r_ij)`` with a Bessel radial basis that vanishes smoothly at the cutoff.

**Polarisability** (:class:`PolarizabilityModel`): ``α = Σ_i a_i I + Σ_ij c_ij (u_ij
u_ijᵀ − I/3)`` (e·Å²/V, ASE's unit; ``u_ij`` the unit edge vector), the isotropic part from
per-atom read-outs, the anisotropic (traceless) part from edge weights as above. Symmetric
by construction; rotating the structure by ``R`` turns it into ``R α Rᵀ``.

Both are invariant under translations of a neutral molecule. A periodic cell's dipole is
defined only modulo the polarisation quantum (the branch of the Berry phase): these models
are for molecules and clusters, and :func:`response_graph` refuses periodic cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms

from mlpot.data.graph import (
    BATCH,
    EDGE_INDEX,
    N_ATOMS,
    POSITIONS,
    Graph,
    atoms_to_graph,
    edge_vectors,
)
from mlpot.errors import MlpotInputError
from mlpot.models.base import EnergyModel, model_spec
from mlpot.nn.mlp import mlp
from mlpot.nn.radial import bessel_basis, polynomial_envelope

#: Graph key of each structure's total charge ``(S,)`` in e (optional; neutral when absent).
TOTAL_CHARGE = "total_charge"
#: Graph key of the dipole label ``(S, 3)`` e·Å.
DIPOLE = "dipole"
#: Graph key of the polarisability label ``(S, 3, 3)`` e·Å²/V.
POLARIZABILITY = "polarizability"
#: The label of each model kind: graph key and shape per structure.
LABELS = {"dipole": (DIPOLE, (3,)), "polarizability": (POLARIZABILITY, (3, 3))}

#: A response model's ``mpnn`` body keeps one channel mixing for all atoms: per-element
#: mixing (the energy model's default) was measured on energies only, and with it a learned
#: water dipole put the weaker IR band's relative intensity 23 % off the oracle's
#: (tests/test_dipole_ir.py allows 20 %).
BODY_DEFAULTS = {"element_mixing": False}


def body_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A response model's body spec with :data:`BODY_DEFAULTS` under it (for an mpnn)."""
    return {**BODY_DEFAULTS, **spec} if spec.get("name") == "mpnn" else spec


def _edge_basis(graph: Graph, cutoff: float, n_basis: int):
    """Centres, neighbours, edge vectors ``(E, 3)`` and smooth radial functions ``(E, K)``."""
    centre, neighbour = graph[EDGE_INDEX]
    vectors = edge_vectors(graph)  # (E, 3)
    r = torch.linalg.vector_norm(vectors, dim=-1)  # (E,)
    radial = bessel_basis(r, cutoff, n_basis) * polynomial_envelope(r, cutoff)[:, None]
    return centre, neighbour, vectors, radial


class DipoleModel(torch.nn.Module):
    """Dipole moment ``(S, 3)`` e·Å of the structures of a graph (module docstring).

    Args:
        body: a model with per-atom invariant features (``n_features > 0``, e.g. ``mpnn``);
            its energy read-out is not used.
        hidden: width of the charge and pair read-outs.
        radial_basis: number ``K`` of radial functions of the atomic dipoles (0: charges
            only). Against GFN2-xTB the largest error of the strong harmonic IR intensities
            was 16 % / 12 % (with atomic dipoles / charges only) for water, 9 % / 16 % for
            methanol, 12 % / 32 % for ethanol, 19 % / 17 % for aspirin (README "Spectra"):
            only with atomic dipoles is every molecule within the 20 % target, so they are
            the default.
    """

    kind = "dipole"

    def __init__(self, body: EnergyModel, hidden: int = 32, radial_basis: int = 8) -> None:
        super().__init__()
        if body.n_features == 0:
            raise ValueError(f"the body {body.name!r} has no per-atom features (mpnn has)")
        self.body = body
        self.cutoff = body.cutoff
        self.elements = body.elements
        self._config = {"hidden": int(hidden), "radial_basis": int(radial_basis)}
        width = body.n_features
        self.charge = mlp(width, [hidden], 1)
        self.radial_basis = int(radial_basis)
        if self.radial_basis:
            self.pair_centre = mlp(width, [hidden], self.radial_basis)
            self.pair_neighbour = mlp(width, [hidden], self.radial_basis)

    def config(self) -> dict[str, Any]:
        """The spec that rebuilds this model (without weights): the body's spec and the
        read-out sizes."""
        return {"body": model_spec(self.body), **self._config}

    def charges(self, graph: Graph, features: torch.Tensor | None = None) -> torch.Tensor:
        """Per-atom charges ``(N,)`` e, adding up to each structure's total charge."""
        h = self.body.features(graph) if features is None else features
        raw = self.charge(h).squeeze(-1)  # (N,)
        n_atoms = graph[N_ATOMS].to(raw.dtype)
        total = raw.new_zeros(n_atoms.shape[0]).index_add(0, graph[BATCH], raw)  # (S,)
        target = graph.get(TOTAL_CHARGE)
        target = raw.new_zeros(n_atoms.shape[0]) if target is None else target.to(raw.dtype)
        return raw + ((target - total) / n_atoms)[graph[BATCH]]

    def forward(self, graph: Graph) -> torch.Tensor:
        h = self.body.features(graph)  # (N, C)
        q = self.charges(graph, h)  # (N,)
        per_atom = q[:, None] * graph[POSITIONS]  # (N, 3)
        if self.radial_basis:
            centre, neighbour, vectors, radial = _edge_basis(
                graph, self.cutoff, self.radial_basis
            )  # (E,), (E,), (E, 3), (E, K)
            a, b = self.pair_centre(h), self.pair_neighbour(h)  # (N, K)
            weight = (a[centre] * b[neighbour] * radial).sum(-1)  # (E,)
            per_atom = per_atom.index_add(0, centre, weight[:, None] * vectors)  # (N, 3)
        out = per_atom.new_zeros(graph[N_ATOMS].shape[0], 3)
        return out.index_add(0, graph[BATCH], per_atom)  # (S, 3)


class PolarizabilityModel(torch.nn.Module):
    """Polarisability ``(S, 3, 3)`` e·Å²/V of the structures of a graph (module docstring).

    Args:
        body: a model with per-atom invariant features (``n_features > 0``, e.g. ``mpnn``).
        hidden: width of the read-outs.
        radial_basis: number ``K`` of radial functions of the anisotropic edge terms.
    """

    kind = "polarizability"

    def __init__(self, body: EnergyModel, hidden: int = 32, radial_basis: int = 8) -> None:
        super().__init__()
        if body.n_features == 0:
            raise ValueError(f"the body {body.name!r} has no per-atom features (mpnn has)")
        if radial_basis < 1:
            raise ValueError("the anisotropic part needs radial_basis >= 1")
        self.body = body
        self.cutoff = body.cutoff
        self.elements = body.elements
        self._config = {"hidden": int(hidden), "radial_basis": int(radial_basis)}
        width = body.n_features
        self.isotropic = mlp(width, [hidden], 1)
        self.radial_basis = int(radial_basis)
        self.pair_centre = mlp(width, [hidden], self.radial_basis)
        self.pair_neighbour = mlp(width, [hidden], self.radial_basis)

    def config(self) -> dict[str, Any]:
        return {"body": model_spec(self.body), **self._config}

    def forward(self, graph: Graph) -> torch.Tensor:
        h = self.body.features(graph)  # (N, C)
        n_structures = graph[N_ATOMS].shape[0]
        eye = torch.eye(3, dtype=h.dtype, device=h.device)
        iso = self.isotropic(h).squeeze(-1)  # (N,)
        out = iso.new_zeros(n_structures).index_add(0, graph[BATCH], iso)[:, None, None] * eye
        centre, neighbour, vectors, radial = _edge_basis(graph, self.cutoff, self.radial_basis)
        a, b = self.pair_centre(h), self.pair_neighbour(h)  # (N, K)
        weight = (a[centre] * b[neighbour] * radial).sum(-1)  # (E,)
        unit = vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)  # (E, 3)
        traceless = unit[:, :, None] * unit[:, None, :] - eye / 3.0  # (E, 3, 3)
        per_edge = weight[:, None, None] * traceless  # (E, 3, 3)
        structure = graph[BATCH][centre]  # (E,)
        return out.index_add(0, structure, per_edge)  # (S, 3, 3)


ResponseModel = DipoleModel | PolarizabilityModel  # one model (ensembles: ResponseEnsemble)


def response_label(
    atoms: Atoms, kind: str, *, source: str = "structures", frame: int | None = None
) -> np.ndarray:
    """A structure's label of ``kind`` (``dipole`` ``(3,)`` e·Å or ``polarizability``
    ``(3, 3)`` e·Å²/V) from its calculator results or ``atoms.info``, or a clear error."""
    _, shape = LABELS[kind]
    value = None
    if atoms.calc is not None and kind in getattr(atoms.calc, "results", {}):
        value = atoms.calc.results[kind]
    elif kind in atoms.info:
        value = atoms.info[kind]
    if value is None:
        raise MlpotInputError(
            f"no {kind} label (calculator result or info {kind!r})",
            source=source,
            frame=frame,
            field=kind,
        )
    value = np.asarray(value, dtype=np.float64)
    if value.size != int(np.prod(shape)) or not np.all(np.isfinite(value)):
        raise MlpotInputError(
            f"must be {int(np.prod(shape))} finite numbers, got {value.reshape(-1).tolist()}",
            source=source,
            frame=frame,
            field=kind,
        )
    return value.reshape(shape)


def response_graph(
    atoms: Atoms,
    model: ResponseModel,
    *,
    dtype: torch.dtype = torch.float64,
    labelled: bool = True,
    source: str = "structures",
    frame: int | None = None,
) -> Graph:
    """The graph of a molecule or cluster for ``model``, with its total charge (and its
    label when ``labelled``). A periodic cell is refused (module docstring)."""
    if atoms.pbc.any():
        raise MlpotInputError(
            "a periodic cell's dipole is defined only modulo the polarisation quantum; "
            "response models take molecules and clusters",
            source=source,
            frame=frame,
            field="pbc",
        )
    graph = atoms_to_graph(
        atoms, model.cutoff, dtype=dtype, elements=model.elements, source=source, frame=frame
    )
    graph[TOTAL_CHARGE] = torch.tensor([float(atoms.info.get("charge", 0.0))], dtype=dtype)
    if labelled:
        key, _ = LABELS[model.kind]
        label = response_label(atoms, model.kind, source=source, frame=frame)
        graph[key] = torch.as_tensor(label, dtype=dtype)[None]
    return graph


class ResponseEnsemble(torch.nn.Module):
    """Several response models of one kind (e.g. trained from different seeds): their mean,
    and their spread times a calibrated ``scale`` (the factor that makes the members'
    standard deviation the predictive one on validation data; 1 before calibration).

    Args:
        members: the response models (the same kind).
        scale: calibration factor of the members' standard deviation.
    """

    def __init__(self, members: list[DipoleModel | PolarizabilityModel], scale: float = 1.0):
        super().__init__()
        kinds = {m.kind for m in members}
        if len(members) < 2 or len(kinds) != 1:
            raise ValueError("an ensemble needs at least 2 response models of one kind")
        self.members = torch.nn.ModuleList(members)
        self.kind = kinds.pop()
        self.cutoff = max(m.cutoff for m in members)
        self.elements = members[0].elements
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))

    def member_outputs(self, graph: Graph) -> torch.Tensor:
        """Every member's response ``(K, S, ...)``."""
        return torch.stack([member(graph) for member in self.members])

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.member_outputs(graph).mean(0)
