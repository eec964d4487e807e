"""mlpot's ``mpnn`` against MACE, side by side: same data, same wall-clock budget, same CPU.

Data (``--data``): ``aspirin_gfn2`` (GFN2-xTB, the default), ``ethanol_dft`` (PBE), or the
path of a folder laid out the same way. The training file is the one file of the folder
matching ``*train*.xyz``; the test sets are the ``*test*.xyz`` files whose frames carry
forces (ethanol_dft: ``test_MD.xyz``; its energy-only path files are for ``paths.py``).
Elements come from the data. The training frames are split once here, seeded, into the
same training and validation frames (one tenth) for both; ``--train-frames N`` keeps a
seeded subset of N of the training frames (the validation frames stay the same), for
data-efficiency curves. Labels are read from ASE's calculator results (what ASE makes of
``energy=`` / ``forces``) or ``info``/``arrays`` under ``energy``/``forces`` or
``REF_energy``/``REF_forces`` (``--energy-key``/``--forces-key`` name others), and written
under ``REF_energy``/``REF_forces`` for both engines (named to each explicitly).

Both train with their own command line (``mlpot train`` with a YAML config, MACE's
``mace_run_train``), in float32 (``--dtype float64``: both train, are tested and timed
in float64), as separate processes started together (by default) and stopped after
``--budget-s`` seconds of wall time each; each tool keeps its best
(validation) model, which is what gets tested. MACE's stopped run is turned into a model
file by its own ``--restart_latest`` with zero further epochs (not counted).

Printed per model: energy (meV/atom) and force (meV/Å) RMSE on each test set, training
wall time and epochs, inference atom-steps per second (energy + forces, model only) on the
molecule (first test frame, trained models) and on a periodic fcc Cu cell of 1000 atoms
(untrained Cu models of the same hyper-parameters), peak resident memory of each process;
then the ratios mlpot/MACE and PASS/FAIL of the targets:

* force RMSE of mlpot <= MACE's on each test set;
* inference throughput of mlpot >= 2x MACE's on the molecule and on Cu;
* linear scaling of mlpot: per-atom cost at 6912 atoms <= 1.5x that at 864 atoms (fastest
  step of each, as other processes on a shared machine only ever slow a step down).

Learning curves: each engine's validation energy (meV/atom) and force (meV/Å) RMSE per
epoch, against epochs and against wall time since its process started (the time each
epoch's record appeared in the engine's own log: mlpot's ``history.jsonl``, MACE's
``results/*_train.txt``), with the final test errors; in the JSON (``curve``) and plotted
by ``--plot PNG``.

Usage::

    python bench/peers/mace_vs_mlpot.py                      # aspirin, 600 s each, ~30 min
    python bench/peers/mace_vs_mlpot.py --data ethanol_dft --budget-s 300 \\
        --train-frames 250 --json eth.json --plot eth.png
    python bench/peers/mace_vs_mlpot.py --budget-s 120 --test-frames 200   # quick look
    python bench/peers/mace_vs_mlpot.py --test-only --workdir DIR --data OTHER   # re-test
    python bench/peers/mace_vs_mlpot.py --infer-only --workdir DIR --device cuda \\
        --systems aspirin,cu1000,cu6912,cu32000 --threads 4      # a GPU, the trained models

Needs ``pip install -e .[peers]`` (mace-torch) for the MACE side; without it only
``--engines mlpot`` runs. The machine is shared: timings taken while other work runs are
noisy, which is one reason both trainings run at the same time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# the shared data lie beside the repository: ../shared/data from its root
DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
TASKS = HERE / "peer_tasks.py"
RESULT_TAG = "RESULT "
ENGINES = ("mlpot", "mace")

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


def data_folder(spec: str) -> Path:
    """A named data set of ../shared/data (``aspirin_gfn2``, ``ethanol_dft``) or a folder."""
    named = DATA_ROOT / spec
    path = named if named.is_dir() else Path(spec)
    if not path.is_dir():
        known = sorted(p.name for p in DATA_ROOT.iterdir() if p.is_dir())
        raise SystemExit(f"--data {spec}: neither a folder nor one of {known}")
    return path.resolve()


def natural_key(path: Path) -> list:
    """Sort key reading digit runs as numbers: 300K < 600K < 1200K."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_labels(atoms, energy_key: str | None = None, forces_key: str | None = None):
    """``(energy eV or None, forces (N, 3) eV/Å or None)`` of a frame read by ASE: from
    its calculator results (ASE's reading of ``energy=``/``forces``), else ``info`` /
    ``arrays``; under the given key, or ``energy``/``forces`` then ``REF_*``."""
    results = atoms.calc.results if atoms.calc is not None else {}

    def find(key, defaults):
        for k in [key] if key else defaults:
            for store in (results, atoms.info, atoms.arrays):
                if k in store:
                    return store[k]
        return None

    energy = find(energy_key, ("energy", "REF_energy"))
    forces = find(forces_key, ("forces", "REF_forces"))
    return (
        None if energy is None else float(energy),
        None if forces is None else np.asarray(forces, dtype=float),
    )


def discover(folder: Path, keys: dict) -> tuple[Path, dict[str, Path]]:
    """The training file (one ``*train*.xyz``) and the test sets with forces, by name
    (the part of the file name after ``test``: ``aspirin_test_300K`` -> ``300K``)."""
    import ase.io

    trains = sorted(folder.glob("*train*.xyz"))
    if len(trains) != 1:
        raise SystemExit(f"{folder}: need exactly one *train*.xyz, found {trains}")
    tests = {}
    for path in sorted(folder.glob("*test*.xyz"), key=natural_key):
        if read_labels(ase.io.read(path, index=0), **keys)[1] is None:
            continue  # an energy-only path (dimers, bond breaking, normal modes)
        name = path.stem.split("test", 1)[1].strip("_-") or path.stem
        tests[name] = path
    if not tests:
        raise SystemExit(f"{folder}: no *test*.xyz with forces")
    return trains[0], tests


def write_labelled(frames, path: Path, source: Path, keys: dict) -> Path:
    """``frames`` to extxyz with their labels under ``REF_energy``/``REF_forces``."""
    import ase.io

    out = []
    for k, atoms in enumerate(frames):
        energy, forces = read_labels(atoms, **keys)
        if energy is None or forces is None:
            raise SystemExit(f"{source}: frame {k} lacks energy or forces ({keys})")
        copy = atoms.copy()
        copy.calc = None
        copy.info["REF_energy"] = energy
        copy.arrays["REF_forces"] = forces
        out.append(copy)
    ase.io.write(path, out, format="extxyz")
    return path


def write_tests(
    workdir: Path, test_files: dict[str, Path], test_frames: int, keys: dict
) -> dict[str, Path]:
    """The first ``test_frames`` of each test set, labelled, as ``workdir/test_NAME.xyz``."""
    import ase.io

    return {
        name: write_labelled(
            ase.io.read(path, index=f":{test_frames}"), workdir / f"test_{name}.xyz", path, keys
        )
        for name, path in test_files.items()
    }


def prepare_data(
    workdir: Path, folder: Path, test_frames: int, train_frames: int | None, keys: dict
) -> tuple[dict[str, Path], dict[str, Path], dict]:
    """Write train/valid/test extxyz with labels under REF_energy / REF_forces; return
    the paths (train, valid), the test paths by name, and a description of the data."""
    import ase.io

    workdir.mkdir(parents=True, exist_ok=True)
    train_file, test_files = discover(folder, keys)
    frames = ase.io.read(train_file, index=":")
    order = np.random.default_rng(0).permutation(len(frames))
    n_valid = len(frames) // 10
    valid, train = order[:n_valid], order[n_valid:]
    if train_frames is not None:
        if train_frames > len(train):
            raise SystemExit(f"--train-frames {train_frames}: only {len(train)} available")
        train = train[:train_frames]  # a seeded subset: the order is a seeded permutation
    paths = {
        "train": write_labelled(
            [frames[k] for k in train], workdir / "train.xyz", train_file, keys
        ),
        "valid": write_labelled(
            [frames[k] for k in valid], workdir / "valid.xyz", train_file, keys
        ),
    }
    tests = write_tests(workdir, test_files, test_frames, keys)
    elements = sorted({int(z) for a in frames for z in a.numbers})
    meta = {
        "folder": str(folder),
        "train_file": train_file.name,
        "test_files": {name: path.name for name, path in test_files.items()},
        "train_frames": len(train),
        "valid_frames": len(valid),
        "test_frames": {name: len(ase.io.read(p, index=":")) for name, p in tests.items()},
        "elements": elements,
        "molecule": folder.name.split("_")[0],
    }
    (workdir / "data.json").write_text(json.dumps(meta, indent=2))
    return paths, tests, meta


# ---------------------------------------------------------------------------- training


def environment(threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",  # MACE (e3nn 0.4.4) pickles under torch 2.6+
        "PYTHONWARNINGS": "ignore",
    }


def mlpot_overrides(pairs: list[str]) -> dict[str, dict]:
    """``SECTION.KEY=VALUE`` pairs (``model.channels=96``, ``loss.energy=10``,
    ``training.weight_decay=1e-4``; VALUE read as YAML) as ``{section: {key: value}}``.
    ``model.name=...`` replaces the whole default model by the one given (e.g. a ``sum``
    with ``model.terms=[...]``)."""
    import yaml

    out: dict[str, dict] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("model", "loss", "training"):
            raise SystemExit(f"--mlpot-set {pair!r}: expected model|loss|training.KEY=VALUE")
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def mlpot_command(
    paths: dict[str, Path],
    out: Path,
    budget_s: float,
    overrides: dict | None = None,
    dtype: str = "float32",
) -> list[str]:
    import yaml

    overrides = overrides or {}
    config = {
        "data": {
            "train": str(paths["train"]),
            "validation": str(paths["valid"]),
            "keys": {"energy": "REF_energy", "forces": "REF_forces"},
        },
        # a model named anew (model.name=sum, model.terms=[...]) replaces the default one
        "model": (
            overrides["model"]
            if "name" in overrides.get("model", {})
            else {**MLPOT_MODEL, **overrides.get("model", {})}
        ),
        "loss": overrides.get("loss", {}),
        "training": {
            **MLPOT_TRAINING,
            "epochs": 100000,
            "early_stopping_patience": 100000,
            "max_time_s": budget_s,
            "dtype": dtype,
            "progress": False,
            "seed": 0,
            **overrides.get("training", {}),
        },
        "output": str(out / "run"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return [str(Path(sys.executable).with_name("mlpot")), "train", str(out / "config.yaml")]


def mace_command(
    paths: dict[str, Path], *, finish: bool = False, dtype: str = "float32"
) -> list[str]:
    """``mace_run_train``; ``finish`` turns the latest checkpoint into the model file."""
    args = [
        str(Path(sys.executable).with_name("mace_run_train")),
        "--name=mace",
        f"--train_file={paths['train']}",
        f"--valid_file={paths['valid']}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        "--device=cpu",
        f"--default_dtype={dtype}",
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


def count_records(path_glob: tuple[Path, str], marker: str | None = None) -> int:
    """Epoch records written so far: lines of the files matching the glob (containing
    ``marker`` when given)."""
    folder, pattern = path_glob
    count = 0
    for path in folder.glob(pattern):
        try:
            text = path.read_text()
        except OSError:
            continue
        lines = text.splitlines()
        count += sum(1 for line in lines if marker is None or marker in line)
    return count


def watchers(workdir: Path) -> dict:
    """For each engine: a function returning how many epoch records its log holds."""
    return {
        "mlpot": lambda: count_records((workdir / "mlpot" / "run", "history.jsonl")),
        "mace": lambda: count_records(
            (workdir / "mace" / "results", "*_train.txt"), '"mode": "eval"'
        ),
    }


def supervise(jobs: dict, budget_s: float) -> dict:
    """Wait until each process ends or its budget is spent (then stop its process group),
    noting when each new epoch record appears; return per job: wall time, whether it was
    stopped, peak RSS (MiB, from ``wait4``) and the wall time of each epoch record."""
    records, stopped, seen = {}, {}, {name: [] for name in jobs}
    while len(records) < len(jobs):
        for name, (process, started, watch) in jobs.items():
            if name in records:
                continue
            now = time.perf_counter() - started
            seen[name] += [now] * max(0, watch() - len(seen[name]))
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                seen[name] += [now] * max(0, watch() - len(seen[name]))
                records[name] = {
                    "wall_s": stopped.get(name, now),
                    "stopped_at_budget": name in stopped,
                    "peak_rss_mb": usage.ru_maxrss / 1024,
                    "returncode": process.returncode,
                    "record_wall_s": seen[name],
                }
            elif name not in stopped and now >= budget_s:
                stopped[name] = now
                os.killpg(process.pid, signal.SIGTERM)
        time.sleep(0.2)
    return records


def mlpot_curve(run_dir: Path) -> list[dict]:
    """mlpot's validation errors per epoch (``history.jsonl``); ``train_s`` is mlpot's own
    training clock (without data loading and graph building)."""
    path = run_dir / "history.jsonl"
    curve = []
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line)
        validation = record["validation"]
        curve.append(
            {
                "epoch": record["epoch"],
                "train_s": record["elapsed_s"],
                "val_energy_rmse_mev_atom": 1e3 * validation["energy_per_atom"]["rmse"],
                "val_forces_rmse_mev_a": 1e3 * validation["forces"]["rmse"],
            }
        )
    return curve


def mace_curve(mace_dir: Path) -> list[dict]:
    """MACE's validation errors per epoch (``results/*_train.txt``, the ``"mode": "eval"``
    lines; its ``epoch`` counts from 0 and is null before training: here epochs done)."""
    curve = []
    for path in sorted((mace_dir / "results").glob("*_train.txt")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("mode") != "eval":
                continue
            epoch = record.get("epoch")
            curve.append(
                {
                    "epoch": 0 if epoch is None else int(epoch) + 1,
                    "val_energy_rmse_mev_atom": 1e3 * float(record["rmse_e_per_atom"]),
                    "val_forces_rmse_mev_a": 1e3 * float(record["rmse_f"]),
                }
            )
    return curve


def train_engines(
    engines: list[str],
    paths,
    workdir: Path,
    budget_s: float,
    threads: int,
    *,
    sequential: bool,
    overrides: dict | None = None,
    dtype: str = "float32",
):
    """Train the engines (together, or one after the other); return their records."""
    for name in engines:  # a fresh start: MACE appends to its logs and restarts checkpoints
        shutil.rmtree(workdir / name, ignore_errors=True)
    commands = {
        "mlpot": (
            lambda: mlpot_command(paths, workdir / "mlpot", budget_s, overrides, dtype),
            workdir / "mlpot",
        ),
        "mace": (lambda: mace_command(paths, dtype=dtype), workdir / "mace"),
    }
    watch = watchers(workdir)
    records, running = {}, {}
    for name in engines:
        command, cwd = commands[name]
        process = start(command(), cwd, threads, workdir / f"train_{name}.log")
        running[name] = (process, time.perf_counter(), watch[name])
        if sequential:
            records.update(supervise(running, budget_s))
            running = {}
    records.update(supervise(running, budget_s))
    if "mlpot" in records:
        rec = records["mlpot"]
        rec["curve"] = mlpot_curve(workdir / "mlpot" / "run")
        rec["epochs"] = len(rec["curve"])
        rec["model"] = str(workdir / "mlpot" / "run" / "model.pt")
    if "mace" in records:
        rec = records["mace"]
        rec["curve"] = mace_curve(workdir / "mace")
        rec["epochs"] = (workdir / "train_mace.log").read_text().count("INFO: Epoch ")
        rec["model"] = None
        if list((workdir / "mace").glob("checkpoints/*.pt")):
            finish = subprocess.run(
                mace_command(paths, finish=True, dtype=dtype),
                cwd=workdir / "mace",
                env=environment(threads),
                capture_output=True,
                text=True,
            )
            (workdir / "finish_mace.log").write_text(finish.stdout + finish.stderr)
            rec["model"] = str(workdir / "mace" / "mace.model")
        else:
            print("MACE finished no epoch within the budget (raise --budget-s): no model")
    for rec in records.values():
        # the wall time (since the process started) at which each epoch record appeared
        times = rec.pop("record_wall_s")
        for point, wall in zip(rec["curve"], times, strict=False):
            point["wall_s"] = wall
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


def test_errors(
    engine: str, model: str, tests: dict[str, Path], workdir: Path, threads, dtype: str = "float32"
) -> dict:
    """Energy per atom (meV/atom) and force component (meV/Å) RMSE on each test set."""
    import ase.io

    out = {}
    for name, path in tests.items():
        npz = workdir / f"pred_{engine}_{name}.npz"
        args = ["predict", engine, model, str(path), str(npz), "--threads", str(threads)]
        task([*args, "--dtype", dtype], threads)
        pred = np.load(npz)
        frames = ase.io.read(path, index=":")
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


def table(rows: list[tuple]) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


def report(results: dict, molecule: str) -> list[str]:
    """The table: one row per figure, mlpot | MACE | mlpot/MACE | target."""
    mine, peer = results["mlpot"], results["mace"]
    rows = [("figure", "mlpot", "MACE", "mlpot/MACE", "target")]

    def add(label, a, b, fmt, target=""):
        ratio = a / b if b else float("nan")
        rows.append((label, format(a, fmt), format(b, fmt), f"{ratio:.3f}", target))

    for name in mine["test"]:
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
    if "infer" not in mine:
        return table(rows)
    for system in (molecule, "cu1000"):
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
        f"parameters ({molecule} model)",
        mine["infer"][molecule]["parameters"],
        peer["infer"][molecule]["parameters"],
        "d",
    )
    lines = table(rows)
    lines.append(scaling_line(mine["infer"]))
    return lines


def scaling_line(infer: dict) -> str:
    small, large = infer["cu864"], infer["cu6912"]
    # fastest step of each: the machine is shared, and a busy neighbour only slows steps down
    growth = (large["min_s"] / large["atoms"]) / (small["min_s"] / small["atoms"])
    median = (large["median_s"] / large["atoms"]) / (small["median_s"] / small["atoms"])
    return (
        f"mlpot per-atom cost 6912 / 864 atoms: {growth:.2f} fastest step, {median:.2f} median "
        f"(<= 1.5: {verdict(growth <= 1.5)})"
    )


def single_report(results: dict, engine: str) -> list[str]:
    """One engine alone (``--engines`` with one name): its figures, no targets."""
    mine = results[engine]
    rows = [("figure", engine)]
    for name, errors in mine["test"].items():
        rows.append((f"energy RMSE {name} (meV/atom)", f"{errors['energy_rmse_mev_atom']:.2f}"))
        rows.append((f"force RMSE {name} (meV/Å)", f"{errors['forces_rmse_mev_a']:.1f}"))
    if "train" in mine:
        rows.append(("training wall time (s)", f"{mine['train']['wall_s']:.0f}"))
        rows.append(("training epochs", str(mine["train"]["epochs"])))
        rows.append(("training peak RSS (MiB)", f"{mine['train']['peak_rss_mb']:.0f}"))
    for system, figures in mine.get("infer", {}).items():
        rows.append(
            (f"{system} atom-steps/s ({figures['device']})", f"{figures['atom_steps_per_s']:.0f}")
        )
        rows.append((f"{system} peak RSS (MiB)", f"{figures['peak_rss_mb']:.0f}"))
    lines = table(rows)
    if engine == "mlpot" and {"cu864", "cu6912"} <= set(mine.get("infer", {})):
        lines.append(scaling_line(mine["infer"]))
    return lines


def test_table(results: dict, engines: list[str]) -> list[str]:
    """Test errors only (``--test-only``): per test set each engine's figures and, with
    both engines, the ratio mlpot/MACE."""
    rows = [("figure", *engines, *(["mlpot/MACE"] if len(engines) == 2 else []))]
    for name in results[engines[0]]["test"]:
        for key, label, spec in (
            ("energy_rmse_mev_atom", f"energy RMSE {name} (meV/atom)", ".2f"),
            ("forces_rmse_mev_a", f"force RMSE {name} (meV/Å)", ".1f"),
        ):
            values = [results[e]["test"][name][key] for e in engines]
            ratio = [f"{values[0] / values[1]:.3f}"] if len(engines) == 2 else []
            rows.append((label, *(format(v, spec) for v in values), *ratio))
    return table(rows)


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
    return table(rows)


def plot_curves(results: dict, path: Path, title: str) -> None:
    """Validation RMSE (lines) against wall time and epochs, test RMSE at the end (marks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    quantities = [
        ("val_forces_rmse_mev_a", "forces_rmse_mev_a", "force RMSE (meV/Å)"),
        ("val_energy_rmse_mev_atom", "energy_rmse_mev_atom", "energy RMSE (meV/atom)"),
    ]
    markers = "o^sDvP*X"
    for engine, colour in zip(results, ("C0", "C1"), strict=False):
        train = results[engine].get("train")
        if not train:
            continue
        curve = train["curve"]
        for row, (key, test_key, label) in enumerate(quantities):
            for col, x_key in enumerate(("wall_s", "epoch")):
                ax = axes[row, col]
                points = [(p[x_key], p[key]) for p in curve if p.get(x_key) is not None]
                if points:
                    x, y = zip(*points, strict=True)
                    ax.plot(x, y, "-", color=colour, label=f"{engine} validation")
                x_end = train["wall_s"] if x_key == "wall_s" else train["epochs"]
                for (name, errors), marker in zip(
                    results[engine].get("test", {}).items(), markers, strict=False
                ):
                    ax.plot(
                        x_end, errors[test_key], marker, color=colour, label=f"{engine} test {name}"
                    )
                ax.set_yscale("log")
                ax.set_xlabel("wall time since start (s)" if x_key == "wall_s" else "epochs")
                ax.set_ylabel(label)
                ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="aspirin_gfn2", help="aspirin_gfn2, ethanol_dft or a data folder"
    )
    parser.add_argument("--energy-key", help="label key of the energies (default: found)")
    parser.add_argument("--forces-key", help="label key of the forces (default: found)")
    parser.add_argument(
        "--train-frames", type=int, help="a seeded subset of the training frames (default all)"
    )
    parser.add_argument("--engines", default="mlpot,mace", help="which to run: mlpot,mace")
    parser.add_argument("--budget-s", type=float, default=600.0, help="training wall time each")
    parser.add_argument("--test-frames", type=int, default=1000, help="frames per test set")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlpot-bench-peers"))
    parser.add_argument("--sequential", action="store_true", help="train one after the other")
    parser.add_argument(
        "--infer-only", action="store_true", help="only throughput, of the workdir's models"
    )
    parser.add_argument("--no-infer", action="store_true", help="skip the throughput tasks")
    parser.add_argument(
        "--test-only",
        action="store_true",
        help="only test the workdir's trained models on the test sets of --data",
    )
    parser.add_argument(
        "--systems", default="molecule,cu1000", help="with --infer-only (molecule: the data's)"
    )
    parser.add_argument("--device", default="cpu", help="inference device (cpu, cuda)")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--plot", type=Path, help="learning curves to this PNG")
    parser.add_argument(
        "--mlpot-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change mlpot's model/loss/training options (repeatable): variants",
    )
    parser.add_argument(
        "--mace-from",
        type=Path,
        help="JSON of an earlier run on the same data and budget: its MACE figures are "
        "reused (with --engines mlpot), so variants of mlpot meet the same MACE model",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="precision of both engines' training, tests and timings",
    )
    args = parser.parse_args(argv)

    engines = [e for e in args.engines.split(",") if e]
    if unknown := set(engines) - set(ENGINES):
        parser.error(f"--engines: unknown {sorted(unknown)}")
    if "mace" in engines and importlib.util.find_spec("mace") is None:
        print("mace-torch is not installed (pip install -e '.[peers]'): mlpot only", flush=True)
        engines.remove("mace")
    if not engines:
        parser.error("no engine left to run")
    workdir = args.workdir.resolve()
    results = {engine: {} for engine in engines}
    models = {
        "mlpot": str(workdir / "mlpot" / "run" / "model.pt"),
        "mace": str(workdir / "mace" / "mace.model"),
    }
    if args.infer_only:
        meta_file = workdir / "data.json"
        molecule = json.loads(meta_file.read_text())["molecule"] if meta_file.exists() else None
        tests = sorted(workdir.glob("test_*.xyz"), key=natural_key)
        extra = ["--molecule", str(tests[0])] if tests else []
        extra += ["--dtype", args.dtype]
        systems = [
            (molecule or "molecule") if s == "molecule" else s for s in args.systems.split(",")
        ]
        for engine in engines:
            results[engine]["infer"] = throughput(
                engine, models[engine], systems, args.device, args.threads, extra
            )
        lines = (
            throughput_table(results, systems)
            if len(engines) == 2
            else single_report(results, engines[0])
        )
        meta = {}
    elif args.test_only:
        if missing := [models[e] for e in engines if not Path(models[e]).exists()]:
            raise SystemExit(f"--test-only: no trained model at {', '.join(missing)}")
        keys = {"energy_key": args.energy_key, "forces_key": args.forces_key}
        folder = data_folder(args.data)
        tests = write_tests(workdir, discover(folder, keys)[1], args.test_frames, keys)
        meta = {"folder": str(folder), "test_files": {n: p.name for n, p in tests.items()}}
        for engine in engines:
            results[engine]["test"] = test_errors(
                engine, models[engine], tests, workdir, args.threads, args.dtype
            )
        lines = test_table(results, engines)
    else:
        keys = {"energy_key": args.energy_key, "forces_key": args.forces_key}
        paths, tests, meta = prepare_data(
            workdir, data_folder(args.data), args.test_frames, args.train_frames, keys
        )
        molecule = meta["molecule"]
        print(f"data: {json.dumps(meta)}", flush=True)
        trained = train_engines(
            engines,
            paths,
            workdir,
            args.budget_s,
            args.threads,
            sequential=args.sequential,
            overrides=mlpot_overrides(args.mlpot_set),
            dtype=args.dtype,
        )
        extra = ["--molecule", str(next(iter(tests.values()))), "--dtype", args.dtype]
        for engine in [e for e in engines if trained[e]["model"] is None]:
            results[engine]["train"] = trained[engine]
            engines.remove(engine)
        for engine in engines:
            results[engine]["train"] = trained[engine]
            summary = {k: v for k, v in trained[engine].items() if k != "curve"}
            print(f"{engine}: trained {summary}", flush=True)
            results[engine]["test"] = test_errors(
                engine, models[engine], tests, workdir, args.threads, args.dtype
            )
            if not args.no_infer:
                systems = [molecule, "cu1000"] + (["cu864", "cu6912"] if engine == "mlpot" else [])
                results[engine]["infer"] = throughput(
                    engine, models[engine], systems, args.device, args.threads, extra
                )
            print(f"{engine}: measured", flush=True)
        if args.mace_from and "mace" not in results:
            earlier = json.loads(args.mace_from.read_text())
            if earlier["data"].get("train_frames") != meta["train_frames"]:
                raise SystemExit(f"--mace-from {args.mace_from}: another training set")
            results["mace"] = earlier["results"]["mace"]
            results["mace"]["reused_from"] = str(args.mace_from)
            engines.append("mace")
        lines = (
            report(results, molecule) if len(engines) == 2 else single_report(results, engines[0])
        )
        if args.plot:
            label = f"{Path(meta['folder']).name}, {meta['train_frames']} training frames"
            plot_curves(results, args.plot, f"{label}, budget {args.budget_s:.0f} s")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "data": meta,
                    "mlpot_set": args.mlpot_set,
                    "dtype": args.dtype,
                    "results": results,
                    "table": lines,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
