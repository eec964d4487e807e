"""Attachment barriers for crystal growth: an adatom on a stepped fcc(100) surface.

The surface is an fcc(100) slab (bottom layers fixed) with a strip of one extra layer on
top: the strip's two edges are close-packed ⟨110⟩ steps, and a few atoms taken out of one
edge row leave two kinks. An adatom sits in the four-fold hollows: on the lower terrace
(4 nearest neighbours), at the foot of a step (5), in a kink (6, the half-crystal position)
or on the upper terrace. The processes of growth are hops between neighbouring sites:

==================  ===========================================================
terrace_hop         hop between two hollows in the middle of the lower terrace
upper_terrace_hop   hop on the upper terrace (the strip), parallel to the step
step_attachment     lower terrace → foot of the step
edge_diffusion      along the foot of the step
kink_from_terrace   lower terrace → kink site
kink_from_edge      along the foot of the step → kink site
descent_hop         Ehrlich–Schwoebel descent: upper terrace → step foot, over the edge
descent_exchange    the same descent by exchange: the adatom takes the place of an edge
                    atom, which is pushed out to the step foot
==================  ===========================================================

The surface, its sites and the processes are in :mod:`mlpot.apps.growth_surface`. For
each process, both end points are relaxed and a climbing-image NEB
(:func:`mlpot.validation.climbing_image_neb`) is converged with the learned potential and,
separately, with the oracle. Reported: barriers (eV) and their difference, reaction
energies, and the local environment of the adatom in the initial state, at the saddle and
in the final state: coordination (neighbours within 1.2 nearest-neighbour distances) and
height above the lower terrace (Å, and in layers).

    from mlpot.apps.growth import attachment_barriers

    result = attachment_barriers("model.pt", oracle="emt")  # copper by default
    print(result.table())              # or table("markdown"), table("csv"); result.write(path)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.optimize import LBFGS

from mlpot.apps.growth_surface import (
    COORDINATION_FACTOR,
    Environment,
    Process,
    SteppedSurface,
    environment,
    growth_processes,
    stepped_surface,
)
from mlpot.errors import MlpotInputError
from mlpot.validation import climbing_image_neb

CalculatorFactory = Callable[[], BaseCalculator]
FORMATS = ("text", "markdown", "csv")
SITE_LEFT_A = 0.5  # an end point's adatom that moved this far laterally left its site, Å


# ---------------------------------------------------------------------------- barriers


@dataclass
class PathResult:
    """One calculator's minimum-energy path of one process.

    Attributes:
        barrier_eV: ``max E - E_initial`` along the converged band, eV.
        reaction_energy_eV: ``E_final - E_initial``, eV.
        energies_eV: energy of each image relative to the initial state, ``(n_images,)`` eV.
        initial, saddle, final: the adatom's environment (at the saddle: of the atom that
            is the adatom initially).
        end_point_shift_A: largest lateral move of the adatom during the relaxation of the
            end points, Å (large: it left its site, and the path is not the process's).
        converged: both end points relaxed and the band converged.
        images: the band (calculators attached).
    """

    barrier_eV: float
    reaction_energy_eV: float
    energies_eV: np.ndarray
    initial: Environment
    saddle: Environment
    final: Environment
    end_point_shift_A: float
    converged: bool
    images: list[Atoms] = field(repr=False)


@dataclass
class ProcessBarrier:
    """A process's path with the learned potential and with the oracle."""

    name: str
    description: str
    model: PathResult
    oracle: PathResult

    @property
    def error_eV(self) -> float:
        """Barrier error, model minus oracle, eV."""
        return self.model.barrier_eV - self.oracle.barrier_eV


def relax(
    atoms: Atoms, factory: CalculatorFactory, *, fmax: float = 0.02, steps: int = 500
) -> tuple[Atoms, bool]:
    """A relaxed copy of ``atoms`` (L-BFGS to ``fmax`` eV/Å, constraints kept, calculator
    attached) and whether it converged within ``steps``."""
    atoms = atoms.copy()
    atoms.calc = factory()
    converged = bool(LBFGS(atoms, logfile=None).run(fmax=fmax, steps=steps))
    return atoms, converged


def barrier_path(
    process: Process,
    factory: CalculatorFactory,
    surface: SteppedSurface,
    *,
    images: int = 5,
    fmax: float = 0.03,
    relax_fmax: float = 0.02,
    steps: int = 500,
) -> PathResult:
    """Relax both end points of ``process`` and converge its climbing-image NEB with the
    calculators of ``factory``. ``fmax``, ``relax_fmax``: eV/Å."""
    start, ok_start = relax(process.initial, factory, fmax=relax_fmax, steps=steps)
    end, ok_end = relax(process.final, factory, fmax=relax_fmax, steps=steps)
    band = climbing_image_neb(
        start,
        end,
        factory,
        images=images,
        fmax=fmax,
        steps=steps,
        interpolation=process.interpolation,
    )
    shifts = [
        np.linalg.norm(relaxed.positions[k, :2] - guess.positions[k, :2])
        for relaxed, guess, k in (
            (start, process.initial, process.adatom),
            (end, process.final, process.final_adatom),
        )
    ]
    env = {
        "cutoff": COORDINATION_FACTOR * surface.nearest_neighbour,
        "surface_atoms": surface.surface_atoms,
        "layer_spacing": surface.layer_spacing,
    }
    return PathResult(
        barrier_eV=band.barrier,
        reaction_energy_eV=band.reaction_energy,
        energies_eV=band.energies - band.energies[0],
        initial=environment(band.images[0], process.adatom, **env),
        saddle=environment(band.images[band.saddle], process.adatom, **env),
        final=environment(band.images[-1], process.final_adatom, **env),
        end_point_shift_A=float(max(shifts)),
        converged=ok_start and ok_end and band.converged,
        images=band.images,
    )


def calculator_factory(spec, *, trust_code: bool = False, device: str = "cpu") -> CalculatorFactory:
    """A factory of fresh calculators from ``spec``: a model file (loaded on ``device``
    with :func:`mlpot.calculators.load_calculator`), an oracle name (``"emt"``) or
    ``{"name": ..., "params": {...}}``, a factory (e.g. the class ``EMT``), or one ASE
    calculator (then shared by every structure). ``trust_code``: allow a ``module:factory``
    oracle, or a checkpoint's baseline that names one, to import and run code."""
    from mlpot.calculators import load_calculator
    from mlpot.calculators.oracles import make_oracle

    if isinstance(spec, BaseCalculator):
        return lambda: spec
    if callable(spec):
        return spec
    if isinstance(spec, str | Path) and (Path(spec).suffix == ".pt" or Path(spec).is_file()):
        if not Path(spec).is_file():
            raise MlpotInputError("model file not found", source=str(spec))
        return lambda: load_calculator(
            spec,
            trust_code=trust_code,
            force_uncertainty=False,
            domain_scores=False,
            device=device,
        )
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        name, params = spec["name"], dict(spec.get("params") or {})
        make_oracle(name, trust_code=trust_code, **params)  # bad names raise before any work
        return lambda: make_oracle(name, trust_code=trust_code, **params)
    raise MlpotInputError(
        f"expected a model file, an oracle name, a calculator or a factory, got {spec!r}",
        field="calculator",
    )


def _check_options(images: int, fmax: float, relax_fmax: float, steps: int) -> None:
    for name, value, bad in (
        ("images", images, images < 1),
        ("fmax", fmax, not fmax > 0),
        ("relax_fmax", relax_fmax, not relax_fmax > 0),
        ("steps", steps, steps < 1),
    ):
        if bad:
            raise MlpotInputError(f"must be positive, got {value!r}", field=name)


@dataclass
class GrowthBarriers:
    """Barriers of growth processes, learned potential against oracle.

    Attributes:
        rows: one :class:`ProcessBarrier` per process, in the order run.
        surface: the stepped surface they ran on.
    """

    rows: list[ProcessBarrier]
    surface: SteppedSurface = field(repr=False)

    def row(self, name: str) -> ProcessBarrier:
        """The row of process ``name``."""
        for candidate in self.rows:
            if candidate.name == name:
                return candidate
        raise MlpotInputError(f"no process {name!r} in these results", field="name")

    @property
    def mean_absolute_error_eV(self) -> float:
        """Mean |model - oracle| barrier over the processes, eV."""
        return float(np.mean([abs(r.error_eV) for r in self.rows]))

    @property
    def max_absolute_error_eV(self) -> float:
        """Largest |model - oracle| barrier, eV."""
        return float(np.max([abs(r.error_eV) for r in self.rows]))

    def table(self, fmt: str = "text") -> str:
        """The per-process table: ``"text"``, ``"markdown"`` or ``"csv"``."""
        if fmt not in FORMATS:
            raise MlpotInputError(f"unknown format {fmt!r}: {', '.join(FORMATS)}", field="fmt")
        return _render(self, fmt)

    def write(self, path: str | Path) -> Path:
        """Write the table; the format follows the suffix (``.csv``, ``.md``, else text)."""
        path = Path(path)
        fmt = {".csv": "csv", ".md": "markdown"}.get(path.suffix, "text")
        path.write_text(self.table(fmt))
        return path


#: Columns of the text and markdown tables: coordination (CN) and layer of the adatom in
#: the initial state, at the saddle and in the final state (oracle's path), its height at
#: the saddle above the lower terrace (Å), barriers and their error (eV), reaction energies
#: (eV), and whether each path converged (oracle/model).
COLUMNS = (
    "process", "CN i/s/f", "layer i/s/f", "z_saddle_A", "barrier_oracle_eV", "barrier_model_eV",
    "error_eV", "dE_oracle_eV", "dE_model_eV", "converged",
)  # fmt: skip


def _signed(value: float) -> str:
    return f"{round(value, 3) + 0.0:+.3f}"  # no "-0.000"


def _cells(row: ProcessBarrier) -> list[str]:
    """One row of the text and markdown tables."""
    o, m = row.oracle, row.model
    envs = (o.initial, o.saddle, o.final)
    flags = "/".join("yes" if path.converged else "NO" for path in (o, m))
    moved = " (site left)" if max(o.end_point_shift_A, m.end_point_shift_A) > SITE_LEFT_A else ""
    return [
        row.name,
        "/".join(str(e.coordination) for e in envs),
        "/".join(str(e.layer) for e in envs),
        f"{o.saddle.height_A:.2f}",
        f"{o.barrier_eV:.3f}",
        f"{m.barrier_eV:.3f}",
        _signed(row.error_eV),
        _signed(o.reaction_energy_eV),
        _signed(m.reaction_energy_eV),
        flags + moved,
    ]


def _csv_record(row: ProcessBarrier) -> dict[str, str]:
    """One row of the CSV table: every figure of both paths, full precision."""
    record = {"process": row.name, "description": row.description}
    for which, path in (("oracle", row.oracle), ("model", row.model)):
        for state in ("initial", "saddle", "final"):
            env = getattr(path, state)
            record[f"cn_{state}_{which}"] = str(env.coordination)
            record[f"layer_{state}_{which}"] = str(env.layer)
            record[f"height_{state}_{which}_A"] = f"{env.height_A:.4f}"
        record[f"barrier_{which}_eV"] = f"{path.barrier_eV:.6f}"
        record[f"reaction_energy_{which}_eV"] = f"{path.reaction_energy_eV:.6f}"
        record[f"end_point_shift_{which}_A"] = f"{path.end_point_shift_A:.4f}"
        record[f"converged_{which}"] = str(path.converged)
    record["error_eV"] = f"{row.error_eV:.6f}"
    return record


def _render(result: GrowthBarriers, fmt: str) -> str:
    if fmt == "csv":
        records = [_csv_record(row) for row in result.rows]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()
    lines = [list(COLUMNS), *[_cells(row) for row in result.rows]]
    if fmt == "markdown":
        lines.insert(1, ["---"] * len(COLUMNS))
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"
    widths = [max(len(cells[k]) for cells in lines) for k in range(len(COLUMNS))]
    text = [
        "  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(pairs))
        for pairs in (zip(cells, widths, strict=True) for cells in lines)
    ]
    summary = (
        f"barrier error over {len(result.rows)} processes: mean |error| "
        f"{result.mean_absolute_error_eV:.3f} eV, max |error| {result.max_absolute_error_eV:.3f} eV"
    )
    return "\n".join([*text, summary]) + "\n"


def attachment_barriers(
    model,
    oracle="emt",
    *,
    surface: SteppedSurface | None = None,
    processes: Sequence[str] | None = None,
    images: int = 5,
    fmax: float = 0.03,
    relax_fmax: float = 0.02,
    steps: int = 500,
    trust_code: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> GrowthBarriers:
    """Barriers of adatom processes on a stepped surface, ``model`` against ``oracle``.

    Args:
        model, oracle: a model file, an oracle name, an ASE calculator or a factory of
            calculators (see :func:`calculator_factory`).
        surface: default :func:`stepped_surface` (copper, a = 3.61 Å).
        processes: names from :data:`PROCESSES` (default all).
        images: intermediate NEB images.
        fmax: NEB convergence, eV/Å; relax_fmax: end-point relaxation, eV/Å.
        steps: most optimiser steps of each relaxation and of each band.
        trust_code: see :func:`calculator_factory`.
        device: torch device of a model file's calculator.
        log: called with a line after each process.
    """
    _check_options(images, fmax, relax_fmax, steps)
    model_factory = calculator_factory(model, trust_code=trust_code, device=device)
    oracle_factory = calculator_factory(oracle, trust_code=trust_code, device=device)
    surface = surface or stepped_surface()
    options = {"images": images, "fmax": fmax, "relax_fmax": relax_fmax, "steps": steps}
    rows = []
    for process in growth_processes(surface, processes):
        paths = {
            which: barrier_path(process, factory, surface, **options)
            for which, factory in (("oracle", oracle_factory), ("model", model_factory))
        }
        rows.append(ProcessBarrier(process.name, process.description, **paths))
        if log is not None:
            log(
                f"{process.name}: barrier oracle {paths['oracle'].barrier_eV:.3f} eV, "
                f"model {paths['model'].barrier_eV:.3f} eV"
            )
    return GrowthBarriers(rows, surface)
