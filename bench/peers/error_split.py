"""Where a test set's force error comes from: frames in and out of the training conformations.

Usage::

    python bench/peers/error_split.py WORKDIR [MORE_WORKDIRS] --dihedral 4,9,10,11
        [--dihedral I,J,K,L] [--sets 300K,600K] [--margin 15] [--json OUT]

A workdir is one of ``mace_vs_mlpot.py``'s: ``train.xyz``, ``test_<set>.xyz`` and the
predictions ``pred_<engine>_<set>.npz`` its measuring step wrote. A test frame is *outside*
the training conformations when one of the given dihedrals (0-based atom indices, the
same atom order in every frame, as in an MD trajectory) lies more than ``--margin``
degrees from that dihedral in every training frame. Per workdir, engine and set: the
frame counts, the force RMSE over all frames, inside and outside, and the share of the
squared error that the outside frames carry. An independent test trajectory can visit a
conformer the training run never did; then its RMSE measures extrapolation to that
conformer more than accuracy where there was data, and this split says how much.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.io import read


def dihedrals(frames: list, indices: tuple[int, int, int, int]) -> np.ndarray:
    """The dihedral ``indices`` of every frame, degrees in [0, 360)."""
    return np.array([frame.get_dihedral(*indices) for frame in frames])


def outside(train: np.ndarray, test: np.ndarray, margin: float) -> np.ndarray:
    """Test angles farther than ``margin`` degrees (on the circle) from every training one."""
    gap = np.abs(test[:, None] - train[None, :]) % 360.0  # (n_test, n_train)
    return np.minimum(gap, 360.0 - gap).min(axis=1) > margin


def split(workdir: Path, sets: list[str], torsions: list[tuple], margin: float) -> dict:
    train = read(workdir / "train.xyz", ":")
    result = {}
    for name in sets:
        path = workdir / f"test_{name}.xyz"
        if not path.exists():
            raise SystemExit(f"{path}: no such test set in {workdir}")
        test = read(path, ":")
        far = np.zeros(len(test), dtype=bool)
        for torsion in torsions:
            far |= outside(dihedrals(train, torsion), dihedrals(test, torsion), margin)
        reference = np.stack([frame.arrays["REF_forces"] for frame in test])  # (F, N, 3)
        for npz in sorted(workdir.glob(f"pred_*_{name}.npz")):
            engine = npz.stem.removeprefix("pred_").removesuffix(f"_{name}")
            forces = np.load(npz)["forces"].reshape(reference.shape)
            squared = ((forces - reference) ** 2).mean(axis=(1, 2))  # (F,)

            def rmse(mask: np.ndarray, squared: np.ndarray = squared) -> float | None:
                return float(np.sqrt(squared[mask].mean()) * 1e3) if mask.any() else None

            result[f"{engine} {name}"] = {
                "frames": len(test),
                "outside": int(far.sum()),
                "rmse_mev_a": rmse(np.ones_like(far)),
                "rmse_inside": rmse(~far),
                "rmse_outside": rmse(far),
                "outside_share_of_squared_error": float(squared[far].sum() / squared.sum()),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", type=Path, nargs="+")
    parser.add_argument(
        "--dihedral", action="append", required=True, help="I,J,K,L atom indices (0-based)"
    )
    parser.add_argument("--sets", default="300K", help="test sets, comma separated")
    parser.add_argument("--margin", type=float, default=15.0, help="degrees")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    torsions = []
    for text in args.dihedral:
        indices = tuple(int(i) for i in text.split(","))
        if len(indices) != 4:
            raise SystemExit(f"--dihedral {text}: four atom indices expected")
        torsions.append(indices)
    figures = {}
    print(
        f"{'workdir':28s} {'engine set':16s} {'out/frames':>10s} {'all':>7s} "
        f"{'inside':>7s} {'outside':>8s} {'share':>6s}"
    )
    for workdir in args.workdirs:
        rows = split(workdir, args.sets.split(","), torsions, args.margin)
        figures[str(workdir)] = rows
        for key, row in rows.items():
            out = row["rmse_outside"]
            print(
                f"{workdir.name:28s} {key:16s} {row['outside']:>4d}/{row['frames']:<5d} "
                f"{row['rmse_mev_a']:7.1f} {row['rmse_inside']:7.1f} "
                f"{(f'{out:8.1f}' if out is not None else '       -')} "
                f"{row['outside_share_of_squared_error']:6.2f}"
            )
    print("force RMSE in meV/Å; share: of the squared force error, carried by the outside frames")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
