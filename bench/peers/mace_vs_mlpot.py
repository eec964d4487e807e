"""mlpot's ``mpnn`` against MACE, side by side: same data, same wall-clock budget, same CPU.

Data: ``aspirin_gfn2`` (GFN2-xTB). Both train on the 500 frames at 300 K, split once here
into the same 450 training and 50 validation frames, and are tested on the 300 K, 600 K and
1200 K sets. Both train with their own command line (``mlpot train`` with a YAML config,
MACE's ``mace_run_train``), in float32, as separate processes started together (by default)
and stopped after ``--budget-s`` seconds of wall time each; each tool keeps its best
(validation) model, which is what gets tested. MACE's stopped run is turned into a model
file by its own ``--restart_latest`` with zero further epochs (not counted).

Printed per model: energy (meV/atom) and force (meV/Å) RMSE on each test set, training
wall time and epochs, inference atom-steps per second (energy + forces, model only) on the
aspirin molecule (trained models) and on a periodic fcc Cu cell of 1000 atoms (untrained Cu
models of the same hyper-parameters), peak resident memory of each process; then the ratios
mlpot/MACE and PASS/FAIL of the targets:

* force RMSE of mlpot <= MACE's on each test set;
* inference throughput of mlpot >= 2x MACE's on aspirin and on Cu;
* linear scaling of mlpot: per-atom cost at 6912 atoms <= 1.5x that at 864 atoms (fastest
  step of each, as other processes on a shared machine only ever slow a step down).

Usage::

    python bench/peers/mace_vs_mlpot.py                      # 600 s each, ~30 min in all
    python bench/peers/mace_vs_mlpot.py --budget-s 120 --test-frames 200   # quick look
    python bench/peers/mace_vs_mlpot.py --infer-only --workdir DIR --device cuda \\
        --systems aspirin,cu1000,cu6912,cu32000 --threads 4      # a GPU, the trained models

Needs ``pip install -e .[peers]`` (mace-torch). The machine is shared: timings taken while
other work runs are noisy, which is one reason both trainings run at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# the shared data lie beside the repository: ../shared/data from its root
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "aspirin_gfn2"
TESTS = ("300K", "600K", "1200K")
TASKS = HERE / "peer_tasks.py"
RESULT_TAG = "RESULT "

#: mlpot's model and training options (the ``model:`` and ``training:`` config sections)
MLPOT_MODEL = {"name": "mpnn", "cutoff": 5.0, "channels": 64, "layers": 2, "l_max": 2}
MLPOT_TRAINING = {"batch_size": 4, "learning_rate": 3e-3, "ema_decay": 0.99, "lr_patience": 3}
#: MACE's command-line options: 2 layers, correlation 3, 32x0e+32x1o, l <= 3 edge harmonics
MACE_ARGS = [
    "--model=MACE",
    "--hidden_irreps=32x0e+32x1o",
    "--r_max=5.0",
    "--num_interactions=2",
    "--correlation=3",
    "--max_ell=3",
    "--batch_size=4",
    "--lr=0.01",
    "--scheduler_patience=3",  # the same plateau patience as mlpot's
    "--ema",
    "--ema_decay=0.99",
    "--amsgrad",
    "--E0s=average",
    "--energy_weight=1",
    "--forces_weight=100",
    "--seed=0",
]


# ---------------------------------------------------------------------------- data


def prepare_data(workdir: Path, test_frames: int) -> dict[str, Path]:
    """Write train/valid/test extxyz with labels under REF_energy / REF_forces."""
    import ase.io

    def write(frames, path: Path) -> Path:
        out = []
        for atoms in frames:
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            copy = atoms.copy()
            copy.calc = None
            copy.info["REF_energy"] = float(energy)
            copy.arrays["REF_forces"] = np.array(forces)
            out.append(copy)
        ase.io.write(path, out, format="extxyz")
        return path

    workdir.mkdir(parents=True, exist_ok=True)
    frames = ase.io.read(DATA / "aspirin_train_300K.xyz", index=":")
    order = np.random.default_rng(0).permutation(len(frames))
    n_valid = len(frames) // 10
    paths = {
        "train": write([frames[k] for k in order[n_valid:]], workdir / "train.xyz"),
        "valid": write([frames[k] for k in order[:n_valid]], workdir / "valid.xyz"),
    }
    for name in TESTS:
        test = ase.io.read(DATA / f"aspirin_test_{name}.xyz", index=f":{test_frames}")
        paths[name] = write(test, workdir / f"test_{name}.xyz")
    return paths


# ---------------------------------------------------------------------------- training


def environment(threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",  # MACE (e3nn 0.4.4) pickles under torch 2.6+
        "PYTHONWARNINGS": "ignore",
    }


def mlpot_command(paths: dict[str, Path], out: Path, budget_s: float) -> list[str]:
    import yaml

    config = {
        "data": {"train": str(paths["train"]), "validation": str(paths["valid"])},
        "model": MLPOT_MODEL,
        "training": {
            **MLPOT_TRAINING,
            "epochs": 100000,
            "early_stopping_patience": 100000,
            "max_time_s": budget_s,
            "dtype": "float32",
            "progress": False,
            "seed": 0,
        },
        "output": str(out / "run"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return [str(Path(sys.executable).with_name("mlpot")), "train", str(out / "config.yaml")]


def mace_command(paths: dict[str, Path], *, finish: bool = False) -> list[str]:
    """``mace_run_train``; ``finish`` turns the latest checkpoint into the model file."""
    args = [
        str(Path(sys.executable).with_name("mace_run_train")),
        "--name=mace",
        f"--train_file={paths['train']}",
        f"--valid_file={paths['valid']}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        "--device=cpu",
        "--default_dtype=float32",
        *MACE_ARGS,
    ]
    if finish:
        return [*args, "--restart_latest", "--max_num_epochs=0"]
    return [*args, "--max_num_epochs=100000", "--patience=100000"]


def start(command: list[str], cwd: Path, threads: int, log: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=environment(threads),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_at(process: subprocess.Popen, started: float, budget_s: float) -> dict:
    """Wait until the process ends or its budget is spent (then stop its process group);
    return wall time, whether it was stopped, and its peak RSS (MiB, from ``wait4``)."""
    wall, stopped = None, False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if not stopped and time.perf_counter() - started >= budget_s:
            wall, stopped = time.perf_counter() - started, True
            os.killpg(process.pid, signal.SIGTERM)
        time.sleep(0.2)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = wall if wall is not None else time.perf_counter() - started
    return {"wall_s": wall, "stopped_at_budget": stopped, "peak_rss_mb": usage.ru_maxrss / 1024}


def train_both(paths, workdir: Path, budget_s: float, threads: int, *, sequential: bool):
    """Train mlpot and MACE (together, or one after the other); return their records."""
    jobs = {
        "mlpot": (mlpot_command(paths, workdir / "mlpot", budget_s), workdir / "mlpot"),
        "mace": (mace_command(paths), workdir / "mace"),
    }
    records, running = {}, {}
    for name, (command, cwd) in jobs.items():
        running[name] = (
            start(command, cwd, threads, workdir / f"train_{name}.log"),
            time.perf_counter(),
        )
        if sequential:
            records[name] = stop_at(*running.pop(name), budget_s)
    for name, (process, started) in running.items():
        records[name] = stop_at(process, started, budget_s)
    history = (workdir / "mlpot" / "run" / "history.jsonl").read_text().splitlines()
    records["mlpot"]["epochs"] = len(history)
    records["mlpot"]["model"] = str(workdir / "mlpot" / "run" / "model.pt")
    mace_log = (workdir / "train_mace.log").read_text()
    records["mace"]["epochs"] = mace_log.count("INFO: Epoch ")
    if not list((workdir / "mace").glob("checkpoints/*.pt")):
        raise RuntimeError("MACE finished no epoch within the budget: raise --budget-s")
    finish = subprocess.run(
        mace_command(paths, finish=True),
        cwd=workdir / "mace",
        env=environment(threads),
        capture_output=True,
        text=True,
    )
    (workdir / "finish_mace.log").write_text(finish.stdout + finish.stderr)
    records["mace"]["model"] = str(workdir / "mace" / "mace.model")
    return records


# ---------------------------------------------------------------------------- measuring


def task(args: list[str], threads: int) -> dict:
    """Run one ``peer_tasks.py`` task in its own process and return its JSON result."""
    done = subprocess.run(
        [sys.executable, str(TASKS), *args],
        env=environment(threads),
        capture_output=True,
        text=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(f"task {args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def test_errors(engine: str, model: str, paths, workdir: Path, threads: int) -> dict:
    """Energy per atom (meV/atom) and force component (meV/Å) RMSE on each test set."""
    import ase.io

    out = {}
    for name in TESTS:
        npz = workdir / f"pred_{engine}_{name}.npz"
        task(
            ["predict", engine, model, str(paths[name]), str(npz), "--threads", str(threads)],
            threads,
        )
        pred = np.load(npz)
        frames = ase.io.read(paths[name], index=":")
        n_atoms = np.array([len(a) for a in frames])
        energy = np.array([a.info["REF_energy"] for a in frames])
        forces = np.concatenate([a.arrays["REF_forces"] for a in frames])
        energy_error = (pred["energy"] - energy) / n_atoms  # (F,) eV/atom
        out[name] = {
            "energy_rmse_mev_atom": 1e3 * float(np.sqrt(np.mean(energy_error**2))),
            "forces_rmse_mev_a": 1e3 * float(np.sqrt(np.mean((pred["forces"] - forces) ** 2))),
        }
    return out


def throughput(
    engine: str, model: str, systems: list[str], device: str, threads: int, extra: list[str]
) -> dict:
    """Inference figures of ``engine`` on each system, each in its own process."""
    args = ["--device", device, "--threads", str(threads), *extra]
    return {s: task(["infer", engine, s, model, *args], threads) for s in systems}


# ---------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: dict) -> list[str]:
    """The table: one row per figure, mlpot | MACE | mlpot/MACE | target."""
    mine, peer = results["mlpot"], results["mace"]
    rows = [("figure", "mlpot", "MACE", "mlpot/MACE", "target")]

    def add(label, a, b, fmt, target=""):
        ratio = a / b if b else float("nan")
        rows.append((label, format(a, fmt), format(b, fmt), f"{ratio:.3f}", target))

    for name in TESTS:
        a, b = mine["test"][name], peer["test"][name]
        add(
            f"energy RMSE {name} (meV/atom)",
            a["energy_rmse_mev_atom"],
            b["energy_rmse_mev_atom"],
            ".2f",
        )
        ok = a["forces_rmse_mev_a"] <= b["forces_rmse_mev_a"]
        add(
            f"force RMSE {name} (meV/Å)",
            a["forces_rmse_mev_a"],
            b["forces_rmse_mev_a"],
            ".1f",
            f"<= 1: {verdict(ok)}",
        )
    if "train" in mine:
        add("training wall time (s)", mine["train"]["wall_s"], peer["train"]["wall_s"], ".0f")
        add("training epochs", mine["train"]["epochs"], peer["train"]["epochs"], "d")
        add(
            "training peak RSS (MiB)",
            mine["train"]["peak_rss_mb"],
            peer["train"]["peak_rss_mb"],
            ".0f",
        )
    for system in ("aspirin", "cu1000"):
        a, b = mine["infer"][system], peer["infer"][system]
        ok = a["atom_steps_per_s"] >= 2 * b["atom_steps_per_s"]
        add(
            f"{system} atom-steps/s ({a['device']})",
            a["atom_steps_per_s"],
            b["atom_steps_per_s"],
            ".0f",
            f">= 2: {verdict(ok)}",
        )
        add(f"{system} peak RSS (MiB)", a["peak_rss_mb"], b["peak_rss_mb"], ".0f")
        if "peak_gpu_mb" in a:
            add(f"{system} peak GPU memory (MiB)", a["peak_gpu_mb"], b["peak_gpu_mb"], ".0f")
    add(
        "parameters (aspirin model)",
        mine["infer"]["aspirin"]["parameters"],
        peer["infer"]["aspirin"]["parameters"],
        "d",
    )
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    small, large = mine["infer"]["cu864"], mine["infer"]["cu6912"]
    # fastest step of each: the machine is shared, and a busy neighbour only slows steps down
    growth = (large["min_s"] / large["atoms"]) / (small["min_s"] / small["atoms"])
    median = (large["median_s"] / large["atoms"]) / (small["median_s"] / small["atoms"])
    lines.append(
        f"mlpot per-atom cost 6912 / 864 atoms: {growth:.2f} fastest step, {median:.2f} median "
        f"(<= 1.5: {verdict(growth <= 1.5)})"
    )
    return lines


def throughput_table(results: dict, systems: list[str]) -> list[str]:
    """Inference only: atom-steps/s and peak memory of both models per system."""
    rows = [("system", "atoms", "mlpot atom-steps/s", "MACE atom-steps/s", "ratio", "peak memory")]
    for system in systems:
        a, b = results["mlpot"]["infer"][system], results["mace"]["infer"][system]
        memory = "peak_gpu_mb" if "peak_gpu_mb" in a else "peak_rss_mb"
        ratio = a["atom_steps_per_s"] / b["atom_steps_per_s"]
        rows.append(
            (
                f"{system} ({a['device']})",
                str(a["atoms"]),
                f"{a['atom_steps_per_s']:.0f}",
                f"{b['atom_steps_per_s']:.0f}",
                f"{ratio:.2f} (>= 2: {verdict(ratio >= 2)})",
                f"{a[memory]:.0f} / {b[memory]:.0f} MiB ({memory.removesuffix('_mb')})",
            )
        )
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=600.0, help="training wall time each")
    parser.add_argument("--test-frames", type=int, default=1000, help="frames per test set")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlpot-bench-peers"))
    parser.add_argument("--sequential", action="store_true", help="train one after the other")
    parser.add_argument(
        "--infer-only", action="store_true", help="only throughput, of the workdir's models"
    )
    parser.add_argument("--systems", default="aspirin,cu1000", help="with --infer-only")
    parser.add_argument("--device", default="cpu", help="inference device (cpu, cuda)")
    parser.add_argument("--json", type=Path, help="write all figures here")
    args = parser.parse_args(argv)

    workdir = args.workdir.resolve()
    results = {"mlpot": {}, "mace": {}}
    models = {
        "mlpot": str(workdir / "mlpot" / "run" / "model.pt"),
        "mace": str(workdir / "mace" / "mace.model"),
    }
    aspirin = ["--aspirin", str(workdir / "test_300K.xyz")]
    if args.infer_only:
        systems = args.systems.split(",")
        for engine, model in models.items():
            results[engine]["infer"] = throughput(
                engine, model, systems, args.device, args.threads, aspirin
            )
        lines = throughput_table(results, systems)
    else:
        paths = prepare_data(workdir, args.test_frames)
        trained = train_both(
            paths, workdir, args.budget_s, args.threads, sequential=args.sequential
        )
        for engine, model in models.items():
            results[engine]["train"] = trained[engine]
            print(f"{engine}: trained {trained[engine]}", flush=True)
            results[engine]["test"] = test_errors(engine, model, paths, workdir, args.threads)
            systems = ["aspirin", "cu1000"] + (["cu864", "cu6912"] if engine == "mlpot" else [])
            results[engine]["infer"] = throughput(
                engine, model, systems, args.device, args.threads, aspirin
            )
            print(f"{engine}: measured", flush=True)
        lines = report(results)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "table": lines}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
