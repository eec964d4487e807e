"""Umbrella sampling: windows of harmonic restraints along a collective variable, run with
the project's MD (ASE's Langevin), durable and in parallel.

A run lives in one directory::

    plan.json             the windows (CV, centres, k, temperature, steps, ...)
    starts.npz            one starting structure per window (restrained relaxations)
    windows/window_007.npz  samples of window 7 so far, its MD state, and ``done``

Every ``checkpoint_every`` steps a window writes its samples and positions/momenta
(atomically), so a killed run resumes each window where it stopped; a finished window is
never run again. Windows are independent once their starting structures exist: they run in
parallel processes (``workers``) or on any ``concurrent.futures`` executor (e.g.
``dask.distributed.Client(...).get_executor()``); the potential then has to be a
checkpoint path or a picklable factory.

Recorded per sample (every ``sample_every`` steps after equilibration): the CV value, the
unbiased potential energy (eV) and, for an ensemble model, its calibrated ``energy_std``;
every ``frame_every`` steps also the positions (Å) and the ensemble members' energies, for
reweighting to the oracle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS
from tqdm.auto import tqdm

from mlpot.apps.colvars import CollectiveVariable
from mlpot.apps.restraint import HarmonicRestraint, Restrained
from mlpot.errors import MlpotInputError
from mlpot.md.dynamics import make_dynamics, run_guarded, start_momenta

Potential = str | Path | Callable[[], Calculator]


@dataclass(frozen=True)
class UmbrellaPlan:
    """The windows: restraint centres along ``cv`` (its units), force constant ``k``
    (eV/unit²), temperature (K), time step (fs), and how many steps each window runs."""

    cv: CollectiveVariable
    centres: tuple[float, ...]
    k: float
    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    equilibration_steps: int = 500
    steps: int = 2000
    sample_every: int = 5
    frame_every: int = 50
    friction_per_fs: float = 0.02
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.centres) < 2:
            raise MlpotInputError("umbrella sampling needs at least 2 windows", field="windows")
        if not self.k > 0:
            raise MlpotInputError(f"the force constant must be > 0, got {self.k}", field="k")
        for name in ("steps", "sample_every", "frame_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise MlpotInputError(f"{name} must be >= 1", field=name)
        if self.equilibration_steps < 0 or not self.temperature_K > 0:
            raise MlpotInputError("equilibration steps >= 0 and temperature > 0 K needed")

    @classmethod
    def evenly(cls, cv: CollectiveVariable, start: float, stop: float, windows: int, **kwargs):
        """``windows`` centres evenly from ``start`` to ``stop`` (inclusive; for a dihedral
        over a whole turn, ``stop`` is ``start`` again and is left out)."""
        whole_turn = cv.periodic and abs(abs(stop - start) - 2 * np.pi) < 1e-6
        centres = np.linspace(start, stop, windows, endpoint=not whole_turn)
        return cls(cv, tuple(float(c) for c in centres), **kwargs)

    def restraint(self, window: int) -> HarmonicRestraint:
        return HarmonicRestraint(self.cv, self.centres[window], self.k)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cv"] = str(self.cv)
        data["centres"] = list(self.centres)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> UmbrellaPlan:
        from mlpot.apps.colvars import parse_cv

        values = dict(data)
        values["cv"] = parse_cv(values["cv"])
        values["centres"] = tuple(values["centres"])
        return cls(**values)


@dataclass
class WindowSamples:
    """What one window recorded (see the module docstring), after equilibration."""

    centre: float
    cv: np.ndarray  # (n_samples,)
    energy: np.ndarray  # (n_samples,) unbiased potential energy, eV
    energy_std: np.ndarray  # (n_samples,) eV; NaN when the potential gives none
    frame_positions: np.ndarray  # (n_frames, n_atoms, 3) Å
    frame_cv: np.ndarray  # (n_frames,)
    frame_energy: np.ndarray  # (n_frames,) eV
    frame_energy_std: np.ndarray  # (n_frames,) eV
    frame_member_energy: np.ndarray  # (n_frames, K) eV, ensemble members; K = 0 without


@dataclass
class UmbrellaRun:
    """A finished umbrella run: the plan, the atoms (numbers, masses, cell), the windows."""

    plan: UmbrellaPlan
    atoms: Atoms
    windows: list[WindowSamples] = field(default_factory=list)
    directory: Path | None = None


def make_potential(potential: Potential) -> Calculator:
    """The ASE calculator of ``potential``: a checkpoint path (loaded with its calibration,
    without force uncertainty or domain scores) or a factory called once."""
    if isinstance(potential, str | Path):
        from mlpot.calculators.ase_calculator import load_calculator

        return load_calculator(potential, force_uncertainty=False, domain_scores=False)
    return potential()


def _window_path(directory: Path, window: int) -> Path:
    return directory / "windows" / f"window_{window:03d}.npz"


def _save_atomic(path: Path, **arrays) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _check_plan(directory: Path, plan: UmbrellaPlan, atoms: Atoms) -> None:
    """Write plan.json, or check that a resumed run asks for the same windows."""
    path = directory / "plan.json"
    wanted = {**plan.to_dict(), "numbers": atoms.numbers.tolist()}
    if path.is_file():
        found = json.loads(path.read_text())
        differ = sorted(k for k in wanted if found.get(k) != wanted[k])
        if differ:
            raise MlpotInputError(
                f"{directory} holds an umbrella run with other settings ({', '.join(differ)}); "
                "use another output directory or the same settings to resume it",
                source=str(path),
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1))


def starting_structures(
    atoms: Atoms, potential: Calculator, plan: UmbrellaPlan, *, fmax: float = 0.05
) -> np.ndarray:
    """One structure per window, ``(n_windows, n_atoms, 3)`` Å: restrained relaxations,
    window after window, each starting where the previous one ended (the structure is
    pulled along the CV without MD)."""
    current = atoms.copy()
    starts = []
    for window in range(len(plan.centres)):
        current.calc = Restrained(potential, plan.restraint(window))
        BFGS(current, logfile=None).run(fmax=fmax, steps=300)
        starts.append(current.positions.copy())
    return np.array(starts)


def _restore(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def run_window(
    directory: str | Path,
    window: int,
    atoms: Atoms,
    plan: UmbrellaPlan,
    potential: Potential,
) -> int:
    """Run (or resume) window ``window`` of ``plan`` from the structure ``atoms``; its
    samples are written to ``windows/window_NNN.npz``. Returns ``window``."""
    path = _window_path(Path(directory), window)
    state = _restore(path)
    if state is not None and bool(state["done"]):
        return window
    restraint = plan.restraint(window)
    atoms = atoms.copy()
    atoms.calc = Restrained(make_potential(potential), restraint)
    total = plan.equilibration_steps + plan.steps
    record: dict[str, list] = {key: [] for key in _SAMPLE_KEYS}
    step = 0
    rng = np.random.default_rng([plan.seed, window])
    if state is None:
        start_momenta(atoms, plan.temperature_K, rng=rng, zero_rotation=len(atoms) > 2)
    else:
        step = int(state["step"])
        atoms.positions = state["positions"]
        atoms.set_momenta(state["momenta"])
        record = {key: list(state.get(key, [])) for key in _SAMPLE_KEYS}
        rng = np.random.default_rng([plan.seed, window, step])  # fresh noise after a resume
    dynamics = make_dynamics(
        atoms,
        thermostat="langevin",
        timestep_fs=plan.timestep_fs,
        temperature_K=plan.temperature_K,
        friction_per_fs=plan.friction_per_fs,
        rng=rng,
    )
    while step < total:
        chunk = min(plan.checkpoint_every, total - step)
        for _ in range(chunk):
            run_guarded(dynamics, 1, f"umbrella window {window} (centre {restraint.centre:g})")
            step += 1
            if step > plan.equilibration_steps:
                _record(record, atoms, step - plan.equilibration_steps, plan)
        _save_atomic(
            path,
            done=step >= total,
            step=step,
            positions=atoms.positions,
            momenta=atoms.get_momenta(),
            **{key: np.asarray(value, dtype=float) for key, value in record.items()},
        )
    return window


_SAMPLE_KEYS = ("cv", "energy", "energy_std", "frame_positions", "frame_cv", "frame_energy",
                "frame_energy_std", "frame_member_energy")  # fmt: skip


def _record(record: dict[str, list], atoms: Atoms, step: int, plan: UmbrellaPlan) -> None:
    """Append the sample of the current step (the calculator's results hold it)."""
    if step % plan.sample_every and step % plan.frame_every:
        return
    results = atoms.calc.results
    std = results.get("energy_std", np.nan)
    if step % plan.sample_every == 0:
        record["cv"].append(results["cv"])
        record["energy"].append(results["unbiased_energy"])
        record["energy_std"].append(std)
    if step % plan.frame_every == 0:
        record["frame_positions"].append(atoms.positions.copy())
        record["frame_cv"].append(results["cv"])
        record["frame_energy"].append(results["unbiased_energy"])
        record["frame_energy_std"].append(std)
        record["frame_member_energy"].append(results.get("member_energy", np.zeros(0)))


def _rows(values: np.ndarray | None, n: int) -> np.ndarray:
    """``values`` as ``(n, K)`` rows (``K = 0`` when there are none)."""
    if values is None or values.size == 0:
        return np.zeros((n, 0))
    return values.reshape(n, -1)


def load_windows(directory: str | Path) -> UmbrellaRun:
    """The run in ``directory`` (finished windows only; refuses an unfinished run)."""
    directory = Path(directory)
    plan_path = directory / "plan.json"
    if not plan_path.is_file():
        raise MlpotInputError(f"{directory} holds no umbrella run (no plan.json)")
    data = json.loads(plan_path.read_text())
    numbers = data.pop("numbers")
    plan = UmbrellaPlan.from_dict(data)
    with np.load(directory / "starts.npz", allow_pickle=False) as starts:
        atoms = Atoms(numbers=numbers, positions=starts["positions"][0])
        atoms.cell, atoms.pbc = starts["cell"], starts["pbc"]
    run = UmbrellaRun(plan, atoms, directory=directory)
    for window, centre in enumerate(plan.centres):
        state = _restore(_window_path(directory, window))
        if state is None or not bool(state["done"]):
            raise MlpotInputError(
                f"{directory}: window {window} (centre {centre:g}) has not finished; "
                "run the umbrella sampling again to resume it",
                source=str(_window_path(directory, window)),
            )
        n_atoms = len(atoms)
        run.windows.append(
            WindowSamples(
                centre=centre,
                cv=state["cv"],
                energy=state["energy"],
                energy_std=state["energy_std"],
                frame_positions=state["frame_positions"].reshape(-1, n_atoms, 3),
                frame_cv=state["frame_cv"],
                frame_energy=state["frame_energy"],
                frame_energy_std=state["frame_energy_std"],
                frame_member_energy=_rows(state.get("frame_member_energy"), len(state["frame_cv"])),
            )
        )
    return run


def run_umbrella(
    potential: Potential,
    atoms: Atoms,
    plan: UmbrellaPlan,
    directory: str | Path,
    *,
    workers: int = 1,
    executor: Executor | None = None,
    progress: bool = True,
) -> UmbrellaRun:
    """Umbrella sampling of ``atoms`` on ``potential`` as ``plan`` says, in ``directory``
    (resumed when it already holds the same run). Windows run one after another
    (``workers=1``), in ``workers`` local processes, or on ``executor``."""
    directory = Path(directory)
    plan.cv.check_atoms(atoms)
    _check_plan(directory, plan, atoms)
    (directory / "windows").mkdir(exist_ok=True)
    starts_path = directory / "starts.npz"
    if not starts_path.is_file():
        starts = starting_structures(atoms, make_potential(potential), plan)
        _save_atomic(starts_path, positions=starts, cell=atoms.cell[:], pbc=atoms.pbc)
    with np.load(starts_path, allow_pickle=False) as data:
        starts = data["positions"]
    todo = [w for w in range(len(plan.centres)) if not _finished(directory, w)]
    bar = tqdm(total=len(plan.centres), initial=len(plan.centres) - len(todo),
               desc="umbrella windows", disable=not progress)  # fmt: skip
    window_atoms = [_with_positions(atoms, starts[w]) for w in range(len(plan.centres))]
    if executor is None and workers <= 1:
        for window in todo:
            run_window(directory, window, window_atoms[window], plan, potential)
            bar.update()
    else:
        _run_parallel(directory, todo, window_atoms, plan, potential, workers, executor, bar)
    bar.close()
    return load_windows(directory)


def _finished(directory: Path, window: int) -> bool:
    state = _restore(_window_path(directory, window))
    return state is not None and bool(state["done"])


def _with_positions(atoms: Atoms, positions: np.ndarray) -> Atoms:
    copy = atoms.copy()
    copy.calc = None
    copy.positions = positions
    return copy


def _run_parallel(
    directory: Path,
    todo: Sequence[int],
    window_atoms: list[Atoms],
    plan: UmbrellaPlan,
    potential: Potential,
    workers: int,
    executor: Executor | None,
    bar,
) -> None:
    own = executor is None
    if own:
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        futures = [
            executor.submit(run_window, directory, w, window_atoms[w], plan, potential)
            for w in todo
        ]
        for future in as_completed(futures):
            future.result()
            bar.update()
    finally:
        if own:
            executor.shutdown(cancel_futures=True)
