"""Attachment barriers for crystal growth: a learned copper potential against EMT on a
stepped Cu(100) surface (issue 19).

Eight adatom processes on the default :func:`mlpot.apps.growth_surface.stepped_surface` (10 x 6
cells, four layers, the lowest two fixed, a four-row strip with a three-atom kink): terrace
hops on both terraces, attachment to the step foot, diffusion along it, attachment into
the kink from the terrace and along the step, and the Ehrlich–Schwoebel descent over the
edge by hop and by exchange. Each path is a climbing-image NEB (5 images, fmax 0.03 eV/Å)
between end points relaxed to 0.02 eV/Å, run with the model and with EMT.

The model (unless ``--model``) is a Behler–Parrinello network trained on EMT-labelled
structures that contain adatom environments but none of the measured paths: a *smaller*
stepped slab (8 x 5 cells, three layers, three-row strip) and a flat Cu(100) slab with an
adatom at random lateral positions (hollows, bridges, tops, at the steps and kinks) and
random heights near contact, rattled; the same with one surface atom pushed 0.5–1.5 Å off
its site; Langevin MD (EMT, 600 K) of adatoms on both slabs; and rattled, strained bulk
cells.

Usage::

    python bench/growth.py                          # label, train (10 min), compare
    python bench/growth.py --model runs/cu/model.pt # compare a given checkpoint
    python bench/growth.py --processes terrace_hop,step_attachment --train-time 120

Prints the per-process table (coordination and layer of the adatom in the initial state,
at the saddle and in the final state; barriers of EMT and the model and their error;
reaction energies), the derived Ehrlich–Schwoebel barrier, and writes ``barriers.csv``
and ``barriers.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="compare this checkpoint (no training)")
    parser.add_argument(
        "--output", type=Path, default=Path(tempfile.gettempdir()) / "mlpot-growth-bench"
    )
    parser.add_argument("--processes", help="comma-separated names (default: all)")
    parser.add_argument("--train-time", type=float, default=600.0, help="seconds")
    parser.add_argument("--frames", type=int, default=320, help="training structures")
    parser.add_argument("--images", type=int, default=5, help="intermediate NEB images")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


ARGS = parse_args()
for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(name, str(ARGS.threads))  # before numpy starts its thread pool

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk, fcc100  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.constraints import FixAtoms  # noqa: E402

from mlpot.apps.growth import attachment_barriers  # noqa: E402
from mlpot.apps.growth_surface import stepped_surface  # noqa: E402
from mlpot.training import parse_config, run_training  # noqa: E402
from mlpot.validation.md import run_nvt  # noqa: E402

A_CU = 3.61  # Å
CONTACT = (2.3, 2.7)  # Å: nearest-neighbour distance of a placed adatom


def labelled(atoms: Atoms) -> Atoms:
    """A copy with EMT energy and forces attached (no stress: slabs are not 3D-periodic)."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def substrates() -> list[Atoms]:
    """Training slabs: a small stepped slab (kinked strip) and a flat Cu(100) slab."""
    small = stepped_surface(size=(8, 5), layers=3, fixed_layers=1, terrace_width=3).slab
    flat = fcc100("Cu", size=(4, 4, 4), a=A_CU, vacuum=10.0)
    flat.set_constraint(FixAtoms(indices=np.flatnonzero(flat.get_tags() >= 3)))
    return [small, flat]


def drop_adatom(slab: Atoms, rng: np.random.Generator) -> Atoms:
    """``slab`` plus an adatom at a random lateral position, lowered until its nearest
    neighbour is at a random distance in :data:`CONTACT` (any site: hollow, bridge, top)."""
    xy = rng.uniform(0, 1, 2) @ slab.cell.array[:2, :2]
    target = rng.uniform(*CONTACT)
    z = slab.positions[:, 2].max() + 4.0
    while z > slab.positions[:, 2].min():
        atoms = slab + Atoms("Cu", positions=[[*xy, z]])
        nearest = atoms.get_distances(len(slab), range(len(slab)), mic=True).min()
        if nearest <= target:
            return atoms
        z -= 0.05
    raise RuntimeError("adatom fell through the slab")


def movable(atoms: Atoms) -> np.ndarray:
    fixed = atoms.constraints[0].index if atoms.constraints else []
    return np.setdiff1d(np.arange(len(atoms)), fixed)


def rattled(atoms: Atoms, rng: np.random.Generator, stdev: float) -> Atoms:
    atoms = atoms.copy()
    free = movable(atoms)
    atoms.positions[free] += rng.normal(0.0, stdev, (len(free), 3))
    return atoms


def pushed(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """One random atom of the top two layers (adatom aside) moved 0.5-1.5 Å sideways and
    up to 0.8 Å up: vacancy-adatom pairs, exchange-like environments."""
    atoms = atoms.copy()
    z = atoms.positions[:-1, 2]
    top = np.flatnonzero(z > z.max() - 2.5)
    k = int(rng.choice(top))
    angle = rng.uniform(0, 2 * np.pi)
    step = rng.uniform(0.5, 1.5) * np.array([np.cos(angle), np.sin(angle), 0.0])
    atoms.positions[k] += step + [0.0, 0.0, rng.uniform(0.0, 0.8)]
    return atoms


def md_frames(atoms: Atoms, seed: int, count: int) -> list[Atoms]:
    """Snapshots of a 600 K Langevin run (EMT, 2 fs steps, one every 10 steps)."""
    run = run_nvt(
        atoms,
        EMT(),
        temperature_K=600.0,
        timestep_fs=2.0,
        friction_per_fs=0.02,
        equilibration_steps=50,
        steps=10 * count,
        sample_interval=10,
        seed=seed,
        stress=False,
        max_temperature_factor=5.0,
    )
    return [labelled(frame) for frame in run.frames[:count]]


def bulk_frames(count: int, rng: np.random.Generator) -> list[Atoms]:
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=A_CU, cubic=True) * (2, 2, 2)
        strain = np.eye(3) + rng.normal(0.0, 0.015, (3, 3))
        atoms.set_cell(atoms.cell @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(stdev=rng.uniform(0.03, 0.12), seed=int(rng.integers(1 << 30)))
        frames.append(labelled(atoms))
    return frames


def training_set(n_frames: int, seed: int) -> list[Atoms]:
    """EMT-labelled adatom structures (see the module docstring), about ``n_frames``."""
    rng = np.random.default_rng(seed)
    slabs = substrates()
    n_random, n_pushed, n_md = int(0.55 * n_frames), int(0.15 * n_frames), int(0.2 * n_frames)
    frames = []
    for k in range(n_random):
        atoms = drop_adatom(slabs[k % 2], rng)
        frames.append(labelled(rattled(atoms, rng, rng.uniform(0.01, 0.08))))
    for k in range(n_pushed):
        atoms = pushed(drop_adatom(slabs[k % 2], rng), rng)
        frames.append(labelled(rattled(atoms, rng, 0.03)))
    for k in range(4):
        start = drop_adatom(slabs[k % 2], rng)
        frames += md_frames(start, seed + k, n_md // 4)
    frames += bulk_frames(n_frames - len(frames), rng)
    return frames


def train(frames: list[Atoms], workdir: Path, seconds: float) -> Path:
    config = parse_config(
        {
            "data": {"validation_fraction": 0.1, "split_seed": ARGS.seed},
            "model": {"name": "bpnn", "cutoff": 4.5, "hidden": [32, 32]},
            "loss": {"energy_noise": 0.002, "forces_noise": 0.05},
            "training": {
                "epochs": 3000,
                "batch_size": 8,
                "learning_rate": 3e-3,
                "dtype": "float32",  # training speed; barriers are evaluated in float64
                "max_time_s": seconds,
                "early_stopping_patience": 80,
                "progress": False,
                "seed": ARGS.seed,
            },
            "fisher": {"structures": 0},
            "output": str(workdir / "run"),
        }
    )
    started = time.perf_counter()
    result = run_training(config, train=frames, log=lambda _: None)
    v = result.validation_metrics
    print(
        f"trained on {len(frames)} structures in {time.perf_counter() - started:.0f} s "
        f"({result.train.epochs_run} epochs, {result.train.stop_reason}): validation "
        f"energy RMSE {v['energy_per_atom']['rmse'] * 1e3:.2f} meV/atom, "
        f"force RMSE {v['forces']['rmse'] * 1e3:.1f} meV/Å",
        flush=True,
    )
    return result.model_path


def schwoebel(result) -> str:
    """Ehrlich–Schwoebel barrier: the lower descent minus the upper-terrace hop, eV."""
    names = {row.name for row in result.rows}
    if not {"upper_terrace_hop", "descent_hop", "descent_exchange"} <= names:
        return "Ehrlich-Schwoebel barrier: needs both descents and the upper terrace hop"
    figures = []
    for which in ("oracle", "model"):
        descent = min(
            getattr(result.row(n), which).barrier_eV for n in ("descent_hop", "descent_exchange")
        )
        figures.append(descent - getattr(result.row("upper_terrace_hop"), which).barrier_eV)
    return (
        f"Ehrlich-Schwoebel barrier (lower descent - upper terrace hop): EMT {figures[0]:.3f} eV, "
        f"model {figures[1]:.3f} eV, error {figures[1] - figures[0]:+.3f} eV"
    )


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    ARGS.output.mkdir(parents=True, exist_ok=True)
    model = ARGS.model
    if model is None:
        started = time.perf_counter()
        frames = training_set(ARGS.frames, ARGS.seed)
        atoms = sum(len(f) for f in frames)
        print(
            f"{len(frames)} EMT-labelled structures ({atoms} atoms) in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        model = train(frames, ARGS.output, ARGS.train_time)
    processes = ARGS.processes.split(",") if ARGS.processes else None
    started = time.perf_counter()
    result = attachment_barriers(
        model,
        "emt",
        processes=processes,
        images=ARGS.images,
        log=lambda line: print(line, flush=True),
    )
    print(f"\nbarriers in {time.perf_counter() - started:.0f} s; model {model}\n")
    print(result.table())
    print(schwoebel(result))
    for name in ("barriers.csv", "barriers.md"):
        print(f"wrote {result.write(ARGS.output / name)}")


if __name__ == "__main__":
    main()
