"""The stepped fcc(100) surface of the growth study: the slab with a one-layer strip whose
edges are close-packed steps and a kink, its adatom sites, the catalogue of growth
processes (hops and an exchange between neighbouring sites), and the local environment of
an atom (coordination, height). See :mod:`mlpot.apps.growth`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import fcc100
from ase.constraints import FixAtoms

from mlpot.errors import MlpotInputError

COORDINATION_FACTOR = 1.2  # neighbours within this many nearest-neighbour distances

# ---------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class SteppedSurface:
    """An fcc(100) slab with a one-layer strip on top (two steps) and a kink in one edge.

    Strip columns ``i < terrace_width`` (in-plane lattice index along x) are occupied in
    the top layer, except the edge row ``i = terrace_width - 1`` for ``j < kink_length``.

    Attributes:
        slab: the substrate without adatom; bottom layers fixed (``FixAtoms``), Å.
        a: lattice constant, Å.
        size: lateral size in surface cells ``(nx, ny)``.
        terrace_width: columns of the strip (the upper terrace).
        kink_length: edge atoms taken out of the step row.
        surface_atoms: indices of the top full layer (the lower terrace).
        offset: in-plane offset of the strip layer's lattice, in nearest-neighbour distances.
        surface_z: mean z of the top full layer, Å.
    """

    slab: Atoms
    a: float
    size: tuple[int, int]
    terrace_width: int
    kink_length: int
    surface_atoms: tuple[int, ...]
    offset: float
    surface_z: float

    @property
    def nearest_neighbour(self) -> float:
        """Nearest-neighbour distance ``a/√2``, Å."""
        return self.a / np.sqrt(2.0)

    @property
    def layer_spacing(self) -> float:
        """Distance between (100) layers ``a/2``, Å."""
        return self.a / 2.0

    def lower_site(self, i: int, j: int) -> np.ndarray:
        """Hollow ``(i, j)`` on the lower terrace (a site of the strip's layer), Å."""
        d = self.nearest_neighbour
        xy = (np.array([i, j], dtype=float) + self.offset) * d
        return self._wrapped(xy, self.surface_z + self.layer_spacing)

    def upper_site(self, i: int, j: int) -> np.ndarray:
        """Hollow above strip atoms ``(i, j)``, ``(i+1, j)``, ``(i, j+1)``, ``(i+1, j+1)``, Å."""
        d = self.nearest_neighbour
        xy = (np.array([i, j], dtype=float) + self.offset + 0.5) * d
        return self._wrapped(xy, self.surface_z + 2.0 * self.layer_spacing)

    def strip_atom(self, i: int, j: int) -> int:
        """Index in :attr:`slab` of the strip atom at lattice position ``(i, j)``."""
        target = self.lower_site(i, j)
        top = np.flatnonzero(self.slab.positions[:, 2] > self.surface_z + 0.5 * self.layer_spacing)
        lateral = np.linalg.norm(self.slab.positions[top, :2] - target[:2], axis=1)
        if lateral.size == 0 or lateral.min() > 0.1:
            raise MlpotInputError(f"no strip atom at ({i}, {j})", field="site")
        return int(top[np.argmin(lateral)])

    def with_adatom(self, position: np.ndarray, symbol: str | None = None) -> Atoms:
        """The slab plus one adatom (the last atom) at ``position`` (Å)."""
        symbol = symbol or self.slab.get_chemical_symbols()[0]
        return self.slab + Atoms(symbol, positions=[position])

    def _wrapped(self, xy: np.ndarray, z: float) -> np.ndarray:
        lengths = np.diag(self.slab.cell.array)[:2]
        return np.array([*(np.mod(xy, lengths)), z])


def stepped_surface(
    symbol: str = "Cu",
    a: float = 3.61,
    *,
    size: tuple[int, int] = (10, 6),
    layers: int = 4,
    fixed_layers: int = 2,
    terrace_width: int = 4,
    kink_length: int = 3,
    vacuum: float = 10.0,
) -> SteppedSurface:
    """Build a :class:`SteppedSurface` of fcc ``symbol`` with lattice constant ``a`` (Å).

    ``layers`` full (100) layers, the lowest ``fixed_layers`` fixed, plus the strip;
    ``vacuum`` (Å) on each side. Every process of :data:`PROCESSES` needs
    ``terrace_width >= 3``, ``nx - terrace_width >= 4``, ``kink_length >= 3`` and
    ``ny - kink_length >= 2``.
    """
    nx, ny = size
    _check_surface(nx, ny, layers, fixed_layers, terrace_width, kink_length, vacuum, a)
    slab = fcc100(symbol, size=(nx, ny, layers + 1), a=a, vacuum=vacuum)  # tag 1: strip layer
    d = a / np.sqrt(2.0)
    strip = slab.get_tags() == 1
    offset = float(np.round(np.mod(slab.positions[strip][0, 0] / d, 1.0), 6) % 1.0)
    lattice = np.rint(slab.positions[:, :2] / d - offset).astype(int) % np.array([nx, ny])
    i, j = lattice[:, 0], lattice[:, 1]
    removed = strip & ((i >= terrace_width) | ((i == terrace_width - 1) & (j < kink_length)))
    del slab[np.flatnonzero(removed)]
    tags = slab.get_tags()
    slab.set_constraint(FixAtoms(indices=np.flatnonzero(tags > layers + 1 - fixed_layers)))
    surface = np.flatnonzero(tags == 2)
    return SteppedSurface(
        slab=slab,
        a=float(a),
        size=(nx, ny),
        terrace_width=terrace_width,
        kink_length=kink_length,
        surface_atoms=tuple(int(k) for k in surface),
        offset=offset,
        surface_z=float(slab.positions[surface, 2].mean()),
    )


def _check_surface(nx, ny, layers, fixed_layers, width, kink, vacuum, a) -> None:
    problems = {
        "size": nx - width < 4 or ny - kink < 2,
        "layers": layers < 2 or not 1 <= fixed_layers < layers,
        "terrace_width": width < 3,
        "kink_length": kink < 3,
        "vacuum": vacuum < 10.0,
        "a": not a > 0,
    }
    for name, bad in problems.items():
        if bad:
            raise MlpotInputError(
                f"bad stepped surface: size=({nx}, {ny}), layers={layers}, fixed_layers="
                f"{fixed_layers}, terrace_width={width}, kink_length={kink}, vacuum={vacuum} Å, "
                f"a={a} Å (needs terrace_width >= 3, nx - terrace_width >= 4, kink_length >= 3, "
                "ny - kink_length >= 2, 1 <= fixed_layers < layers, vacuum >= 10 Å, a > 0)",
                field=name,
            )


# ---------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Process:
    """One elementary move of growth: unrelaxed end points and the atom to follow.

    Attributes:
        name, description: key and a line of text.
        initial, final: end points (same atoms, same order), Å.
        adatom: index of the adatom in the initial state (the atom that moves).
        final_adatom: index of the adatom in the final state (another atom after an
            exchange).
        interpolation: initial band, ``"linear"`` or ``"idpp"``.
    """

    name: str
    description: str
    initial: Atoms
    final: Atoms
    adatom: int
    final_adatom: int
    interpolation: str = "linear"


#: Process names and what they are (the order of the table).
PROCESSES = {
    "terrace_hop": "hop in the middle of the lower terrace",
    "upper_terrace_hop": "hop on the upper terrace, along the step",
    "step_attachment": "lower terrace -> step foot",
    "edge_diffusion": "along the step foot",
    "kink_from_terrace": "lower terrace -> kink",
    "kink_from_edge": "step foot -> kink, along the step",
    "descent_hop": "Ehrlich-Schwoebel descent over the edge (hop)",
    "descent_exchange": "Ehrlich-Schwoebel descent (exchange with an edge atom)",
}


def _hop_sites(surface: SteppedSurface) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Start and end site (Å) of the adatom of each hop of :data:`PROCESSES`."""
    (nx, ny), w, k = surface.size, surface.terrace_width, surface.kink_length
    low, up = surface.lower_site, surface.upper_site
    mid = w + (nx - w) // 2 - 1  # the middle of the lower terrace: mid and mid + 1
    row = ny - 2  # rows row and row + 1 have an intact step edge
    return {
        "terrace_hop": (low(mid, row), low(mid + 1, row)),
        "upper_terrace_hop": (up((w - 2) // 2, row - 1), up((w - 2) // 2, row)),
        "step_attachment": (low(w + 1, row), low(w, row)),
        "edge_diffusion": (low(w, row), low(w, row + 1)),
        "kink_from_terrace": (low(w, k - 1), low(w - 1, k - 1)),
        "kink_from_edge": (low(w - 1, k - 2), low(w - 1, k - 1)),
        "descent_hop": (up(w - 2, row), low(w, row)),
    }


def _exchange(surface: SteppedSurface, name: str) -> Process:
    """The adatom above the step edge moves into the edge row; that edge atom is pushed
    out to the step foot."""
    w, row = surface.terrace_width, surface.size[1] - 2
    edge = surface.strip_atom(w - 1, row)
    initial = surface.with_adatom(surface.upper_site(w - 2, row))
    final = initial.copy()
    final.positions[-1] = final.positions[edge]
    final.positions[edge] = surface.lower_site(w, row)
    return Process(name, PROCESSES[name], initial, final, len(initial) - 1, edge, "idpp")


def growth_processes(
    surface: SteppedSurface | None = None, names: Sequence[str] | None = None
) -> list[Process]:
    """The processes ``names`` (default: all of :data:`PROCESSES`) on ``surface``
    (default: :func:`stepped_surface` of copper)."""
    surface = surface or stepped_surface()
    names = list(PROCESSES) if names is None else list(names)
    unknown = [name for name in names if name not in PROCESSES]
    if unknown or not names:
        raise MlpotInputError(
            f"unknown or no processes {unknown}: choose from {', '.join(PROCESSES)}",
            field="processes",
        )
    sites = _hop_sites(surface)
    processes = []
    for name in names:
        if name not in sites:
            processes.append(_exchange(surface, name))
            continue
        initial, final = (surface.with_adatom(site) for site in sites[name])
        interpolation = "idpp" if name == "descent_hop" else "linear"  # over the edge atoms
        last = len(initial) - 1
        processes.append(Process(name, PROCESSES[name], initial, final, last, last, interpolation))
    return processes


# ---------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class Environment:
    """Local environment of one atom.

    Attributes:
        coordination: neighbours closer than the coordination cutoff.
        height_A: height above the lower terrace (mean z of its top full layer), Å.
        layer: height in layer spacings, rounded (1: in the first layer above the lower
            terrace, e.g. a terrace adatom or the step row; 2: on the upper terrace).
    """

    coordination: int
    height_A: float
    layer: int


def environment(
    atoms: Atoms,
    index: int,
    *,
    cutoff: float,
    surface_atoms: Sequence[int],
    layer_spacing: float,
) -> Environment:
    """Coordination of atom ``index`` (neighbours within ``cutoff`` Å, minimum image) and
    its height above the mean z of ``surface_atoms`` (Å and in ``layer_spacing`` Å)."""
    if not 0 <= index < len(atoms):
        raise MlpotInputError(f"no atom {index} in {len(atoms)} atoms", field="index")
    if cutoff <= 0 or layer_spacing <= 0 or len(surface_atoms) == 0:
        raise MlpotInputError(
            "cutoff and layer_spacing must be positive and surface_atoms not empty",
            field="cutoff",
        )
    others = [k for k in range(len(atoms)) if k != index]
    distances = atoms.get_distances(index, others, mic=True)  # (N-1,) Å
    height = float(atoms.positions[index, 2] - atoms.positions[list(surface_atoms), 2].mean())
    return Environment(
        coordination=int(np.count_nonzero(distances < cutoff)),
        height_A=height,
        layer=int(np.rint(height / layer_spacing)),
    )
