"""Cheap uncertainty, mpnn and bpnn side by side: what ``forces_std`` costs, and (with
``--train``) how good it is, for a committee, the shallow ensemble and the LLPR of one
model of each family.

Models (``--models``, comma list, default all six): ``mpnn-committee`` (``--members``
mpnns on bootstrap resamples), ``mpnn-shallow`` (``mpnn_shallow``, ``--heads`` heads),
``mpnn-llpr`` (the LLPR of one mpnn, ``--llpr-members`` members), and the same three for
``bpnn`` (``bpnn-committee``, ``bpnn-shallow``, ``bpnn-llpr``; ACSF defaults, hidden
[64, 64]).

Cost (always; untrained models, since the cost does not depend on the weights): median
time per call, on ``--threads`` threads, of one model's energy + forces (``predict``) — the
unit, per family — and of each uncertainty model's ``energy_std`` + ``forces_std`` (the
shallow ensemble and the LLPR also ``energy_std`` only, and, for the largest of them,
``forces_std`` by batched autograd; ``--cost-sizes 2,4,8`` measures several numbers of
heads and members in one run), on the first frame of the data's training file (a molecule,
its elements from the data) and on a rattled fcc Cu cell of ``4 n³`` atoms (``--cells n``,
default 5: 500 atoms; ``--cells 0``: none). The calls take turns, so a change of machine
load biases no ratio. The summary's cost is the molecule's ``energy_std + forces_std`` ratio.

Quality (``--train``): trains the models on the training file (a ``--validation-frames``
split of it validates and calibrates, seeded); ``--max-time`` is each model's budget, a
committee's members sharing it (``--max-time / --members`` each). Trained runs are
reused (``model.pt``) and an interrupted one resumes. The training run stores each
model's domain statistics (T², d_min, hull; ``in_domain`` at confidence 0.99 per
structure, Šidák-corrected over its atoms, see :mod:`mlpot.uncertainty.domain`); the LLPR
keeps its single model's. The Student-t calibration is fitted on the validation frames
(:func:`mlpot.uncertainty.assess.calibrate_files`). Then, per model, on the first
``--test-frames`` frames of each test file:

* the **in-distribution** file (``--in-distribution`` glob; default: the first test file
  by the number in its name, e.g. the lowest temperature): force and energy ECE, force
  RMSE, the fraction of its frames flagged ``in_domain``;
* the **hottest** file: the last test file by number that has force labels (it may be the
  in-distribution file, as for ethanol_dft): Spearman(forces_std, |ΔF|) per atom;
* the **out-of-distribution** set (``--ood``, comma list of globs; default: the last test
  file by number): AUROC with which each frame score — ``energy_std``, the largest and the
  mean per-atom ``forces_std`` and, with domain statistics, the largest and the mean
  per-atom T² and d_min — tells its frames (positives) from the in-distribution ones. The
  largest value flags one atom out of place; the mean over atoms averages the per-atom
  noise, and a frame of a hotter trajectory is displaced at every atom. Only model scores are
  needed, so energy-only files serve; files without force labels are skipped for force
  ECE, RMSE and Spearman.

Models trained elsewhere (``--trained NAME=CHECKPOINT``, repeatable; e.g. a ``bench/peers``
run trained to convergence): instead of training, the LLPR is fitted on the given single
model, and a committee or shallow checkpoint is calibrated; ``--data`` is then a
``bench/peers`` work directory, whose ``train.xyz`` and ``valid.xyz`` are the split the
models were trained on (LLPR fit, calibration) and whose ``test_*.xyz`` are scored.
``mpnn-committee=CK1+CK2`` makes a float64 committee of single models trained on that
split (e.g. with different seeds).

Every test file not matching ``--exclude`` (comma list of globs) gets a row of figures.

For the single bpnn (trained for the LLPR), per-atom domain statistics
(:func:`mlpot.uncertainty.domain.fit_domain_statistics`, confidence 0.99) from two feature
sets of the training atoms: the normalised ACSF (``model.features``) and the last hidden
layer (the input of each element network's last linear layer, what the LLPR's
``last_layer`` uses), standardised per element on the training atoms like the ACSF. For
each: Spearman(per-atom T², |ΔF|) and Spearman(per-atom d_min, |ΔF|) on the hottest file,
AUROC (OOD vs ID) of the frames' largest T² and d_min, fraction of ID frames in domain.

A summary table ends the run: per model the figures above against the targets ECE <= 0.05,
Spearman >= 0.6, AUROC >= 0.9, in-domain >= 0.9, cost <= 1.3x.

Data: ``--data`` (default ``../shared/data/aspirin_gfn2`` beside the repository): a folder
with one ``*train*.xyz`` and any number of ``*test*.xyz`` extxyz files.

Usage::

    python bench/cheap_uncertainty.py                         # cost only
    python bench/cheap_uncertainty.py --models mpnn-committee,mpnn-shallow,mpnn-llpr \
        --members 2 --cost-sizes 2,4,8                        # the mpnn's cost table
    python bench/cheap_uncertainty.py --models bpnn-shallow,bpnn-llpr --cells 0
    python bench/cheap_uncertainty.py --train --channels 32 --epochs 1000 --max-time 150 \\
        --work runs/cheap-aspirin --json runs/cheap-aspirin.json
    python bench/cheap_uncertainty.py --train --data ../shared/data/ethanol_dft \\
        --in-distribution test_MD --ood 'test_H_removal*,test_norm_mode*' \\
        --exclude 'test_dimers*' --work runs/cheap-ethanol
    python bench/cheap_uncertainty.py --models mpnn-llpr --cells 0 --data runs/asp_s0 \\
        --trained mpnn-llpr=runs/asp_s0/mlpot/run/model.pt --work runs/cheap-asp-converged
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import statistics
import time
from pathlib import Path

from data_folder import data_files  # beside this script

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aspirin_gfn2"  # --data
FAMILIES = ("mpnn", "bpnn")
KINDS = ("committee", "shallow", "llpr")
MODELS = tuple(f"{family}-{kind}" for family in FAMILIES for kind in KINDS)
TARGETS = {"ece": 0.05, "spearman": 0.6, "auroc": 0.9, "in_domain": 0.9, "cost": 1.3}


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def matches(path: Path, patterns: str | None) -> bool:
    """Whether the file's name or stem matches one of the comma-separated globs."""
    globs = [g.strip() for g in (patterns or "").split(",") if g.strip()]
    return any(fnmatch.fnmatch(path.name, g) or fnmatch.fnmatch(path.stem, g) for g in globs)


def has_forces(path: Path) -> bool:
    from mlpot.data.dataset import read_dataset

    samples = read_dataset(path, require_forces=False)
    return bool(samples) and all(s.forces is not None for s in samples)


def file_roles(args, test_files: list[Path]) -> dict:
    """In-distribution file, OOD files, hottest file with forces, files evaluated."""
    files = [p for p in test_files if not matches(p, args.exclude)]
    if not files:
        raise SystemExit("no test files left after --exclude")
    if args.in_distribution:
        found = [p for p in files if matches(p, args.in_distribution)]
        if len(found) != 1:
            raise SystemExit(f"--in-distribution {args.in_distribution!r} matches {found}")
        in_dist = found[0]
    else:
        in_dist = files[0]
    ood = [p for p in files if matches(p, args.ood)] if args.ood else [files[-1]]
    ood = [p for p in ood if p != in_dist]
    if not ood:
        raise SystemExit("no out-of-distribution test file (see --ood)")
    labelled = [p for p in files if has_forces(p)]
    if not labelled:
        raise SystemExit("no test file with force labels")
    return {"in": in_dist, "ood": ood, "hot": labelled[-1], "files": files}


# --------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------


def median_times(calls: dict, repeats: int, clock: str = "wall") -> dict[str, float]:
    """Median time of each call, the calls taking turns (two warm-up rounds): wall time, or
    with ``clock="cpu"`` the process's CPU time (on one thread, steadier than wall time on
    a machine shared with other jobs, which takes the CPU away between the calls' steps)."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 2):
        for name, fn in calls.items():
            start = now()
            fn()
            if round_ >= 2:
                times[name].append(now() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def untrained(spec: dict, elements: list[int]):
    """Reference offsets + the model of ``spec``: the shape of a trained run's model."""
    import torch

    from mlpot.models.offsets import AtomicOffsets
    from mlpot.models.registry import build_model
    from mlpot.models.sum import SumModel

    learned = build_model({**spec, "elements": elements})
    offsets = AtomicOffsets(elements, [0.0] * len(elements))
    return SumModel([offsets, learned]).to(torch.float64).eval()


def body_spec(args, family: str) -> dict:
    """The single model of ``family``."""
    if family == "mpnn":
        return {"name": "mpnn", "cutoff": args.cutoff, "channels": args.channels}
    return {"name": "bpnn", "cutoff": args.cutoff}


def cost_models(args, family: str, elements: list[int]) -> dict:
    """Single model, committee, shallow ensembles and LLPRs (identity posterior), untrained:
    ``shallow`` and ``llpr`` map each number of heads / members to a model."""
    import torch

    from mlpot.models.ensembles import Committee
    from mlpot.models.llpr import LLPR

    torch.manual_seed(0)
    body = body_spec(args, family)
    single = untrained(body, elements)
    committee = Committee([untrained(body, elements) for _ in range(args.members)]).eval()
    shallow, llpr = {}, {}
    for heads in cost_sizes(args, "shallow"):
        spec = {**body, "name": f"{family}_shallow", "heads": heads}
        shallow[heads] = untrained(spec, elements)
    for members in cost_sizes(args, "llpr"):
        model = LLPR(untrained(body, elements), members=members).eval()
        n_features = model.covariance.shape[0]
        model.set_posterior(torch.eye(n_features, dtype=torch.float64), 1.0)
        llpr[members] = model
    return {"single": single, "committee": committee, "shallow": shallow, "llpr": llpr}


def cost_sizes(args, kind: str) -> list[int]:
    """Numbers of heads (``shallow``) or members (``llpr``) whose cost is measured:
    ``--cost-sizes``, else ``--heads`` / ``--llpr-members``."""
    if args.cost_sizes:
        return sorted({int(n) for n in args.cost_sizes.split(",") if n.strip()})
    return [args.heads if kind == "shallow" else args.llpr_members]


def cost_label(family: str, kind: str, args) -> str:
    """The label of a model's ``energy_std + forces_std`` call (the summary's cost)."""
    if kind == "committee":
        return f"{family} committee of {args.members}: energy_std + forces_std"
    if kind == "shallow":
        return f"{family} shallow, {args.heads} heads: + forces_std"
    return f"{family} LLPR, {args.llpr_members} members: + forces_std"


def inference_cost(args, atoms, families: list[str]) -> dict[str, dict[str, float]]:
    """Median ms per call and ratio to one model of the same family's energy + forces."""
    import torch

    from mlpot.data.graph import atoms_to_graph
    from mlpot.physics.derivatives import predict
    from mlpot.physics.ensemble import predict_members
    from mlpot.uncertainty.ensemble import predict_with_uncertainty

    elements = sorted(set(atoms.numbers.tolist()))
    calls, units = {}, {}
    for family in families:
        models = cost_models(args, family, elements)
        graph = atoms_to_graph(atoms, models["single"].cutoff, dtype=torch.float64)
        unit = f"one {family}: energy + forces"
        committee = cost_label(family, "committee", args)
        calls[unit] = lambda m=models["single"], g=graph: predict(m, g, forces=True)
        calls[committee] = lambda m=models["committee"], g=graph: predict_with_uncertainty(m, g)
        units[unit] = units[committee] = unit
        for kind, unit_name in (("shallow", "heads"), ("llpr", "members")):
            title = "shallow" if kind == "shallow" else "LLPR"
            sizes = models[kind]
            for size, model in sizes.items():
                label = f"{family} {title}, {size} {unit_name}"
                names = [f"{label}: energy_std", f"{label}: + forces_std"]
                calls[names[0]] = lambda m=model, g=graph: predict_with_uncertainty(
                    m, g, member_forces=False
                )
                calls[names[1]] = lambda m=model, g=graph: predict_with_uncertainty(m, g)
                if size == max(sizes):  # batched autograd: the largest size only (slow)
                    names.append(f"{label}: + by autograd")
                    calls[names[2]] = lambda m=model, g=graph: predict_members(
                        m, g, explicit_gradients=False
                    )
                units.update({name: unit for name in names})
    times = median_times(calls, args.repeats, args.clock)
    return {
        name: {"ms": 1e3 * seconds, "ratio": seconds / times[units[name]]}
        for name, seconds in times.items()
    }


def cost_systems(args, train_file: Path) -> dict:
    import ase.io
    from ase.build import bulk

    molecule = ase.io.read(args.structure or train_file, index=0)
    systems = {f"{molecule.get_chemical_formula()} ({len(molecule)} atoms)": molecule}
    if args.cells > 0:
        cell = bulk("Cu", "fcc", a=3.61, cubic=True) * (args.cells, args.cells, args.cells)
        cell.rattle(0.05, seed=0)
        systems[f"Cu fcc ({len(cell)} atoms)"] = cell
    return systems


# --------------------------------------------------------------------------------------
# training (--train)
# --------------------------------------------------------------------------------------


def split(train_file: Path, work: Path, n_validation: int, train_frames: int | None) -> dict:
    import ase.io
    import numpy as np

    frames = ase.io.read(train_file, index=":")
    order = np.random.default_rng(0).permutation(len(frames))
    paths = {"train": str(work / "train.xyz"), "validation": str(work / "validation.xyz")}
    ase.io.write(paths["validation"], [frames[k] for k in order[:n_validation]])
    ase.io.write(paths["train"], [frames[k] for k in order[n_validation:]][:train_frames])
    return paths


def train_one(args, paths: dict, directory: Path, model: dict, ensemble: dict, budget) -> dict:
    """Train into ``directory`` unless its ``model.pt`` exists (resuming a started run)."""
    from mlpot.training.config import parse_config
    from mlpot.training.run import run_training

    if (directory / "model.pt").exists():
        print(f"  {directory.name}: reusing {directory / 'model.pt'}", flush=True)
        return {"reused": True}
    started = time.perf_counter()
    config = parse_config(
        {
            "data": {"train": paths["train"], "validation": paths["validation"]},
            "model": model,
            "training": {"epochs": args.epochs, "max_time_s": budget, "progress": False},
            "ensemble": ensemble,
            "output": str(directory),
        }
    )
    result = run_training(config, resume=True, log=lambda message: None)
    info = {
        "seconds": time.perf_counter() - started,
        "epochs": result.train.epochs_run,
        "stop": result.train.stop_reason,
        "validation_force_rmse": result.validation_metrics.get("forces", {}).get("rmse"),
    }
    print(
        f"  trained {directory.name} in {info['seconds']:.0f} s, {info['epochs']} epochs "
        f"({info['stop']}), validation force RMSE {fmt(info['validation_force_rmse'], '.4f')} eV/Å",
        flush=True,
    )
    return info


def train_models(args, paths: dict, work: Path, selected: list[str]) -> tuple[dict, dict]:
    """The selected models, each calibrated on the validation frames: checkpoint paths
    and what training did."""
    models, trained = {}, {}
    per_member = args.max_time / args.members if args.max_time else None
    for name in selected:
        family, kind = name.split("-")
        body = body_spec(args, family)
        if kind == "committee":
            directory, ensemble, budget = (
                name,
                {"size": args.members, "bootstrap": True},
                per_member,
            )
        else:
            directory, ensemble, budget = f"{family}-{kind}", {}, args.max_time
        model = body
        if kind == "shallow":
            model = {**body, "name": f"{family}_shallow", "heads": args.heads}
        elif kind == "llpr":
            directory = f"{family}-single"
        trained[name] = train_one(args, paths, work / directory, model, ensemble, budget)
        models[name] = with_uncertainty(args, name, work / directory / "model.pt", paths, work)
    return models, trained


def with_uncertainty(args, name: str, checkpoint: Path, paths: dict, work: Path) -> Path:
    """The scored checkpoint: the LLPR of a single model (``*-llpr``), or an ensemble
    calibrated on the validation file."""
    from mlpot.uncertainty.assess import calibrate_files
    from mlpot.uncertainty.llpr import llpr_checkpoint

    if name.endswith("-llpr"):
        run = llpr_checkpoint(
            checkpoint,
            [paths["train"]],
            work / f"{name}.pt",
            validation=[paths["validation"]],
            members=args.llpr_members,
        )
        return run.checkpoint
    calibrate_files(checkpoint, [paths["validation"]], output=work / f"{name}.pt")
    return work / f"{name}.pt"


def peers_split(folder: Path) -> dict:
    """The training and validation files of a ``bench/peers`` work directory."""
    paths = {"train": folder / "train.xyz", "validation": folder / "valid.xyz"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SystemExit(
            f"--trained needs --data to be a bench/peers work directory; missing {missing}"
        )
    return {key: str(path) for key, path in paths.items()}


def committee_of(members: list[str], paths: dict, work: Path) -> Path:
    """A committee of single models trained elsewhere (e.g. the same run with different
    seeds), in float64, with the domain statistics of its features on the training file."""
    from mlpot.data.dataset import read_dataset
    from mlpot.models.checkpoint import save_model
    from mlpot.models.ensembles import Committee
    from mlpot.training.run import store_domain
    from mlpot.uncertainty.assess import load_with_statistics

    # float64: per-atom energies with offsets of hundreds of eV are stored to ~1e-5 eV in
    # float32, and two converged float32 members agreed to that on 2 of 200 ethanol frames
    # (a zero spread, which no calibration takes)
    committee = Committee([load_with_statistics(p).model for p in members]).double()
    path = work / "committee-of-given.pt"
    save_model(path, committee)
    dtype = next(committee.parameters()).dtype
    store_domain(committee, read_dataset(paths["train"]), path, dtype)
    return path


def trained_elsewhere(args, paths: dict, work: Path) -> dict:
    """``--trained NAME=CHECKPOINT``: the LLPR of a single model, or a committee or shallow
    checkpoint calibrated on the validation file."""
    models = {}
    for pair in args.trained:
        name, sep, given = pair.partition("=")
        members = given.split("+")
        if (
            not sep
            or name not in MODELS
            or not all(Path(p).is_file() for p in members)
            or (len(members) > 1 and not name.endswith("-committee"))
        ):
            raise SystemExit(
                f"--trained {pair!r}: expected NAME=CHECKPOINT (a committee: CK1+CK2+...), "
                f"NAME in {MODELS}"
            )
        checkpoint = Path(members[0]) if len(members) == 1 else committee_of(members, paths, work)
        models[name] = with_uncertainty(args, name, checkpoint, paths, work)
    return models


# --------------------------------------------------------------------------------------
# quality (--train)
# --------------------------------------------------------------------------------------


def auroc(negatives, positives) -> float:
    """Probability that a positive scores above a negative (Mann–Whitney)."""
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([negatives, positives]))
    n_neg, n_pos = len(negatives), len(positives)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos))


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def test_graphs(path: Path, model, n_frames: int):
    from mlpot.data.dataset import read_dataset
    from mlpot.uncertainty.assess import labelled_graphs

    samples = read_dataset(path, require_forces=False)[:n_frames]
    return labelled_graphs(samples, model)


def none_if_nan(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def per_structure_mean(values, batch):
    """Mean per-atom value of each structure ``(S,)``."""
    import numpy as np

    return np.bincount(batch, weights=values) / np.bincount(batch)


def quality(args, models: dict[str, Path], roles: dict) -> dict:
    """Per model: a row per test file, the AUROC of the frame scores OOD vs ID, and the
    summary figures."""
    import numpy as np

    from mlpot.uncertainty.assess import (
        collect_residuals,
        load_with_statistics,
        per_structure_max,
        uncertainty_report,
    )

    report = {}
    for name, path in models.items():
        loaded = load_with_statistics(path)
        rows, scores = {}, {}
        for test in roles["files"]:
            graphs = test_graphs(test, loaded.model, args.test_frames)
            res = collect_residuals(loaded.model, graphs, domain=loaded.domain)
            row = uncertainty_report(res, loaded.calibration)
            labelled = np.isfinite(res.force_error).all(1)
            rows[test.stem] = {
                "frames": len(graphs),
                "force_rmse": none_if_nan(
                    float(np.sqrt(np.mean(res.force_error[labelled] ** 2)))
                    if labelled.any()
                    else None
                ),
                "forces_ece": row["forces"]["ece"] if "forces" in row else None,
                "forces_spearman": row["forces"]["spearman"] if "forces" in row else None,
                "energy_ece": row["energy"]["ece"],
                "energy_rmse": float(np.sqrt(np.mean(res.energy_error**2))),
                "in_domain": (float(np.mean(res.in_domain)) if res.in_domain is not None else None),
            }
            scores[test.stem] = frame = {"energy_std": res.energy_std}
            per_atom = {"forces_std": res.forces_std}
            if res.t2 is not None:
                per_atom.update({"T2": res.t2, "d_min": res.d_min})
            for key, values in per_atom.items():
                frame[f"max {key}"] = per_structure_max(values, res.batch)
                frame[f"mean {key}"] = per_structure_mean(values, res.batch)
        negatives = scores[roles["in"].stem]
        separation = {
            key: auroc(negatives[key], np.concatenate([scores[p.stem][key] for p in roles["ood"]]))
            for key in negatives
        }
        best = max(separation, key=separation.get)
        id_row, hot_row = rows[roles["in"].stem], rows[roles["hot"].stem]
        report[name] = {
            "calibration": loaded.calibration.describe(),
            "domain_confidence": loaded.domain.confidence if loaded.domain else None,
            "rows": rows,
            "auroc": separation,
            "summary": {
                "id_forces_ece": id_row["forces_ece"],
                "id_energy_ece": id_row["energy_ece"],
                "hot_spearman": hot_row["forces_spearman"],
                "auroc": separation[best],
                "auroc_score": best,
                "in_domain": id_row["in_domain"],
                "id_force_rmse": id_row["force_rmse"],
            },
        }
    return report


# --------------------------------------------------------------------------------------
# bpnn: ACSF or last hidden layer as the per-atom features of the domain
# --------------------------------------------------------------------------------------


def bpnn_body(model):
    from mlpot.models.behler_parrinello import BehlerParrinello

    return next(m for m in model.modules() if isinstance(m, BehlerParrinello))


def hidden_features(body, graph):
    """Each atom's input to its element network's last linear layer ``(N, H)``."""
    return body.element_outputs(graph, lambda network, x: network[:-1](x))


def per_atom(graphs, fn):
    """``fn(batch)`` over batches of 16: per-atom rows, atomic numbers, batch index."""
    import numpy as np
    import torch

    from mlpot.data.graph import BATCH, NUMBERS
    from mlpot.data.loader import iterate_batches

    features, numbers, batches, offset = [], [], [], 0
    with torch.no_grad():
        for batch in iterate_batches(graphs, 16):
            features.append(fn(batch).detach().double().cpu().numpy())
            numbers.append(batch[NUMBERS].cpu().numpy())
            batches.append(batch[BATCH].cpu().numpy() + offset)
            offset += int(batch["n_atoms"].shape[0])
    return np.concatenate(features), np.concatenate(numbers), np.concatenate(batches)


def bpnn_feature_comparison(args, checkpoint: Path, paths: dict, roles: dict) -> dict:
    """Domain statistics of the single bpnn from ACSF and from its last hidden layer, and
    how each ranks per-atom force errors and separates OOD frames."""
    import numpy as np
    import torch

    from mlpot.data.dataset import read_dataset
    from mlpot.data.graph import BATCH, N_ATOMS, NUMBERS
    from mlpot.data.loader import iterate_batches
    from mlpot.physics import outputs
    from mlpot.uncertainty.assess import (
        collect_residuals,
        labelled_graphs,
        load_with_statistics,
        per_structure_max,
    )
    from mlpot.uncertainty.domain import fit_domain_statistics

    loaded = load_with_statistics(checkpoint)
    model, body = loaded.model, bpnn_body(loaded.model)
    train = labelled_graphs(read_dataset(paths["train"]), model)
    files = {p.stem: p for p in [roles["in"], roles["hot"], *roles["ood"]]}
    tests = {stem: test_graphs(p, model, args.test_frames) for stem, p in files.items()}
    errors = {}
    for stem, graphs in tests.items():
        res = collect_residuals(model, graphs)
        errors[stem] = np.linalg.norm(res.force_error, axis=1)  # NaN without labels

    def standardised_hidden():
        x, z, _ = per_atom(train, lambda b: hidden_features(body, b))
        mean = {e: x[z == e].mean(0) for e in model.elements}
        std = {e: x[z == e].std(0) for e in model.elements}
        std = {e: np.where(s > 1e-6, s, 1.0) for e, s in std.items()}

        def fn(batch):
            h = hidden_features(body, batch)
            numbers = batch[NUMBERS].cpu().numpy()
            m = torch.as_tensor(np.stack([mean[int(e)] for e in numbers]), dtype=h.dtype)
            s = torch.as_tensor(np.stack([std[int(e)] for e in numbers]), dtype=h.dtype)
            return (h - m) / s

        return fn

    sets = {"ACSF": model.features, "last hidden layer": standardised_hidden()}
    out = {}
    for label, fn in sets.items():
        x, z, _ = per_atom(train, fn)
        domain = fit_domain_statistics(x, z, list(model.elements), confidence=0.99)
        scored = {}
        for stem, graphs in tests.items():
            t2, d_min, inside, batches = [], [], [], []
            offset = 0
            with torch.no_grad():
                for batch in iterate_batches(graphs, 16):
                    s = domain.score(fn(batch), batch)
                    t2.append(s[outputs.MAHALANOBIS].numpy())
                    d_min.append(s[outputs.D_MIN].numpy())
                    inside.append(s[outputs.IN_DOMAIN].numpy())
                    batches.append(batch[BATCH].cpu().numpy() + offset)
                    offset += int(batch[N_ATOMS].shape[0])
            scored[stem] = {
                "t2": np.concatenate(t2),
                "d_min": np.concatenate(d_min),
                "in_domain": np.concatenate(inside),
                "batch": np.concatenate(batches),
            }
        hot, ident = scored[roles["hot"].stem], scored[roles["in"].stem]
        labelled = np.isfinite(errors[roles["hot"].stem])
        figures = {
            "n_features": int(x.shape[1]),
            "spearman_t2_hot": spearman(hot["t2"][labelled], errors[roles["hot"].stem][labelled]),
            "spearman_d_min_hot": spearman(
                hot["d_min"][labelled], errors[roles["hot"].stem][labelled]
            ),
            "in_domain_id": float(np.mean(ident["in_domain"])),
            "in_domain_ood": float(
                np.mean(np.concatenate([scored[p.stem]["in_domain"] for p in roles["ood"]]))
            ),
        }
        for key in ("t2", "d_min"):
            frame = {stem: per_structure_max(s[key], s["batch"]) for stem, s in scored.items()}
            figures[f"auroc_max_{key}"] = auroc(
                frame[roles["in"].stem], np.concatenate([frame[p.stem] for p in roles["ood"]])
            )
        out[label] = figures
    best = {label: max(f["spearman_t2_hot"], f["spearman_d_min_hot"]) for label, f in out.items()}
    winner = max(best, key=best.get)
    other = next(label for label in best if label != winner)
    out["verdict"] = (
        f"{winner} ranks per-atom force errors better on {roles['hot'].stem}: best Spearman "
        f"{best[winner]:.3f} vs {best[other]:.3f} ({other}); AUROC max T2/d_min "
        f"{out[winner]['auroc_max_t2']:.3f}/{out[winner]['auroc_max_d_min']:.3f} vs "
        f"{out[other]['auroc_max_t2']:.3f}/{out[other]['auroc_max_d_min']:.3f}"
    )
    return out


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def verdict(value, target: float, above: bool) -> str:
    if value is None:
        return "n/a"
    return "met" if (value >= target if above else value <= target) else "NOT met"


def print_quality(report: dict, roles: dict) -> None:
    for name, model in report.items():
        print(f"\n{name}: calibration {model['calibration']}")
        if model["domain_confidence"] is not None:
            print(f"  domain statistics: in_domain at confidence {model['domain_confidence']}")
        for test, row in model["rows"].items():
            print(
                f"  {test:<24} {row['frames']:>4} frames  F RMSE {fmt(row['force_rmse'], '.4f')}"
                f"  F ECE {fmt(row['forces_ece'])}  F Spearman {fmt(row['forces_spearman'])}"
                f"  E RMSE {row['energy_rmse']:.4f}  E ECE {row['energy_ece']:.3f}"
                f"  in domain {fmt(row['in_domain'])}"
            )
        ood = "+".join(p.stem for p in roles["ood"])
        print(
            f"  AUROC {ood} vs {roles['in'].stem}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in model["auroc"].items())
        )


def summary_table(report: dict, cost: dict, args, roles: dict) -> list[dict]:
    """Print one row per model against the targets; return the rows."""
    print(
        f"\nsummary (ID: {roles['in'].stem}; Spearman on {roles['hot'].stem}; OOD: "
        f"{'+'.join(p.stem for p in roles['ood'])}; cost: energy_std + forces_std / one "
        f"model's energy + forces on the molecule)"
    )
    print("targets: ECE <= 0.05, Spearman >= 0.6, AUROC >= 0.9, in-domain >= 0.9, cost <= 1.3x")
    header = (
        f"{'model':<16} {'F ECE ID':>16} {'E ECE ID':>16} {'Spearman hot':>16} "
        f"{'AUROC (score)':>34} {'in-domain ID':>16} {'cost':>16} {'F RMSE ID':>10}"
    )
    print(header)
    rows = []
    for name, model in report.items():
        s = model["summary"]
        family, kind = name.split("-")
        ratio = cost.get(cost_label(family, kind, args), {}).get("ratio")
        row = {
            **s,
            "cost_ratio": ratio,
            "met": {
                "id_forces_ece": verdict(s["id_forces_ece"], TARGETS["ece"], False),
                "id_energy_ece": verdict(s["id_energy_ece"], TARGETS["ece"], False),
                "hot_spearman": verdict(s["hot_spearman"], TARGETS["spearman"], True),
                "auroc": verdict(s["auroc"], TARGETS["auroc"], True),
                "in_domain": verdict(s["in_domain"], TARGETS["in_domain"], True),
                "cost_ratio": verdict(ratio, TARGETS["cost"], False),
            },
        }
        m = row["met"]
        print(
            f"{name:<16} "
            f"{fmt(s['id_forces_ece']) + ' ' + m['id_forces_ece']:>16} "
            f"{fmt(s['id_energy_ece']) + ' ' + m['id_energy_ece']:>16} "
            f"{fmt(s['hot_spearman']) + ' ' + m['hot_spearman']:>16} "
            f"{fmt(s['auroc']) + ' (' + s['auroc_score'] + ') ' + m['auroc']:>34} "
            f"{fmt(s['in_domain']) + ' ' + m['in_domain']:>16} "
            f"{fmt(ratio, '.2f') + 'x ' + m['cost_ratio']:>16} "
            f"{fmt(s['id_force_rmse'], '.4f'):>10}"
        )
        rows.append({"model": name, **row})
    return rows


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA), help="folder of *train*/*test*.xyz")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma list of " + ", ".join(MODELS)
    )
    parser.add_argument("--structure", default=None, help="molecule for the cost (file)")
    parser.add_argument("--cells", type=int, default=5, help="Cu cell: n x n x n cubic cells")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--channels", type=int, default=64, help="mpnn channels")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--members", type=int, default=4, help="committee members")
    parser.add_argument("--llpr-members", type=int, default=8)
    parser.add_argument(
        "--cost-sizes",
        default=None,
        help="comma list of heads / LLPR members to measure the cost of (e.g. 2,4,8; "
        "default: --heads and --llpr-members)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time the cost by wall clock or by the process's CPU time (one thread)",
    )
    parser.add_argument("--train", action="store_true", help="also train and score")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument(
        "--max-time", type=float, default=None, help="per model, s (a committee's members share it)"
    )
    parser.add_argument("--validation-frames", type=int, default=50)
    parser.add_argument("--train-frames", type=int, default=None)
    parser.add_argument("--test-frames", type=int, default=200)
    parser.add_argument("--in-distribution", default=None, help="glob of the ID test file")
    parser.add_argument("--ood", default=None, help="comma list of globs: the OOD test files")
    parser.add_argument("--exclude", default=None, help="comma list of globs: test files left out")
    parser.add_argument(
        "--trained",
        action="append",
        default=[],
        help="NAME=CHECKPOINT, repeatable: score a model trained elsewhere (--data: its "
        "bench/peers work directory) instead of training one",
    )
    parser.add_argument("--work", default="runs/cheap-uncertainty")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    selected = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(selected) - set(MODELS))
    if unknown or not selected:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    families = [f for f in FAMILIES if any(m.startswith(f + "-") for m in selected)]

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train_file, test_files = data_files(Path(args.data))
    figures: dict = {"args": vars(args), "cost": {}}
    for system, atoms in cost_systems(args, train_file).items():
        print(
            f"\ncost on {system}, {args.threads} thread(s), float64, untrained models, "
            f"median {args.clock} time"
        )
        figures["cost"][system] = rows = inference_cost(args, atoms, families)
        for name, row in rows.items():
            print(f"  {name:<52} {row['ms']:>9.1f} ms  {row['ratio']:>6.2f}x")
    print(f"  (cost stage {time.perf_counter() - started:.0f} s)", flush=True)
    if args.train or args.trained:
        roles = file_roles(args, test_files)
        print(
            f"\ntest files: in-distribution {roles['in'].name}; OOD "
            f"{', '.join(p.name for p in roles['ood'])}; hottest with forces "
            f"{roles['hot'].name}; evaluated {', '.join(p.name for p in roles['files'])}"
        )
        left = [p.name for p in test_files if p not in roles["files"]]
        if left:
            print(f"  left out (--exclude): {', '.join(left)}")
        figures["roles"] = {
            "in_distribution": roles["in"].name,
            "ood": [p.name for p in roles["ood"]],
            "hot": roles["hot"].name,
            "evaluated": [p.name for p in roles["files"]],
            "excluded": left,
        }
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        if args.trained:
            paths = peers_split(Path(args.data))
            models = trained_elsewhere(args, paths, work)
            figures["training"] = {"trained elsewhere": args.trained}
        else:
            paths = split(train_file, work, args.validation_frames, args.train_frames)
            models, figures["training"] = train_models(args, paths, work, selected)
        print(f"  (training and calibration done at {time.perf_counter() - started:.0f} s)")
        figures["quality"] = report = quality(args, models, roles)
        print_quality(report, roles)
        if (work / "bpnn-single" / "model.pt").exists() and "bpnn-llpr" in selected:
            comparison = bpnn_feature_comparison(
                args, work / "bpnn-single" / "model.pt", paths, roles
            )
            figures["bpnn_features"] = comparison
            print("\nbpnn (single model) domain features: ACSF vs last hidden layer")
            for label, f in comparison.items():
                if label == "verdict":
                    continue
                print(
                    f"  {label:<18} F={f['n_features']:<4} Spearman(T2,|dF|) "
                    f"{f['spearman_t2_hot']:.3f}  Spearman(d_min,|dF|) "
                    f"{f['spearman_d_min_hot']:.3f}  AUROC max T2 {f['auroc_max_t2']:.3f}  "
                    f"AUROC max d_min {f['auroc_max_d_min']:.3f}  in domain ID "
                    f"{f['in_domain_id']:.3f}  OOD {f['in_domain_ood']:.3f}"
                )
            print(f"  verdict: {comparison['verdict']}")
        molecule = next(iter(figures["cost"].values()))
        figures["summary"] = summary_table(report, molecule, args, roles)
    figures["wall_s"] = time.perf_counter() - started
    print(f"\ntotal {figures['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
