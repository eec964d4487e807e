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

:func:`climbing_image_neb` is the package's one climbing-image NEB: this check runs it, and
so do the applications (``from mlpot.validation import climbing_image_neb``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.geometry import find_mic
from ase.mep import NEB
from ase.optimize import BFGS, FIRE, LBFGS

from mlpot.errors import MlpotInputError
from mlpot.validation.checks.defects import vacancy
from mlpot.validation.context import MODEL, ORACLE, ValidationContext
from mlpot.validation.result import Bound, CheckResult, judged

NAME = "neb"
METHOD = "improvedtangent"
SMALL_BARRIER = 0.05  # eV: profiles are normalised by max(barrier, this)
OPTIMIZERS = {"lbfgs": LBFGS, "bfgs": BFGS, "fire": FIRE}
INTERPOLATIONS = ("linear", "idpp")


@dataclass
class NEBResult:
    """A converged (or last) climbing-image band.

    Attributes:
        images: the band, end points included, each image with its own calculator still
            attached (its energy and forces are those of the last step).
        energies: potential energy of each image, ``(n_images,)`` eV.
        barrier: forward barrier ``max E - E_initial``, eV.
        reaction_energy: ``E_final - E_initial``, eV.
        saddle: index of the highest image (the climbing image once converged).
        converged: the optimiser reached ``fmax`` within ``steps``.
    """

    images: list[Atoms]
    energies: np.ndarray
    barrier: float
    reaction_energy: float
    saddle: int
    converged: bool

    @property
    def reverse_barrier(self) -> float:
        """Barrier of the reverse process, ``max E - E_final``, eV."""
        return float(self.energies.max() - self.energies[-1])


def climbing_image_neb(
    initial: Atoms,
    final: Atoms,
    calculator_factory: Callable[[], BaseCalculator],
    *,
    images: int = 5,
    fmax: float = 0.03,
    steps: int = 400,
    climb: bool = True,
    interpolation: str = "linear",
    optimizer: str = "lbfgs",
    mic: bool = True,
) -> NEBResult:
    """Climbing-image NEB (ASE, improved tangent) between two relaxed end points.

    The inputs are not changed: the band is made of copies, with their constraints (e.g.
    ``FixAtoms`` on the bottom of a slab), one ``calculator_factory()`` per image (a factory
    that returns one shared instance also works). Atom ``k`` of ``initial`` moves to atom
    ``k`` of ``final``.

    Args:
        initial, final: relaxed end points, same atoms in the same order, positions in Å.
        calculator_factory: returns an ASE calculator (eV, eV/Å).
        images: intermediate images.
        fmax: convergence threshold of the largest NEB force, eV/Å.
        steps: most optimiser steps.
        climb: climbing image (the highest image climbs to the saddle point).
        interpolation: initial band, ``"linear"`` or ``"idpp"`` (image-dependent pair
            potential: keeps atoms apart where a straight line would pass through one).
        optimizer: ``"lbfgs"``, ``"bfgs"`` or ``"fire"``.
        mic: interpolate with the minimum-image convention (periodic cells).
    """
    _check_band_input(initial, final, images, interpolation, optimizer)
    band_images = [initial.copy() for _ in range(images + 1)] + [final.copy()]
    for image in band_images:
        image.calc = calculator_factory()
    band = NEB(band_images, climb=climb, method=METHOD, allow_shared_calculator=True)
    band.interpolate(interpolation, mic=mic)
    run = OPTIMIZERS[optimizer](band, logfile=None)
    converged = bool(run.run(fmax=fmax, steps=steps))
    energies = np.array([image.get_potential_energy() for image in band_images])  # (n,)
    return NEBResult(
        images=band_images,
        energies=energies,
        barrier=float(energies.max() - energies[0]),
        reaction_energy=float(energies[-1] - energies[0]),
        saddle=int(np.argmax(energies)),
        converged=converged,
    )


def _check_band_input(
    initial: Atoms, final: Atoms, images: int, interpolation: str, optimizer: str
) -> None:
    """Raise :class:`MlpotInputError` for end points or options a band cannot be built of."""
    if len(initial) != len(final) or list(initial.numbers) != list(final.numbers):
        raise MlpotInputError(
            "NEB end points must have the same atoms in the same order "
            f"({initial.get_chemical_formula()} vs {final.get_chemical_formula()})",
            field="final",
        )
    if not np.allclose(initial.cell.array, final.cell.array):
        raise MlpotInputError("NEB end points must have the same cell", field="final")
    if images < 1:
        raise MlpotInputError(f"at least one intermediate image, got {images}", field="images")
    if interpolation not in INTERPOLATIONS:
        raise MlpotInputError(
            f"unknown interpolation {interpolation!r}: {', '.join(INTERPOLATIONS)}",
            field="interpolation",
        )
    if optimizer not in OPTIMIZERS:
        raise MlpotInputError(
            f"unknown optimizer {optimizer!r}: {', '.join(OPTIMIZERS)}", field="optimizer"
        )


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


def converge_band(ctx: ValidationContext, which: str) -> NEBResult:
    """The converged climbing-image band of ``which`` (end points relaxed)."""
    s = ctx.settings
    initial, final, _ = hop_end_points(ctx.system.atoms)
    start = ctx.relaxed("vacancy", initial, which).atoms
    end = ctx.relaxed("vacancy-hopped", final, which).atoms
    return climbing_image_neb(
        start,
        end,
        lambda: ctx.fresh_calculator(which),
        images=s.neb_images,
        fmax=s.neb_fmax,
        steps=s.neb_steps,
    )


def _profile(result: NEBResult) -> tuple[np.ndarray, np.ndarray]:
    """Path length (Å) and energy relative to the first image (eV) of each image."""
    images = result.images
    steps = [
        np.linalg.norm(find_mic(b.positions - a.positions, b.cell, b.pbc)[0])
        for a, b in zip(images[:-1], images[1:], strict=True)
    ]
    return np.concatenate([[0.0], np.cumsum(steps)]), result.energies - result.energies[0]


def run(ctx: ValidationContext) -> CheckResult:
    tol = ctx.tolerances
    bands, profiles, converged = {}, {}, {}
    for which in (MODEL, ORACLE):
        result = converge_band(ctx, which)
        bands[which], converged[which] = result.images, result.converged
        profiles[which] = _profile(result)
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
