"""Batched MD in TorchSim vs looping ASE's Velocity Verlet over copies, same mlpot model.

For 1, 16 and 128 copies of a 64-atom cell (rattled fcc Cu, 4x4x1 cubic cells), NVE steps
of the same flagship ``mpnn`` (default hyper-parameters, cutoff 5 Å; untrained: the cost
does not depend on the weights, which are scaled down so the dynamics stay gentle) through
``mlpot.calculators.torchsim_model.TorchSimModel`` (every copy in one batched evaluation per
step) and through ``MlpotCalculator`` with ``ase.md.VelocityVerlet`` (one copy after
another). Prints atom-steps per second and the ratio, and writes them as JSON.

``--molecule FILE`` takes the first frame of FILE instead (free boundaries, each copy
rattled by 0.02 Å, 0.5 fs steps, an mpnn of 32 channels for its elements): the pattern of
mlpot's own trajectories (active-learning exploration, validation MD), a few small
molecules at a time.

    python bench/torchsim_md.py [--copies 1,16,128] [--steps 10] [--threads 2]
        [--dtype float32] [--device cpu] [--json out.json]
    python bench/torchsim_md.py --molecule ../shared/data/ethanol_dft/test_MD.xyz \
        --copies 1,2,4,16,64 --steps 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch_sim as ts
from ase import units
from ase.build import bulk
from ase.io import read
from ase.md.verlet import VelocityVerlet

from mlpot.calculators.ase_calculator import MlpotCalculator
from mlpot.calculators.torchsim_model import TorchSimModel
from mlpot.models.registry import build_model


def cells(n: int, molecule: str | None = None) -> list:
    out, first = [], read(molecule, index=0) if molecule else None
    for k in range(n):
        if molecule:
            atoms = first.copy()
            atoms.center(vacuum=6.0)
            atoms.pbc = False
            atoms.rattle(0.02, seed=k)
        else:
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (4, 4, 1)
            atoms.rattle(0.03, seed=k)
        out.append(atoms)
    return out


def torchsim_rate(sim: TorchSimModel, n: int, steps: int, device, dtype, molecule, dt_fs) -> float:
    systems = cells(n, molecule)
    state = ts.io.atoms_to_state(systems, torch.device(device), dtype)
    kT = torch.tensor(300.0 * ts.units.MetalUnits.temperature, dtype=dtype, device=device)
    dt = torch.tensor(dt_fs / 1000 * ts.units.MetalUnits.time, dtype=dtype, device=device)
    init, update = ts.nve(model=sim, dt=dt, kT=kT, seed=0)
    state = update(init(state))  # warm-up step
    start = time.perf_counter()
    for _ in range(steps):
        state = update(state)
    return n * len(systems[0]) * steps / (time.perf_counter() - start)


def ase_rate(model, n: int, steps: int, device, dtype, molecule, dt_fs) -> float:
    calc = MlpotCalculator(model, dtype=dtype, device=device)
    copies = cells(n, molecule)
    rng = np.random.default_rng(0)
    for atoms in copies:
        atoms.calc = calc
        masses = atoms.get_masses()[:, None]
        atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * 300.0))
    runs = [VelocityVerlet(atoms, timestep=dt_fs * units.fs) for atoms in copies]
    runs[0].run(1)  # warm-up step
    start = time.perf_counter()
    for run in runs:
        run.run(steps)
    return n * len(copies[0]) * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="1,16,128")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--molecule", default=None, help="first frame of FILE, not Cu cells")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    if args.molecule:
        elements = sorted(set(read(args.molecule, index=0).numbers.tolist()))
        spec = {"name": "mpnn", "elements": elements, "cutoff": 5.0, "channels": 32}
    else:
        spec = {"name": "mpnn", "elements": [29], "cutoff": 5.0}
    dt_fs = 0.5 if args.molecule else 2.0
    model = build_model(spec).to(dtype)
    model.energy_scale.fill_(0.05)
    sim = TorchSimModel(model, device=args.device, dtype=dtype)
    rows = []
    print(f"{'copies':>7} {'TorchSim atom-steps/s':>22} {'ASE loop atom-steps/s':>22} {'ratio':>7}")
    for n in (int(c) for c in args.copies.split(",")):
        batched = torchsim_rate(sim, n, args.steps, args.device, dtype, args.molecule, dt_fs)
        looped = ase_rate(model, n, args.steps, args.device, dtype, args.molecule, dt_fs)
        rows.append({"copies": n, "torchsim": batched, "ase_loop": looped})
        print(f"{n:>7} {batched:>22.0f} {looped:>22.0f} {batched / looped:>7.2f}", flush=True)
    if args.json:
        meta = {"threads": args.threads, "dtype": args.dtype, "device": args.device}
        meta["system"] = args.molecule or "fcc Cu, 64 atoms"
        with open(args.json, "w") as fh:
            json.dump({"settings": meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
