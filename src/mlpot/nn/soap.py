"""SOAP power spectrum descriptors, computed by featomic (optional: ``mlpot[soap]``).

Per atom ``i`` of species ``c`` and every unordered pair of neighbour species ``a ≤ b``::

    p_i[ab, l, n₁, n₂] = Σ_m c_i[a, n₁, l, m] c_i[b, n₂, l, m]

where ``c_i[a, n, l, m]`` are the coefficients of the smooth neighbour density of species
``a`` (Gaussians of width ``density_width`` on every neighbour within ``cutoff``, switched
off by a shifted cosine of width ``smoothing_width``) in a GTO radial basis
(``max_radial + 1`` functions) times real spherical harmonics up to ``max_angular``.
featomic (its TorchScript extension ``featomic.torch``) computes the features and their
exact derivatives with respect to positions and cell, and registers those with autograd:
forces and stress remain exact gradients of the energy (nothing is differentiated by hand
here). Second derivatives with respect to positions are *not* available (featomic does not
compute them): the module says so (``second_derivatives = False``), and
:func:`mlpot.validation.hessian.model_hessian` then differentiates the exact forces by
central differences instead of autograd, whose Hessian would miss those terms.

The columns are the same for every centre species: pair blocks in the order of
``(a, b)``, each with ``(l, n₁, n₂)`` in featomic's order; for a same-species pair
(``a = b``) the power spectrum is symmetric in ``n₁, n₂`` and only ``n₁ ≤ n₂`` is kept.
Features of a centre without neighbours of a pair's species are zero.

featomic takes 3D-periodic cells or free molecules. A cell periodic along some directions
only (a slab, a wire) is handed to it with each non-periodic cell vector replaced by a
vector orthogonal to the periodic ones and longer than the structure's extent plus the
cutoff: the periodic images it adds lie beyond the cutoff, so the features are those of the
partly periodic structure, and their derivative with respect to the stand-in vectors is
zero.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch

from mlpot.data.graph import CELL, N_ATOMS, NUMBERS, PBC, POSITIONS, Graph

#: Hyper-parameters of :class:`SOAP` and their defaults.
SOAP_DEFAULTS: dict[str, Any] = {
    "max_radial": 3,
    "max_angular": 3,
    "density_width": 0.5,
    "smoothing_width": 1.0,
    "center_atom_weight": 1.0,
}

_KEY_NAMES = ["center_type", "neighbor_1_type", "neighbor_2_type"]


@functools.cache
def _featomic():
    """featomic's TorchScript API (``featomic.torch``, ``metatensor.torch`` and
    ``metatomic.torch``), or a clear error naming the extra that installs it."""
    try:
        import featomic.torch
        import metatensor.torch
        import metatomic.torch
    except ImportError as error:
        raise ImportError(
            "the SOAP descriptor is computed by featomic: pip install 'mlpot[soap]'"
        ) from error
    return featomic.torch, metatensor.torch, metatomic.torch


class SOAP(torch.nn.Module):
    """SOAP power spectrum per atom ``(N, F)`` (module docstring).

    Args:
        elements: atomic numbers of the species.
        cutoff: radius of the atomic environments, Å.
        max_radial: largest radial basis index (``max_radial + 1`` GTO functions).
        max_angular: largest angular momentum ``l``.
        density_width: width of the Gaussian neighbour densities, Å.
        smoothing_width: width of the shifted-cosine switch that ends at ``cutoff``, Å.
        center_atom_weight: weight of the centre atom's own density.
    """

    #: featomic registers first derivatives only (module docstring).
    second_derivatives = False

    def __init__(
        self,
        elements: list[int],
        cutoff: float,
        *,
        max_radial: int = SOAP_DEFAULTS["max_radial"],
        max_angular: int = SOAP_DEFAULTS["max_angular"],
        density_width: float = SOAP_DEFAULTS["density_width"],
        smoothing_width: float = SOAP_DEFAULTS["smoothing_width"],
        center_atom_weight: float = SOAP_DEFAULTS["center_atom_weight"],
    ) -> None:
        super().__init__()
        if not 0 < smoothing_width <= cutoff:
            raise ValueError(
                f"need 0 < smoothing_width <= cutoff, got {smoothing_width} and {cutoff}"
            )
        if max_radial < 0 or max_angular < 0:
            raise ValueError(
                f"max_radial and max_angular must be >= 0, got {max_radial}, {max_angular}"
            )
        self.elements = sorted(int(z) for z in elements)
        self.cutoff = float(cutoff)
        self.hypers = {
            "cutoff": {
                "radius": self.cutoff,
                "smoothing": {"type": "ShiftedCosine", "width": float(smoothing_width)},
            },
            "density": {
                "type": "Gaussian",
                "width": float(density_width),
                "center_atom_weight": float(center_atom_weight),
            },
            "basis": {
                "type": "TensorProduct",
                "max_angular": int(max_angular),
                "radial": {"type": "Gto", "max_radial": int(max_radial)},
            },
        }
        self.pairs = [(a, b) for a in self.elements for b in self.elements if a <= b]
        n_radial, n_angular = int(max_radial) + 1, int(max_angular) + 1
        self.pair_widths = [
            n_angular * (n_radial * (n_radial + 1) // 2 if a == b else n_radial**2)
            for a, b in self.pairs
        ]
        self.n_features = sum(self.pair_widths)
        _, metatensor, _ = _featomic()
        keys = [(c, a, b) for c in self.elements for a, b in self.pairs]
        # every block, also those of species absent from a structure: fixed columns
        self.keys = metatensor.Labels(_KEY_NAMES, torch.tensor(keys, dtype=torch.int32))
        self.neighbour_pairs = metatensor.Labels(
            _KEY_NAMES[1:], torch.tensor(self.pairs, dtype=torch.int32)
        )
        self._kept: torch.Tensor | None = None
        self._calculator = None  # built on first use (a TorchScript object: not copied)

    def __getstate__(self) -> dict[str, Any]:  # deepcopy / pickle: rebuild the calculator
        state = dict(super().__getstate__())
        state["_calculator"] = None
        return state

    def extra_repr(self) -> str:
        return json.dumps(self.hypers)

    @property
    def calculator(self):
        """featomic's SoapPowerSpectrum (built once)."""
        if self._calculator is None:
            featomic_torch, _, _ = _featomic()
            # a plain attribute, not a submodule: no state, left out of copies
            object.__setattr__(self, "_calculator", featomic_torch.SoapPowerSpectrum(**self.hypers))
        return self._calculator

    def forward(self, graph: Graph) -> torch.Tensor:
        """Per-atom power spectra ``(N, F)``, differentiable in positions and cell."""
        positions = graph[POSITIONS]
        spectrum = self.calculator(self._systems(graph), selected_keys=self.keys)
        # one block: pairs of neighbour species to properties (zeros where a centre has no
        # such neighbours), centre species to samples
        block = (
            spectrum.keys_to_properties(self.neighbour_pairs).keys_to_samples("center_type")
        ).block(0)
        samples = block.samples.values.to(torch.long)  # (N, 3): structure, atom, centre type
        n_counts = graph[N_ATOMS].cpu()
        offsets = torch.cumsum(n_counts, 0) - n_counts  # (S,) first atom of each structure
        rows = offsets[samples[:, 0]] + samples[:, 1]  # (N,) the graph's order
        values = block.values.index_select(1, self._columns(block.properties))  # (N, F)
        out = torch.zeros(positions.shape[0], self.n_features, dtype=values.dtype)
        out = out.index_copy(0, rows, values)
        return out.to(device=positions.device, dtype=positions.dtype)

    def _columns(self, properties) -> torch.Tensor:
        """Columns kept: all but ``n₁ > n₂`` of a same-species pair (built once)."""
        if self._kept is None:
            names = properties.names
            values = properties.values.to(torch.long)  # (P, 5)
            a, b, n1, n2 = (
                values[:, names.index(name)]
                for name in ("neighbor_1_type", "neighbor_2_type", "n_1", "n_2")
            )
            self._kept = torch.nonzero((a != b) | (n1 <= n2)).squeeze(1)
            if len(self._kept) != self.n_features:  # pragma: no cover - featomic's layout
                raise RuntimeError(f"SOAP has {len(self._kept)} features, not {self.n_features}")
        return self._kept

    def _systems(self, graph: Graph) -> list:
        """One metatomic ``System`` per structure, its positions and cell slices of the
        graph's (float64, CPU, autograd connected)."""
        _, _, metatomic = _featomic()
        positions = graph[POSITIONS].to(device="cpu", dtype=torch.float64)
        cells = graph[CELL].to(device="cpu", dtype=torch.float64)
        pbc = graph[PBC].cpu()
        types = graph[NUMBERS].cpu().to(torch.int32)
        systems = []
        start = 0
        for s, count in enumerate(graph[N_ATOMS].cpu().tolist()):
            x = positions[start : start + count]
            cell, periodic = _featomic_cell(cells[s], pbc[s], x, self.cutoff)
            systems.append(
                metatomic.System(
                    types=types[start : start + count], positions=x, cell=cell, pbc=periodic
                )
            )
            start += count
        return systems


def _featomic_cell(
    cell: torch.Tensor, pbc: torch.Tensor, positions: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cell ``(3, 3)`` and pbc ``(3,)`` to hand featomic: as they are for a 3D-periodic
    cell, zeros for a free structure; a partly periodic cell gets stand-in vectors for its
    non-periodic directions (module docstring)."""
    if bool(pbc.all()):
        return cell, pbc
    if not bool(pbc.any()):
        return torch.zeros_like(cell), pbc
    periodic = cell[pbc].detach()  # (k, 3)
    _, _, vh = torch.linalg.svd(periodic)  # rows k..2 of vh: orthogonal to the periodic vectors
    normals = vh[periodic.shape[0] :]  # (3 - k, 3)
    projected = positions.detach() @ normals.T  # (n, 3 - k)
    extent = projected.max(0).values - projected.min(0).values  # (3 - k,)
    stand_in = normals * (extent + cutoff + 1.0)[:, None]
    cell = cell.clone()
    cell[~pbc] = stand_in
    return cell, torch.ones_like(pbc)
