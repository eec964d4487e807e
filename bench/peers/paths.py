"""Physics beyond RMSE: trained models' energies along the extrapolation paths of ethanol_dft.

Usage::

    python bench/peers/paths.py MODEL.pt [MORE.pt] [MACE.model] [--data ethanol_dft]
        [--out DIR] [--labels a,b,c]

A model ending in ``.model`` is a MACE model (``mace.calculators.MACECalculator``, only
where mace-torch is importable); anything else an mlpot checkpoint
(``mlpot.calculators.load_calculator``; a committee or shallow ensemble also gives
``energy_std``).

Paths: every ``*.xyz`` of the data folder that is neither the training set
(``*train*``), nor the isolated atoms (``isolated*``), nor a set with forces (``test_MD``):
for ethanol_dft the dimer curves (``test_dimers.xyz``, one path per ``config_type``, x =
``distance``), the O–H removal (``test_H_removal.xyz``, x = ``OH_dist``) and the two
normal-mode scans (``test_norm_mode_*.xyz``, x = ``displacement``). A path's family is its
file name without ``test_`` and a trailing number (``dimers``, ``H_removal``,
``norm_mode``): one PNG per family.

Reference: along each path, DFT's and the model's energies are taken relative to the same
frame, the one where DFT's energy is lowest (for a dimer its minimum, for the O–H removal
the equilibrium bond). No absolute energy is compared: an mlpot model trained on ethanol
alone has per-element offsets from a single composition (least squares, minimum norm), so
its absolute energy of a dimer means nothing, and MACE's ``E0s=average`` is the same
fit. Per path and model:

* ``rmse_mev``: RMSE of the relative energies over all frames (the reference frame's error
  is zero by construction); ``rmse_low_mev``: over the frames whose DFT relative energy is
  at most ``--low-ev`` (1 eV), the part a simulation could visit;
* ``max_error_mev`` and the x where it is; ``span_ev`` of DFT and of the model (max - min
  of the relative energies); ``x_min`` of DFT and of the model (where each is lowest);
* on paths whose x is a distance (x key containing ``dist``: dimers, O–H removal), the
  short range x < x_min(DFT): ``repulsive`` (the model's finite-difference dE/dx < 0 on
  every interval up to the DFT minimum), ``sign_changes`` of dE/dx there, and ``holes``:
  the short-range frames where the model's relative energy is more than ``--hole-ev``
  (0.1 eV) below zero, i.e. below its own energy at the DFT minimum, with the deepest one;
* an ensemble: the mean ``energy_std`` (eV) along the path, and the Spearman correlation
  between ``energy_std`` and |error| over the path's frames but the reference one (does the
  uncertainty rise where the error does?);
* a checkpoint with domain statistics: the fraction of the path's frames ``in_domain``, the
  largest error among them (what the domain test lets through: an error a user trusting it
  would meet), and the Spearman correlation between each frame's largest ``d_min`` and
  |error| (frames but the reference one).

Isolated atoms (``isolated_atoms.xyz``: H, C, O and N energies): used for dimers only, to
report DFT's binding energy at its minimum and at the longest distance, E(dimer) - E0(a)
- E0(b), and the model's own, from its energies of the isolated atoms (the model's
dissociation limit is then its energy of the two atoms alone, not of the dimer at the
longest distance, which lies within the cutoff).

Output: a table (printed), ``paths.json`` and ``paths_<family>.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

# the shared data lie beside the repository: ../shared/data from its root
DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
#: x keys tried first, in order; else any numeric key that varies along the path
X_KEYS = ("distance", "OH_dist", "displacement")


# ---------------------------------------------------------------------------- data


def data_folder(spec: str) -> Path:
    named = DATA_ROOT / spec
    path = named if named.is_dir() else Path(spec)
    if not path.is_dir():
        raise SystemExit(f"--data {spec}: not a folder")
    return path.resolve()


def energy_of(atoms) -> float:
    """The reference energy of a frame as ASE read it (``energy=`` -> calculator)."""
    if atoms.calc is not None and "energy" in atoms.calc.results:
        return float(atoms.calc.results["energy"])
    for key in ("energy", "REF_energy"):
        if key in atoms.info:
            return float(atoms.info[key])
    raise SystemExit(f"a frame without energy: {atoms.info}")


def has_forces(atoms) -> bool:
    results = atoms.calc.results if atoms.calc is not None else {}
    return "forces" in results or "forces" in atoms.arrays or "REF_forces" in atoms.arrays


def x_key(frames) -> str | None:
    """The key giving a path's coordinate: a known one, else any varying numeric one."""
    numeric = [
        k
        for k, v in frames[0].info.items()
        if isinstance(v, int | float | np.number) and "energy" not in k.lower()
    ]
    varying = [k for k in numeric if len({float(a.info.get(k, np.nan)) for a in frames}) > 1]
    for key in X_KEYS:
        if key in varying:
            return key
    return varying[0] if varying else None


def read_paths(folder: Path) -> list[dict]:
    """Every path of the folder: ``{family, name, file, x_key, x, frames, dft}``."""
    import ase.io

    paths = []
    for file in sorted(folder.glob("*.xyz")):
        stem = file.stem
        if "train" in stem or stem.startswith("isolated"):
            continue
        frames = ase.io.read(file, index=":")
        if has_forces(frames[0]):
            continue  # a test set of the RMSE benchmark, not a path
        family = re.sub(r"_?\d+$", "", stem.removeprefix("test_"))
        groups: dict[str, list] = {}
        for atoms in frames:
            groups.setdefault(str(atoms.info.get("config_type", stem)), []).append(atoms)
        if len(groups) == 1:  # one path per file: name it by the file
            groups = {stem.removeprefix("test_"): frames}
        for name, group in groups.items():
            key = x_key(group)
            x = np.array(
                [float(a.info[key]) for a in group] if key else np.arange(len(group)), float
            )
            order = np.argsort(x, kind="stable")
            paths.append(
                {
                    "family": family,
                    "name": name,
                    "file": file.name,
                    "x_key": key or "frame",
                    "x": x[order],
                    "frames": [group[k] for k in order],
                    "dft": np.array([energy_of(group[k]) for k in order]),
                }
            )
    return paths


def isolated_energies(folder: Path) -> dict[int, float]:
    """DFT energies of the isolated atoms, by atomic number (empty without the file)."""
    import ase.io

    file = folder / "isolated_atoms.xyz"
    if not file.exists():
        return {}
    return {int(a.numbers[0]): energy_of(a) for a in ase.io.read(file, index=":")}


# ---------------------------------------------------------------------------- models


def load(path: str):
    """``(calculator, engine)`` of an mlpot checkpoint or a MACE ``.model``."""
    if path.endswith(".model"):
        os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # e3nn 0.4.4
        try:
            from mace.calculators import MACECalculator
        except ImportError:
            raise SystemExit(f"{path}: a MACE model, and mace-torch is not installed") from None
        return MACECalculator(model_paths=path, device="cpu", default_dtype="float64"), "mace"
    from mlpot.calculators import load_calculator

    calc = load_calculator(path, force_uncertainty=False)
    return calc, "mlpot"


def predict(calc, frames) -> dict[str, np.ndarray | None]:
    """Per frame: ``energy`` (eV); ``energy_std`` (eV) where the model gives it;
    ``in_domain`` and the largest ``d_min`` where it has domain statistics (else None)."""
    columns: dict[str, list] = {"energy": [], "energy_std": [], "in_domain": [], "d_min": []}
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = calc
        columns["energy"].append(copy.get_potential_energy())
        results = calc.results
        std, d_min = results.get("energy_std"), results.get("d_min")
        columns["energy_std"].append(np.nan if std is None else float(np.ravel(std)[0]))
        columns["in_domain"].append(
            np.nan if "in_domain" not in results else float(np.ravel(results["in_domain"])[0])
        )
        columns["d_min"].append(np.nan if d_min is None else float(np.max(d_min)))
    out = {key: np.array(values) for key, values in columns.items()}
    return {key: (None if key != "energy" and np.all(np.isnan(v)) else v) for key, v in out.items()}


def atom_energy(calc, z: int) -> float:
    from ase import Atoms

    atoms = Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]])
    atoms.calc = calc
    return float(atoms.get_potential_energy())


# ---------------------------------------------------------------------------- analysis


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def analyse(path: dict, predicted: dict, args, e0: dict, calc_e0: dict) -> dict:
    """The figures of one model along one path (see the module docstring) from its
    :func:`predict` columns."""
    x, dft = path["x"], path["dft"]
    energy, std = predicted["energy"], predicted["energy_std"]
    ref = int(np.argmin(dft))
    dft_rel, model_rel = dft - dft[ref], energy - energy[ref]
    error = model_rel - dft_rel
    low = dft_rel <= args.low_ev
    worst = int(np.argmax(np.abs(error)))
    out = {
        "frames": len(x),
        "x_key": path["x_key"],
        "ref_x": float(x[ref]),
        "rmse_mev": 1e3 * float(np.sqrt(np.mean(error**2))),
        "rmse_low_mev": 1e3 * float(np.sqrt(np.mean(error[low] ** 2))),
        "low_frames": int(low.sum()),
        "max_error_mev": 1e3 * float(np.abs(error[worst])),
        "max_error_x": float(x[worst]),
        "span_dft_ev": float(np.ptp(dft_rel)),
        "span_model_ev": float(np.ptp(model_rel)),
        "x_min_dft": float(x[ref]),
        "x_min_model": float(x[int(np.argmin(model_rel))]),
        "x": x.tolist(),
        "dft_rel_ev": dft_rel.tolist(),
        "model_rel_ev": model_rel.tolist(),
    }
    if "dist" in path["x_key"].lower():
        short = np.arange(len(x)) <= ref  # x < x_min(DFT) and the minimum itself
        slope = np.diff(model_rel[short]) / np.diff(x[short])
        signs = np.sign(slope[slope != 0])
        below = (model_rel < -args.hole_ev) & (np.arange(len(x)) < ref)
        deepest = int(np.argmin(np.where(np.arange(len(x)) < ref, model_rel, np.inf)))
        out.update(
            repulsive=bool(np.all(slope < 0)) if len(slope) else None,
            sign_changes=int(np.sum(signs[1:] != signs[:-1])),
            holes=int(below.sum()),
            hole_x=[float(v) for v in x[below]],
            deepest_short_range_ev=float(model_rel[deepest]) if ref > 0 else None,
            deepest_short_range_x=float(x[deepest]) if ref > 0 else None,
        )
    numbers = path["frames"][0].numbers
    if len(numbers) == 2 and e0 and calc_e0:  # a dimer: binding energies
        dft_sum = sum(e0[int(z)] for z in numbers)
        model_sum = sum(calc_e0[int(z)] for z in numbers)
        out.update(
            binding_at_min_dft_ev=float(dft[ref] - dft_sum),
            binding_at_min_model_ev=float(energy[ref] - model_sum),
            binding_at_longest_dft_ev=float(dft[-1] - dft_sum),
            binding_at_longest_model_ev=float(energy[-1] - model_sum),
        )
    if std is not None:
        others = np.arange(len(x)) != ref
        out.update(
            energy_std_ev=std.tolist(),
            mean_energy_std_ev=float(np.mean(std)),
            spearman_std_error=spearman(std[others], np.abs(error[others])),
        )
    if predicted["in_domain"] is not None:
        inside = predicted["in_domain"] > 0.5
        others = np.arange(len(x)) != ref
        out.update(
            in_domain=inside.tolist(),
            in_domain_fraction=float(np.mean(inside)),
            max_error_in_domain_mev=(
                1e3 * float(np.abs(error[inside]).max()) if inside.any() else None
            ),
            spearman_d_min_error=spearman(predicted["d_min"][others], np.abs(error[others])),
        )
    return out


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, spec)


def table(results: dict) -> list[str]:
    rows = [
        (
            "model",
            "path",
            "n",
            "RMSE meV",
            "RMSE<=1eV (n)",
            "max err meV @x",
            "span ref/model eV",
            "x_min ref/model",
            "repulsive (sign ch.)",
            "holes",
            "mean std eV",
            "rho(std,|err|)",
            "in domain",
            "max err in dom. meV",
            "rho(d_min,|err|)",
        )
    ]
    for label, per_path in results.items():
        for name, r in per_path.items():
            repulsive = (
                "-"
                if "repulsive" not in r
                else f"{'yes' if r['repulsive'] else 'no'} ({r['sign_changes']})"
            )
            rows.append(
                (
                    label,
                    name,
                    str(r["frames"]),
                    fmt(r["rmse_mev"], ".0f"),
                    f"{fmt(r['rmse_low_mev'], '.0f')} ({r['low_frames']})",
                    f"{r['max_error_mev']:.0f} @{r['max_error_x']:g}",
                    f"{r['span_dft_ev']:.2f} / {r['span_model_ev']:.2f}",
                    f"{r['x_min_dft']:g} / {r['x_min_model']:g}",
                    repulsive,
                    str(r.get("holes", "-")),
                    fmt(r.get("mean_energy_std_ev"), ".3f"),
                    fmt(r.get("spearman_std_error"), ".2f"),
                    fmt(r.get("in_domain_fraction"), ".2f"),
                    fmt(r.get("max_error_in_domain_mev"), ".0f"),
                    fmt(r.get("spearman_d_min_error"), ".2f"),
                )
            )
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]


def plot(paths: list[dict], results: dict, out: Path, reference: str = "DFT") -> list[str]:
    """One PNG per family: each path a panel, DFT and every model, relative energies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for family in dict.fromkeys(p["family"] for p in paths):
        members = [p for p in paths if p["family"] == family]
        cols = min(3, len(members))
        rows = -(-len(members) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
        for ax, path in zip(axes.flat, members, strict=False):
            name = f"{path['family']}:{path['name']}"
            first = next(iter(results.values()))[name]
            dft_rel = np.array(first["dft_rel_ev"])
            ax.plot(path["x"], dft_rel, "k.-", lw=1.5, label=reference)
            lows = [dft_rel.min()]
            for k, (label, per_path) in enumerate(results.items()):
                r = per_path[name]
                model = np.array(r["model_rel_ev"])
                lows.append(model.min())
                ax.plot(path["x"], model, "-", color=f"C{k}", label=label)
                if "energy_std_ev" in r:
                    std = np.array(r["energy_std_ev"])
                    ax.fill_between(path["x"], model - std, model + std, color=f"C{k}", alpha=0.2)
            ax.axvline(first["x_min_dft"], color="grey", ls=":", lw=0.8)
            top = max(1.0, min(float(dft_rel.max()) * 1.1, 10.0))
            ax.set_ylim(max(min(lows) - 0.3, -10.0), top)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(path["x_key"] + (" (Å)" if "dist" in path["x_key"].lower() else ""))
            ax.set_ylabel(f"E - E({reference} minimum frame) (eV)")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(members) :]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        file = out / f"paths_{family}.png"
        fig.savefig(file, dpi=110)
        plt.close(fig)
        written.append(str(file))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="mlpot .pt checkpoints, MACE .model files")
    parser.add_argument("--data", default="ethanol_dft", help="ethanol_dft or a data folder")
    parser.add_argument("--out", type=Path, default=Path("paths-out"), help="JSON and PNGs")
    parser.add_argument("--labels", help="comma-separated names of the models")
    parser.add_argument("--low-ev", type=float, default=1.0, help="rmse_low: DFT E_rel <= this")
    parser.add_argument("--hole-ev", type=float, default=0.1, help="depth counted as a hole")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--reference", default="DFT", help="name of the data's reference method, for the plots"
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    labels = args.labels.split(",") if args.labels else [Path(m).stem for m in args.models]
    if len(labels) != len(args.models) or len(set(labels)) != len(labels):
        parser.error("--labels: one distinct name per model")
    folder = data_folder(args.data)
    paths = read_paths(folder)
    e0 = isolated_energies(folder)
    args.out.mkdir(parents=True, exist_ok=True)
    results, meta = {}, {}
    for label, model in zip(labels, args.models, strict=True):
        calc, engine = load(model)
        elements = sorted({int(z) for p in paths for a in p["frames"] for z in a.numbers})
        calc_e0 = {z: atom_energy(calc, z) for z in elements} if e0 else {}
        meta[label] = {"model": model, "engine": engine, "isolated_atom_energies_ev": calc_e0}
        results[label] = {}
        for path in paths:
            name = f"{path['family']}:{path['name']}"
            results[label][name] = analyse(path, predict(calc, path["frames"]), args, e0, calc_e0)
    lines = table(results)
    print("\n".join(lines))
    figures = plot(paths, results, args.out, args.reference)
    document = {
        "data": str(folder),
        "reference": f"per path, {args.reference} and model relative to the frame where "
        f"{args.reference} is lowest",
        "isolated_atom_energies_dft_ev": e0,
        "models": meta,
        "paths": results,
        "table": lines,
        "figures": figures,
    }
    (args.out / "paths.json").write_text(json.dumps(document, indent=2))
    print(f"wrote {args.out / 'paths.json'} and {', '.join(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
