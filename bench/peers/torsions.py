"""Torsion scans of a molecule's rotatable bonds, labelled by the oracle: paths for ``paths.py``.

Usage::

    python bench/peers/torsions.py --data aspirin_gfn2 --out runs/aspirin_torsions
    python bench/peers/paths.py MODEL.pt MACE.model --data runs/aspirin_torsions \
        --reference GFN2-xTB --out runs/aspirin_torsion_paths

Start: the first frame of the data's training file, relaxed with the oracle (GFN2-xTB
through tblite, as ``aspirin_gfn2`` was labelled; BFGS to ``--fmax``). Rotatable bonds: the
single bonds outside rings (removing the bond splits the molecule) whose two atoms both have
another neighbour; bonds from ASE's natural cutoffs. The dihedral of a bond ``i-j`` is
``a-i-j-b`` with ``a``, ``b`` the heaviest other neighbours (lowest index among equals).
The side of ``j`` (the smaller fragment, so the larger one stays put) turns.

* **rigid**: the fragment turns as a rigid body about the bond, every ``--rigid-step``
  degrees through 360; bond lengths and angles stay those of the minimum, so rotations
  bring groups into contacts an MD run at 300 K never sees.
* **relaxed**: at every ``--relaxed-step`` degrees the dihedral is held
  (``ase.constraints.FixInternals``) and everything else relaxed by the oracle (BFGS to
  ``--fmax``, at most ``--max-steps``), each point starting from the previous one; the
  minimum-energy path a molecule follows when it turns slowly.

Output (extxyz, energy only, so ``paths.py`` treats them as paths and the RMSE benchmark
does not take them for test sets): ``test_torsion_rigid.xyz`` and
``test_torsion_relaxed.xyz`` with one path per bond (``config_type`` = ``a-i-j-b`` as
element symbols and indices) and the coordinate ``dihedral`` in degrees, plus
``torsions.json`` (bonds, the oracle, timings). A scan already in ``--out`` is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paths import data_folder  # noqa: E402


def oracle():
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


def bond_graph(atoms) -> dict[int, set[int]]:
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    nl.update(atoms)
    return {i: set(int(j) for j in nl.get_neighbors(i)[0]) for i in range(len(atoms))}


def side(graph: dict[int, set[int]], i: int, j: int) -> set[int]:
    """Atoms reached from ``j`` without crossing the bond ``i-j`` (contains ``i`` in a ring)."""
    seen, todo = {j}, [j]
    while todo:
        k = todo.pop()
        for n in graph[k]:
            if n not in seen and not (k == j and n == i):
                seen.add(n)
                todo.append(n)
    return seen


def rotatable_bonds(atoms) -> list[dict]:
    """``{dihedral: (a, i, j, b), moving: [...]}`` for every rotatable bond."""
    graph = bond_graph(atoms)
    numbers = atoms.numbers

    def pick(centre: int, exclude: int) -> int:
        others = sorted(graph[centre] - {exclude}, key=lambda k: (-numbers[k], k))
        return others[0]

    bonds = []
    for i in sorted(graph):
        for j in sorted(graph[i]):
            if j <= i or len(graph[i]) < 2 or len(graph[j]) < 2:
                continue
            moving_j, moving_i = side(graph, i, j), side(graph, j, i)
            if i in moving_j:  # a ring bond
                continue
            if len(moving_j) > len(moving_i):  # turn the smaller fragment
                i, j, moving_j = j, i, moving_i
            bonds.append({"dihedral": (pick(i, j), i, j, pick(j, i)), "moving": sorted(moving_j)})
    return bonds


def name_of(atoms, dihedral) -> str:
    return "-".join(f"{atoms[k].symbol}{k}" for k in dihedral)


def labelled(atoms, calc, **info):
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms.calc = calc  # a relaxation's last energy is reused, not computed again
    energy = float(atoms.get_potential_energy())
    copy = atoms.copy()
    copy.constraints = []
    copy.calc = SinglePointCalculator(copy, energy=energy)
    copy.info.update(info)
    return copy


def relax(atoms, calc, fmax: float, max_steps: int) -> int:
    from ase.optimize import BFGS

    atoms.calc = calc
    opt = BFGS(atoms, logfile=None)
    opt.run(fmax=fmax, steps=max_steps)
    return int(opt.nsteps)


def rigid_scan(minimum, bond: dict, step: float, calc) -> list:
    a, i, j, b = bond["dihedral"]
    start = minimum.get_dihedral(a, i, j, b)
    frames = []
    for angle in np.arange(0.0, 360.0, step):
        atoms = minimum.copy()
        mask = np.zeros(len(atoms), int)
        mask[bond["moving"]] = 1
        atoms.set_dihedral(a, i, j, b, (start + angle) % 360.0, mask=mask)
        frames.append(
            labelled(atoms, calc, dihedral=float(angle), config_type=name_of(atoms, (a, i, j, b)))
        )
    return frames


def relaxed_scan(minimum, bond: dict, args, calc) -> list:
    from ase.constraints import FixInternals

    a, i, j, b = bond["dihedral"]
    start = minimum.get_dihedral(a, i, j, b)
    atoms, frames = minimum.copy(), []
    mask = np.zeros(len(atoms), int)
    mask[bond["moving"]] = 1
    for angle in np.arange(0.0, 360.0, args.relaxed_step):
        atoms.set_constraint()
        atoms.set_dihedral(a, i, j, b, (start + angle) % 360.0, mask=mask)
        target = atoms.get_dihedral(a, i, j, b)
        atoms.set_constraint(FixInternals(dihedrals_deg=[[target, [a, i, j, b]]]))
        steps = relax(atoms, calc, args.fmax, args.max_steps)
        frame = labelled(
            atoms, calc, dihedral=float(angle), config_type=name_of(atoms, (a, i, j, b))
        )
        frame.info["relax_steps"] = steps
        frames.append(frame)
    return frames


def main(argv: list[str] | None = None) -> int:
    import ase.io

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="aspirin_gfn2", help="a ../shared/data set or a folder")
    p.add_argument("--out", type=Path, default=Path("torsions"), help="folder of the scans")
    p.add_argument("--rigid-step", type=float, default=15.0, help="degrees")
    p.add_argument("--relaxed-step", type=float, default=30.0, help="degrees")
    p.add_argument("--fmax", type=float, default=0.02, help="eV/Å, relaxations")
    p.add_argument("--max-steps", type=int, default=300, help="BFGS steps per relaxation")
    args = p.parse_args(argv)

    folder = data_folder(args.data)
    train = next(iter(sorted(folder.glob("*train*.xyz"))))
    args.out.mkdir(parents=True, exist_ok=True)
    calc = oracle()
    minimum = ase.io.read(train, index=0)
    minimum.calc = None
    started = time.perf_counter()
    steps = relax(minimum, calc, args.fmax / 4, 10 * args.max_steps)
    print(f"{train.name} frame 0 relaxed with GFN2-xTB in {steps} steps")
    bonds = rotatable_bonds(minimum)
    summary = {
        "data": str(folder),
        "oracle": "GFN2-xTB (tblite)",
        "start": f"{train.name} frame 0, relaxed (fmax {args.fmax / 4} eV/Å)",
        "bonds": [{"name": name_of(minimum, b["dihedral"]), "moving": b["moving"]} for b in bonds],
    }
    for kind, scan in (
        ("rigid", lambda b: rigid_scan(minimum, b, args.rigid_step, calc)),
        ("relaxed", lambda b: relaxed_scan(minimum, b, args, calc)),
    ):
        file = args.out / f"test_torsion_{kind}.xyz"
        if file.exists():
            print(f"{file} kept")
            continue
        frames, clock = [], time.perf_counter()
        for bond in bonds:
            path = scan(bond)
            span = np.ptp([f.get_potential_energy() for f in path])
            print(
                f"{kind:7s} {name_of(minimum, bond['dihedral']):16s} {len(path)} frames, "
                f"span {span:.3f} eV ({time.perf_counter() - clock:.0f} s)"
            )
            frames.extend(path)
        ase.io.write(file.with_suffix(".tmp.xyz"), frames, format="extxyz")
        file.with_suffix(".tmp.xyz").rename(file)
        summary[f"{kind}_s"] = time.perf_counter() - clock
    summary["total_s"] = time.perf_counter() - started
    (args.out / "torsions.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(bonds)} rotatable bonds; scans in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
