"""Subprocess workers of ``mace_vs_mlpot.py``: one measurement per process, one JSON line out.

Each task runs in a fresh process so that its peak resident memory (``ru_maxrss``) is its
own. Tasks::

    python bench/peers/peer_tasks.py infer ENGINE SYSTEM MODEL [--device D --threads T]
    python bench/peers/peer_tasks.py predict ENGINE MODEL DATA OUT.npz [--threads T]

``ENGINE`` is ``mlpot`` or ``mace``; ``MODEL`` a trained model of a molecule (mlpot
``model.pt`` or MACE ``.model``). ``SYSTEM`` is ``cuN`` (rattled fcc Cu of ``N`` atoms from
a cubic cell repeated
``(k, k, m)``; an *untrained* Cu model with the trained model's hyper-parameters — the cost
does not depend on the weights). ``infer`` times energy + forces (model only, the graph /
neighbour list built once outside the timed loop) and prints atom-steps per second. Any
other ``SYSTEM`` name (``aspirin``, ``ethanol``, ``molecule``) is the first frame of
``--molecule FILE`` with the trained model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

MOLECULE = None  # the molecule file: --molecule
CU_LATTICE, CU_RATTLE, SEED = 3.61, 0.02, 0
#: atoms -> repeats of the 4-atom cubic fcc cell
CU_REPEATS = {1000: (5, 5, 10), 864: (6, 6, 6), 6912: (12, 12, 12), 32000: (20, 20, 20)}
RESULT_TAG = "RESULT "


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def is_cu(system: str) -> bool:
    return system.startswith("cu") and system[2:].isdigit()


def structure(system: str, molecule: str | None = MOLECULE):
    """The ASE Atoms of ``cuN``, or of any other name the first frame of ``molecule``."""
    import ase.io
    from ase.build import bulk

    if not is_cu(system):
        if molecule is None:
            raise SystemExit(f"system {system}: give the molecule's file, --molecule FILE")
        return ase.io.read(molecule, index=0)
    n = int(system.removeprefix("cu"))
    atoms = bulk("Cu", "fcc", a=CU_LATTICE, cubic=True).repeat(CU_REPEATS[n])
    atoms.rattle(stdev=CU_RATTLE, seed=SEED)
    return atoms


# ------------------------------------------------------------------------------ mlpot


def mlpot_model(path: str, system: str, device: str, dtype=None):
    """The trained model, or for Cu an untrained one with the same hyper-parameters."""
    import torch

    from mlpot.models.checkpoint import load_checkpoint, load_model
    from mlpot.models.registry import build_model

    if not is_cu(system):
        return load_model(path, dtype=dtype or torch.float32, device=device)
    spec = load_checkpoint(path)["model"]
    learned = [t for t in spec.get("terms", [spec]) if t["name"] != "offsets"][0]
    torch.manual_seed(SEED)
    model = build_model({**learned, "elements": [29]})
    return model.to(device=device, dtype=dtype or torch.float32).eval()


def mlpot_step(model, atoms, device: str):
    """A closure computing energy + forces of ``atoms``, and the number of edges."""

    from mlpot.data.graph import EDGE_INDEX, atoms_to_graph, graph_to
    from mlpot.physics.derivatives import predict

    graph = atoms_to_graph(atoms, model.cutoff, dtype=next(model.parameters()).dtype)
    graph = graph_to(graph, device)

    def step():
        out = predict(model, graph, forces=True)
        return out["forces"].sum().item()

    return step, int(graph[EDGE_INDEX].shape[1])


# ------------------------------------------------------------------------------ MACE


def mace_model(path: str, system: str, device: str, dtype=None):
    """MACE's saved model, or for Cu the same architecture, untrained, for Cu only."""
    import numpy as np
    import torch
    from mace.tools.scripts_utils import extract_config_mace_model

    model = torch.load(path, map_location=device, weights_only=False)
    if is_cu(system):
        config = extract_config_mace_model(model)
        config.update(atomic_numbers=[29], num_elements=1, atomic_energies=np.zeros(1))
        torch.manual_seed(SEED)
        model = type(model)(**config)
    model = model.to(device=device, dtype=dtype or torch.float32)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def mace_batches(model, frames: list, batch_size: int, device: str):
    """MACE's own data pipeline: AtomicData batches of ``frames``."""
    from mace import data
    from mace.tools import torch_geometric, utils

    z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    dataset = [
        data.AtomicData.from_config(
            data.config_from_atoms(a), z_table=z_table, cutoff=float(model.r_max)
        )
        for a in frames
    ]
    loader = torch_geometric.dataloader.DataLoader(
        dataset=dataset, batch_size=batch_size, shuffle=False, drop_last=False
    )
    return [batch.to(device).to_dict() for batch in loader]


def mace_step(model, atoms, device: str):
    (batch,) = mace_batches(model, [atoms], 1, device)

    def step():
        out = model(batch, training=False, compute_force=True)
        return out["forces"].sum().item()

    return step, int(batch["edge_index"].shape[1])


# ------------------------------------------------------------------------------ tasks


def infer(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.set_default_dtype(dtype)
    atoms = structure(args.system, args.molecule)
    if args.engine == "mlpot":
        model = mlpot_model(args.model, args.system, args.device, dtype)
        step, n_edges = mlpot_step(model, atoms, args.device)
    else:
        model = mace_model(args.model, args.system, args.device, dtype)
        step, n_edges = mace_step(model, atoms, args.device)
    n_params = sum(p.numel() for p in model.parameters())
    baseline = peak_rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    times, spent = [], 0.0
    while len(times) < args.steps and (spent < args.budget_s or len(times) < 3):
        start = time.perf_counter()
        step()  # .item() synchronises the device
        times.append(time.perf_counter() - start)
        spent += times[-1]
    median = statistics.median(times)
    result = {
        "engine": args.engine,
        "system": args.system,
        "device": args.device,
        "threads": args.threads,
        "atoms": len(atoms),
        "edges": n_edges,
        "parameters": n_params,
        "steps": len(times),
        "median_s": median,
        "min_s": min(times),
        "atom_steps_per_s": len(atoms) / median,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def predict_frames(args) -> dict:
    """Predicted energies ``(F,)`` eV and forces ``(ΣN, 3)`` eV/Å of every frame, to npz."""
    import ase.io
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.set_default_dtype(dtype)
    frames = ase.io.read(args.data, index=":")
    energies, forces = [], []
    if args.engine == "mlpot":
        from mlpot.data.graph import atoms_to_graph, collate
        from mlpot.models.checkpoint import load_model
        from mlpot.physics.derivatives import predict

        model = load_model(args.model, dtype=dtype)
        for start in range(0, len(frames), args.batch_size):
            chunk = frames[start : start + args.batch_size]
            graph = collate([atoms_to_graph(a, model.cutoff, dtype=dtype) for a in chunk])
            out = predict(model, graph, forces=True)
            energies.append(out["energy"].detach().numpy())
            forces.append(out["forces"].detach().numpy())
    else:
        model = mace_model(args.model, "molecule", "cpu", dtype)
        for batch in mace_batches(model, frames, args.batch_size, "cpu"):
            out = model(batch, training=False, compute_force=True)
            energies.append(out["energy"].detach().numpy())
            forces.append(out["forces"].detach().numpy())
    np.savez(args.out, energy=np.concatenate(energies), forces=np.concatenate(forces))
    return {"engine": args.engine, "data": args.data, "frames": len(frames)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("infer")
    p.add_argument("engine", choices=["mlpot", "mace"])
    p.add_argument("system")
    p.add_argument("model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--budget-s", type=float, default=20.0)
    p.add_argument(
        "--molecule", "--aspirin", default=MOLECULE, help="extxyz whose first frame is timed"
    )
    p = sub.add_parser("predict")
    p.add_argument("engine", choices=["mlpot", "mace"])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-size", type=int, default=50)
    for p in sub.choices.values():
        p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    result = infer(args) if args.task == "infer" else predict_frames(args)
    result["peak_rss_mb"] = peak_rss_mb()
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # MACE's e3nn 0.4.4 pickles
    sys.exit(main())
