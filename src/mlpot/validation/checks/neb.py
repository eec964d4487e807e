"""Vacancy migration barrier by climbing-image NEB (ASE), model against oracle.

A nearest neighbour of the vacant site hops into it. End points are relaxed and the band
is converged with each calculator separately. Reported:

* barrier ``max E - E_initial`` of both paths and their difference;
* smoothness: the largest difference of the second differences of the energy along the
  images, each profile divided by its own barrier,
  ``max |Δ²E_model/B_model - Δ²E_oracle/B_oracle|``: zero for the same profile shape
  (whatever the height), large when a rough model PES puts kinks or bumps in it;
* the residual force of the *oracle* perpendicular to the *model's* converged path, the
  largest per-atom norm over the images: small when the model's path is the oracle's
  minimum-energy path.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from ase.mep import NEB
from ase.optimize import LBFGS

from mlpot.validation.checks.defects import vacancy
from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "neb"
METHOD = "improvedtangent"
SMALL_BARRIER = 0.05  # eV: profiles are normalised by max(barrier, this)


def hop_end_points(bulk: Atoms) -> tuple[Atoms, Atoms, int]:
    """Vacancy at site 0 before and after its nearest neighbour hopped in, and that atom's
    index in the vacancy structure."""
    site = bulk.positions[0]
    vectors, _ = find_mic(bulk.positions[1:] - site, bulk.cell, bulk.pbc)
    neighbour = int(np.argmin(np.linalg.norm(vectors, axis=1)))  # index in the vacancy cell
    initial = vacancy(bulk)
    final = initial.copy()
    final.positions[neighbour] -= vectors[neighbour]  # onto the vacant site
    return initial, final, neighbour


def perpendicular_force(images: list[Atoms], calcs: list) -> np.ndarray:
    """Largest per-atom norm of the force perpendicular to the path, per interior image,
    ``(I,)`` eV/Å (ASE's improved tangent; no springs, no climbing). ``calcs``: one
    calculator per image."""
    copies = [image.copy() for image in images]
    for image, image_calc in zip(copies, calcs, strict=True):
        image.calc = image_calc
    band = NEB(copies, k=0.0, method=METHOD, allow_shared_calculator=True)
    forces = band.get_forces().reshape(len(images) - 2, len(images[0]), 3)  # (I, N, 3)
    return np.linalg.norm(forces, axis=2).max(axis=1)


def converge_band(ctx: ValidationContext, which: str) -> tuple[list[Atoms], bool]:
    """The converged climbing-image band of ``which`` (end points relaxed)."""
    s = ctx.settings
    initial, final, _ = hop_end_points(ctx.system.atoms)
    start = ctx.relaxed("vacancy", initial, which).atoms
    end = ctx.relaxed("vacancy-hopped", final, which).atoms
    images = [start] + [start.copy() for _ in range(s.neb_images)] + [end]
    for image in images:
        image.calc = ctx.fresh_calculator(which)
    band = NEB(images, climb=True, method=METHOD, allow_shared_calculator=True)
    band.interpolate(mic=True)
    converged = bool(LBFGS(band, logfile=None).run(fmax=s.neb_fmax, steps=s.neb_steps))
    return images, converged


def _profile(images: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """Path length (Å) and energy relative to the first image (eV) of each image."""
    energies = np.array([image.get_potential_energy() for image in images])
    steps = [
        np.linalg.norm(find_mic(b.positions - a.positions, b.cell, b.pbc)[0])
        for a, b in zip(images[:-1], images[1:], strict=True)
    ]
    return np.concatenate([[0.0], np.cumsum(steps)]), energies - energies[0]


def run(ctx: ValidationContext) -> CheckResult:
    tol = ctx.tolerances
    bands, profiles, converged = {}, {}, {}
    for which in (MODEL, ORACLE):
        bands[which], converged[which] = converge_band(ctx, which)
        profiles[which] = _profile(bands[which])
    barrier = {which: float(profiles[which][1].max()) for which in profiles}
    second = {  # (I,) second differences of each profile over its barrier
        which: np.diff(profiles[which][1], 2) / max(barrier[which], SMALL_BARRIER)
        for which in profiles
    }
    calcs = [ctx.fresh_calculator(ORACLE) for _ in bands[MODEL]]
    residual = perpendicular_force(bands[MODEL], calcs)
    figures = {
        "barrier_model_eV": barrier[MODEL],
        "barrier_oracle_eV": barrier[ORACLE],
        "barrier_error_eV": barrier[MODEL] - barrier[ORACLE],
        "smoothness": float(np.max(np.abs(second[MODEL] - second[ORACLE]))),
        "oracle_perpendicular_force_eV_per_A": float(residual.max()),
        "images": ctx.settings.neb_images,
    }
    tolerance = {
        "barrier_error_eV": Bound(tol.barrier, -tol.barrier, "eV"),
        "smoothness": Bound(tol.neb_smoothness),
        "oracle_perpendicular_force_eV_per_A": Bound(tol.neb_perpendicular_force, unit="eV/Å"),
    }
    details = {
        "path_model_A": profiles[MODEL][0],
        "energy_model_eV": profiles[MODEL][1],
        "path_oracle_A": profiles[ORACLE][0],
        "energy_oracle_eV": profiles[ORACLE][1],
        "oracle_perpendicular_force_per_image": residual,
        "converged": converged,
    }
    return judged(NAME, figures, tolerance, details)
