"""A diabatic multi-state model: a small symmetric Hamiltonian matrix per structure.

For ``n`` electronic states the model predicts, per structure, the diabatic matrix

    H_kl = Σ_i ( s · h_{Z_i, kl}(f_i) + δ_kl c_{Z_i, k} ),   k ≤ l,   H_lk = H_kl   (eV)

from per-atom contributions: ``f_i (F,)`` are the invariant per-atom features of a body
model (a ``bpnn`` or ``mpnn``; its energy read-out is not used), ``h_Z`` is one small
network per element with ``n (n + 1) / 2`` outputs (the upper triangle), ``s`` an energy
scale and ``c_{Z, k}`` per-element, per-state offsets of the diagonal, both set from the
training labels by :meth:`DiabaticModel.fit_statistics`. Being a sum over atoms, ``H`` is
local and extensive like an energy; its adiabatic energies are its eigenvalues
(:mod:`mlpot.apps.diabatic` turns it into adiabatic energies, forces and nonadiabatic
couplings).

Training starts from the per-state offsets: diabat ``k`` at state ``k``'s mean energy, so
the diabats start apart and ordered like the adiabats, and the heads' small initial output
weights (:data:`INITIAL_HEAD_SCALE`) start them nearly uncoupled. (With one offset shared by
all states, 1 of 3 seeds of the known-answer test of ``tests/test_diabatic.py`` got stuck
with a spurious crossing of the learned diabats; per-state offsets: none of 8.)

**Symmetry and the sign convention.** Every element ``H_kl``, couplings included, is a
proper invariant: unchanged by translations, rotations, reflections and permutations of
like atoms. That is the gauge in which the diabatic states transform trivially (the
same phase everywhere). The eigenvalues of a 2 x 2 matrix depend only on ``|H_01|``, so an
invariant scalar coupling loses nothing there; diabatic states whose coupling changes sign
under a reflection (states of different symmetry, whose coupling is a pseudoscalar) are not
represented. Derivatives ``∂H_kl/∂x_a`` are then rotation-equivariant vectors, and so are
forces and coupling vectors built from them.
"""

from __future__ import annotations

from typing import Any

import torch

from mlpot.data.graph import BATCH, N_ATOMS, NUMBERS, Graph
from mlpot.models.base import EnergyModel, model_spec
from mlpot.nn.mlp import mlp
from mlpot.nn.species import SpeciesIndex

#: Factor on the heads' initial output weights: training starts close to uncoupled diabats
#: at the per-state offsets (no spurious crossings), but not exactly at them (where the
#: couplings would get no gradient).
INITIAL_HEAD_SCALE = 0.1


def pair_layout(n_states: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``P = n (n + 1) / 2`` elements ``k ≤ l`` of the upper triangle in row-major
    order, ``(2, P)`` (rows, columns), and the pair index of every matrix element,
    ``(n, n)`` (symmetric)."""
    rows, cols = torch.triu_indices(n_states, n_states)  # (P,), (P,)
    table = torch.empty(n_states, n_states, dtype=torch.long)
    table[rows, cols] = torch.arange(len(rows))
    table[cols, rows] = torch.arange(len(rows))
    return torch.stack([rows, cols]), table


class DiabaticModel(torch.nn.Module):
    """Diabatic Hamiltonian ``H (S, n, n)`` eV of the structures of a graph (see module
    docstring).

    Args:
        body: a model with per-atom invariant features (``n_features > 0``: ``bpnn``,
            ``mpnn``); only its features are used.
        n_states: number ``n`` of electronic states (at least 2).
        hidden: widths of the hidden layers of each element's head network.
        activation: ``silu``, ``tanh`` or ``softplus``.
    """

    def __init__(
        self,
        body: EnergyModel,
        n_states: int = 2,
        hidden: list[int] = (32, 32),
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if body.n_features == 0:
            raise ValueError(f"the body {body.name!r} has no per-atom features (bpnn, mpnn have)")
        if int(n_states) < 2:
            raise ValueError(f"a diabatic model needs at least 2 states, got {n_states}")
        self.body = body
        self.cutoff = body.cutoff
        self.elements = body.elements
        self.n_states = int(n_states)
        self._config = {
            "n_states": self.n_states,
            "hidden": [int(h) for h in hidden],
            "activation": activation,
        }
        pairs, table = pair_layout(self.n_states)
        self.register_buffer("pairs", pairs, persistent=False)  # (2, P)
        self.register_buffer("pair_table", table, persistent=False)  # (n, n)
        self.register_buffer(
            "diagonal", (pairs[0] == pairs[1]).to(torch.float64), persistent=False
        )  # (P,)
        self.species = SpeciesIndex(self.elements)
        self.heads = torch.nn.ModuleList(
            mlp(body.n_features, list(hidden), pairs.shape[1], activation) for _ in self.elements
        )
        with torch.no_grad():  # start near the diagonal offsets (set from the data)
            for head in self.heads:
                head[-1].weight.mul_(INITIAL_HEAD_SCALE)
                head[-1].bias.zero_()
        self.register_buffer("state_shift", torch.zeros(len(self.elements), self.n_states))
        self.register_buffer("energy_scale", torch.tensor(1.0))  # eV

    @property
    def n_pairs(self) -> int:
        """Number ``P = n (n + 1) / 2`` of independent matrix elements."""
        return self.pairs.shape[1]

    def config(self) -> dict[str, Any]:
        """The spec that rebuilds this model (without weights): the body's registry spec,
        the number of states and the head sizes."""
        return {"body": model_spec(self.body), **self._config}

    def contributions(self, graph: Graph) -> torch.Tensor:
        """Per-atom contributions ``(N, P)`` eV to the upper triangle of ``H``, in the
        order of :func:`pair_layout`."""
        features = self.body.features(graph)  # (N, F)
        species = self.species(graph[NUMBERS])  # (N,)
        out = features.new_zeros(features.shape[0], self.n_pairs)  # (N, P)
        for k, head in enumerate(self.heads):
            index = torch.nonzero(species == k).squeeze(1)
            out = out.index_copy(0, index, head(features.index_select(0, index)))
        shift = self.state_shift[species][:, self.pairs[0]] * self.diagonal  # (N, P)
        return out * self.energy_scale + shift

    def forward(self, graph: Graph) -> torch.Tensor:
        """The diabatic matrix ``(S, n, n)`` eV, symmetric, of every structure."""
        per_atom = self.contributions(graph)  # (N, P)
        n_structures = graph[N_ATOMS].shape[0]
        upper = per_atom.new_zeros(n_structures, self.n_pairs).index_add(
            0, graph[BATCH], per_atom
        )  # (S, P)
        return upper[:, self.pair_table.flatten()].view(-1, self.n_states, self.n_states)

    @torch.no_grad()
    def fit_statistics(self, graphs: list[Graph], energies: torch.Tensor) -> None:
        """Set the body's normalisation from the graphs (no labels needed), the diagonal
        offsets ``c_{Z, k}`` (eV) by least squares of each state's adiabatic energy on the
        composition, and the scale ``s`` (eV) from the RMS per-atom remainder.

        Args:
            graphs: single-structure training graphs.
            energies: their adiabatic energy labels ``(S, n)`` eV.
        """
        self.body.fit_statistics(graphs)
        dtype = self.state_shift.dtype
        counts = torch.stack(
            [torch.bincount(self.species(g[NUMBERS]), minlength=len(self.elements)) for g in graphs]
        ).to(dtype)  # (S, Z)
        energies = energies.to(dtype)  # (S, n)
        shift = torch.linalg.lstsq(counts, energies, driver="gelsd").solution  # (Z, n)
        self.state_shift.copy_(shift)
        n_atoms = counts.sum(dim=1, keepdim=True)  # (S, 1)
        rest = (energies - counts @ shift) / n_atoms  # (S, n)
        rms = float(rest.pow(2).mean().sqrt())
        self.energy_scale.fill_(rms if rms > 1e-8 else 1.0)


def build_diabatic_model(config: dict[str, Any]) -> DiabaticModel:
    """An untrained :class:`DiabaticModel` from its :meth:`~DiabaticModel.config` (the body
    built from its registry spec)."""
    from mlpot.models.registry import build_model_from_file

    options = {k: config[k] for k in ("n_states", "hidden", "activation") if k in config}
    return DiabaticModel(build_model_from_file(config["body"]), **options)
