"""Path-integral MD through i-PI: nuclear quantum effects with a learned potential.

i-PI integrates the ring polymer and thermostats it (PILE-L by default: a Langevin
thermostat on the normal modes, critically damped for the internal ones, with a gentler
one on the centroid; or ``pile_g``, global on the centroid); mlpot only answers i-PI's force
requests, in-process through :mod:`mlpot.apps.ipi_driver`. Isotopes are masses: pass
``masses`` (amu, one per atom), e.g. 2.014 for D — the potential does not change.

Observables, sampled every ``sample_every`` steps after equilibration:

- quantum kinetic energy per atom, centroid-virial estimator (eV); a classical particle
  has 3kT/2;
- radius of gyration of each atom's ring polymer (Å), the spread of its quantum
  delocalisation (thermal de Broglie wavelength scale);
- bead-resolved potential energies (eV) and the centroid structure (its CV when a
  restraint acts on the centroid, for umbrella sampling of the centroid).

A restraint (:class:`~mlpot.apps.restraint.HarmonicRestraint`) acts on the centroid: it is
a second i-PI force field evaluated on the ring polymer contracted to one bead.

A run is durable: every ``checkpoint_every`` steps i-PI's restart file and the samples so
far are written to the run directory, and :func:`run_pimd` resumes from them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from tqdm.auto import tqdm

from mlpot.apps import ipi_driver
from mlpot.apps.restraint import HarmonicRestraint, RestraintCalculator
from mlpot.errors import MlpotInputError

THERMOSTATS = ("pile_l", "pile_g")
STATE = "pimd_state.npz"


@dataclass(frozen=True)
class PIMDSettings:
    """Beads, temperature (K), time step (fs), steps, thermostat (``pile_l``/``pile_g``)
    with its centroid time constant ``tau_fs`` (fs), sampling and checkpoint strides.

    ``thermostat`` may also be a whole i-PI ``<thermostat>`` block, e.g. PIGLET with the
    A and C matrices of the GLE4MD library for the beads and temperature of the run."""

    beads: int = 16
    temperature_K: float = 300.0
    timestep_fs: float = 0.25
    steps: int = 2000
    equilibration_steps: int = 200
    thermostat: str = "pile_l"
    tau_fs: float = 100.0
    sample_every: int = 2
    checkpoint_every: int = 200
    seed: int = 12345

    def __post_init__(self) -> None:
        if self.beads < 1:
            raise MlpotInputError(f"beads must be >= 1, got {self.beads}", field="beads")
        if self.thermostat not in THERMOSTATS and not _is_thermostat_block(self.thermostat):
            raise MlpotInputError(
                f"thermostat {self.thermostat!r}: one of {', '.join(THERMOSTATS)} or an "
                "i-PI <thermostat> block",
                field="thermostat",
            )
        if not self.temperature_K > 0 or not self.timestep_fs > 0:
            raise MlpotInputError("temperature and time step must be > 0")
        if self.steps < 1 or self.sample_every < 1 or self.checkpoint_every < 1:
            raise MlpotInputError("steps, sample_every and checkpoint_every must be >= 1")


def _is_thermostat_block(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("<thermostat") and stripped.endswith("</thermostat>")


@dataclass
class PIMDResult:
    """Samples of a PIMD run (after equilibration) and their means."""

    settings: PIMDSettings
    symbols: list[str]
    masses: np.ndarray  # amu
    kinetic_cv: np.ndarray  # (n_samples, n_atoms) eV, centroid-virial estimator
    gyration_radius: np.ndarray  # (n_samples, n_atoms) Å
    bead_potentials: np.ndarray  # (n_samples, beads) eV
    centroid_cv: np.ndarray  # (n_samples,) CV of the centroid (NaN without a restraint)
    directory: Path | None = None
    extra: dict = field(default_factory=dict)

    def mean_kinetic_energy(self) -> tuple[np.ndarray, np.ndarray]:
        """Per atom: mean quantum kinetic energy (eV) and its standard error (blocks)."""
        return _mean_and_error(self.kinetic_cv)

    def mean_gyration_radius(self) -> tuple[np.ndarray, np.ndarray]:
        return _mean_and_error(self.gyration_radius)

    def summary(self) -> dict:
        kinetic, kinetic_err = self.mean_kinetic_energy()
        radius, radius_err = self.mean_gyration_radius()
        classical = 1.5 * units.kB * self.settings.temperature_K
        return {
            "settings": asdict(self.settings),
            "samples": len(self.kinetic_cv),
            "atoms": [
                {"index": i, "symbol": s, "mass_amu": float(m),
                 "kinetic_energy_eV": float(k), "kinetic_energy_error_eV": float(dk),
                 "kinetic_over_classical": float(k / classical),
                 "gyration_radius_A": float(r), "gyration_radius_error_A": float(dr)}
                for i, (s, m, k, dk, r, dr) in enumerate(zip(
                    self.symbols, self.masses, kinetic, kinetic_err, radius, radius_err,
                    strict=True))
            ],
            "mean_bead_potential_eV": self.bead_potentials.mean(axis=0).tolist(),
        }  # fmt: skip


def _mean_and_error(samples: np.ndarray, blocks: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and its standard error from ``blocks`` block averages."""
    mean = samples.mean(axis=0)
    n = len(samples) // blocks
    if n == 0:
        return mean, np.full_like(mean, np.nan)
    block_means = samples[: n * blocks].reshape(blocks, n, *samples.shape[1:]).mean(axis=1)
    return mean, block_means.std(axis=0, ddof=1) / np.sqrt(blocks)


def _beads_xml(atoms: Atoms, masses: np.ndarray, n_beads: int) -> str:
    """i-PI's <beads> and <cell> blocks: ``n_beads`` copies of ``atoms``."""
    from ipi.engine.beads import Beads
    from ipi.engine.cell import Cell
    from ipi.inputs.beads import InputBeads
    from ipi.inputs.cell import InputCell
    from ipi.utils.units import unit_to_internal

    beads = Beads(nbeads=n_beads, natoms=len(atoms))
    positions = np.tile(atoms.positions.reshape(1, -1), (n_beads, 1))
    beads.q = positions * unit_to_internal("length", "angstrom", 1.0)
    beads.names = np.array(atoms.get_chemical_symbols())
    beads.m = masses * unit_to_internal("mass", "dalton", 1.0)
    cell_matrix = np.array(atoms.cell[:]) if atoms.cell.rank == 3 else np.eye(3) * 100.0
    cell = Cell(h=cell_matrix.T * unit_to_internal("length", "angstrom", 1.0))
    input_beads, input_cell = InputBeads(), InputCell()
    input_beads.store(beads)
    input_cell.store(cell)
    return input_beads.write("beads") + input_cell.write("cell")


def _forcefield_xml(name: str, template: str, key: str, batch: int = 1) -> str:
    path = ipi_driver.__file__
    return (
        f"<ffdirect name='{name}'><pes>custom</pes><pes_path>{path}</pes_path>"
        f"<batch_size>{batch}</batch_size>"
        f"<parameters>{{template: {template}, calculator: {key}}}</parameters></ffdirect>"
    )


def simulation_input(
    atoms: Atoms,
    masses: np.ndarray,
    settings: PIMDSettings,
    key: str,
    restrained: bool,
    batched: bool = False,
) -> str:
    """The i-PI input (XML) of a PIMD run of ``atoms``; the potential is registered under
    ``key`` (``batched``: all beads in one request), the centroid restraint (if any) under
    ``key + '-restraint'``."""
    T, dt, tau = settings.temperature_K, settings.timestep_fs, settings.tau_fs
    thermostat = settings.thermostat
    if thermostat in THERMOSTATS:
        thermostat = (
            f"<thermostat mode='{thermostat}'><tau units='femtosecond'>{tau}</tau>"
            "<pile_lambda>0.5</pile_lambda></thermostat>"
        )
    forcefields = _forcefield_xml("potential", "template.xyz", key,
                                  settings.beads if batched else 1)  # fmt: skip
    forces = "<force forcefield='potential'></force>"
    if restrained:
        forcefields += _forcefield_xml("restraint", "template.xyz", key + "-restraint")
        forces += "<force forcefield='restraint' nbeads='1'></force>"
    return f"""<simulation verbosity='quiet' safe_stride='{settings.checkpoint_every}'>
<prng><seed>{settings.seed}</seed></prng>
{forcefields}
<output prefix='pimd'><checkpoint stride='{settings.checkpoint_every}'/></output>
<system>
<initialize nbeads='{settings.beads}'>
<velocities mode='thermal' units='kelvin'>{T}</velocities></initialize>
{_beads_xml(atoms, masses, settings.beads)}
<forces>{forces}</forces>
<ensemble><temperature units='kelvin'>{T}</temperature></ensemble>
<motion mode='dynamics'><fixcom>{len(atoms) > 1}</fixcom><dynamics mode='nvt'>
<timestep units='femtosecond'>{dt}</timestep>{thermostat}</dynamics></motion>
</system>
</simulation>
"""


_SAMPLES = ("kinetic_cv", "gyration_radius", "bead_potentials", "centroid_cv")


def _sample(simulation, n_atoms: int, restraint: HarmonicRestraint | None) -> dict:
    kinetic = [simulation.properties(f"kinetic_cv(atom={i})") for i in range(n_atoms)]
    radius = [simulation.properties(f"r_gyration(atom={i})") for i in range(n_atoms)]
    beads = simulation.get_structures()
    beads = beads if isinstance(beads, list) else [beads]
    potentials = [b.get_potential_energy() for b in beads]
    cv = np.nan
    if restraint is not None:
        centroid = beads[0].copy()
        centroid.positions = np.mean([b.positions for b in beads], axis=0)
        cv = restraint.cv.value(centroid)
    return {"kinetic_cv": kinetic, "gyration_radius": radius,
            "bead_potentials": potentials, "centroid_cv": cv}  # fmt: skip


def run_pimd(
    potential: Calculator,
    atoms: Atoms,
    settings: PIMDSettings,
    directory: str | Path,
    *,
    masses=None,
    restraint: HarmonicRestraint | None = None,
    progress: bool = True,
) -> PIMDResult:
    """Path-integral MD of ``atoms`` on ``potential`` (any ASE calculator, e.g.
    ``load_calculator("model.pt")``, whose ``energies_and_forces`` then evaluates all beads
    in one batched pass) with i-PI, in ``directory`` (resumed when it holds the same run).
    ``masses``: amu per atom (isotopes), default ``atoms.get_masses()``.
    ``restraint``: a harmonic restraint on the centroid's CV (umbrella sampling)."""
    try:
        from ipi.scripting import InteractiveSimulation
    except ImportError:
        raise MlpotInputError("path-integral MD needs i-PI: pip install 'mlpot[ipi]'") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    masses = _masses(atoms, masses)
    if restraint is not None:
        restraint.cv.check_atoms(atoms)
    key = f"mlpot-{id(potential)}-{os.getpid()}"
    # a calculator that evaluates many structures at once gets all beads in one request
    batched = callable(getattr(potential, "energies_and_forces", None))
    xml = simulation_input(atoms, masses, settings, key, restraint is not None, batched)
    fingerprint = _fingerprint(atoms, masses, settings, restraint)
    state = _resume(directory, fingerprint)
    ipi_driver.register(key, potential)
    if restraint is not None:
        ipi_driver.register(key + "-restraint", RestraintCalculator(restraint))
    cwd = os.getcwd()
    try:
        os.chdir(directory)  # i-PI reads the template and writes its files here
        if state is None:
            atoms.write("template.xyz")
        simulation = _start(InteractiveSimulation, state, xml, key)
        samples = _drive(simulation, settings, state, len(atoms), restraint, progress,
                         fingerprint)  # fmt: skip
    finally:
        os.chdir(cwd)
        ipi_driver.unregister(key)
        ipi_driver.unregister(key + "-restraint")
    return PIMDResult(settings, atoms.get_chemical_symbols(), masses,
                      *(np.asarray(samples[k], dtype=float) for k in _SAMPLES),
                      directory=directory)  # fmt: skip


def _masses(atoms: Atoms, masses) -> np.ndarray:
    if masses is None:
        return atoms.get_masses().astype(float)
    masses = np.asarray(masses, dtype=float)
    if masses.shape != (len(atoms),) or not np.all(masses > 0):
        raise MlpotInputError(
            f"masses: one positive mass (amu) per atom needed, {len(atoms)} atoms, "
            f"got shape {masses.shape}",
            field="masses",
        )
    return masses


def _fingerprint(atoms, masses, settings, restraint) -> str:
    """What makes two runs the same run (for resuming)."""
    return json.dumps({
        "settings": asdict(settings),
        "numbers": atoms.numbers.tolist(),
        "masses": np.round(masses, 8).tolist(),
        "positions": np.round(atoms.positions, 8).tolist(),
        "restraint": None if restraint is None else [str(restraint.cv), restraint.centre,
                                                     restraint.k],
    })  # fmt: skip


def _resume(directory: Path, fingerprint: str) -> dict | None:
    """The saved state of the same run in ``directory``, or None to start afresh."""
    path = directory / STATE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    if str(state["fingerprint"]) != fingerprint:
        raise MlpotInputError(
            f"{directory} holds a PIMD run with other settings; use another directory",
            source=str(path),
        )
    return state


def _safe_restart(text: str, source: str) -> str:
    """i-PI's restart input from a run directory, refused unless its force fields are the
    ones mlpot writes (in-process ``ffdirect`` with the ``custom`` PES), and pointed at this
    installation's driver: i-PI imports the file a ``pes_path`` names, so a restart from
    elsewhere must not choose it."""
    kinds = set(re.findall(r"<(ff\w+)\b", text))
    pes = set(re.findall(r"<pes>\s*(\S+?)\s*</pes>", text))
    if kinds - {"ffdirect"} or pes - {"custom"}:
        raise MlpotInputError(
            f"the saved i-PI state names force fields mlpot does not write "
            f"({', '.join(sorted((kinds - {'ffdirect'}) | (pes - {'custom'})))}); refusing to "
            "resume from it",
            source=source,
        )
    return re.sub(r"<pes_path>.*?</pes_path>", f"<pes_path>{ipi_driver.__file__}</pes_path>",
                  text, flags=re.S)  # fmt: skip


def _start(InteractiveSimulation, state: dict | None, xml: str, key: str):
    """A new i-PI simulation, or the saved one (its force fields renamed to ``key``)."""
    text = xml
    if state is not None:
        text = re.sub(r"calculator: mlpot-\d+-\d+(-restraint)?",
                      lambda m: f"calculator: {key}{m.group(1) or ''}",
                      _safe_restart(str(state["restart"]), STATE))  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        simulation = InteractiveSimulation(text)
    simulation.threading = False  # one system, one force field: threads only add waiting
    return simulation


def _drive(simulation, settings, state, n_atoms, restraint, progress, fingerprint) -> dict:
    total = settings.equilibration_steps + settings.steps
    step = 0 if state is None else int(state["step"])
    samples = {k: [] for k in _SAMPLES}
    if state is not None:
        samples = {k: list(state[k]) for k in _SAMPLES}
    bar = tqdm(total=total, initial=step, desc="PIMD steps", disable=not progress)
    while step < total:
        stride = settings.sample_every - step % settings.sample_every
        stride = min(stride, total - step)
        _advance(simulation, stride)
        step += stride
        bar.update(stride)
        if step > settings.equilibration_steps and step % settings.sample_every == 0:
            for k, v in _sample(simulation, n_atoms, restraint).items():
                samples[k].append(v)
        if step % settings.checkpoint_every < stride or step == total:
            _checkpoint(simulation, step, samples, fingerprint)
    bar.close()
    return samples


def _advance(simulation, steps: int) -> None:
    """``steps`` i-PI steps without its per-call restart file and outputs (i-PI's
    ``InteractiveSimulation.run`` writes both on every call, ~20 ms)."""
    from ipi.engine.simulation import Simulation

    simulation.tsteps = simulation.step + steps
    with contextlib.redirect_stdout(io.StringIO()):
        Simulation.run(simulation, write_outputs=False)
    simulation.step += 1  # as InteractiveSimulation.run: the next step to run


def _checkpoint(simulation, step: int, samples: dict, fingerprint: str) -> None:
    """i-PI's restart input and the samples so far, in one file written atomically."""
    simulation.chk.write(store=True)
    restart = Path("RESTART").read_text()
    arrays = {k: np.asarray(v, dtype=float) for k, v in samples.items()}
    np.savez(STATE + ".tmp.npz", step=step, restart=restart, fingerprint=fingerprint, **arrays)
    os.replace(STATE + ".tmp.npz", STATE)
