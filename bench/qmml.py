"""QM/ML hybrid (issue 19): where the learned potential alone is poor in the core and the
hybrid is not, energy conservation, ε_F and ΔE_max.

1. A cluster of ``--waters`` water molecules, relaxed with GFN2-xTB; GFN2-xTB Langevin MD at
   300 K (0.5 fs, one frame every 10 steps after 200) labels the training set.
2. An ``mpnn`` learned from those near-equilibrium frames (``--train-time`` s budget).
3. Bond breaking at the QM centre: the central water's most strongly H-bonded proton is
   moved from its own O onto the acceptor water's O (0.98 Å from it), other atoms fixed,
   ``--path`` points. Energies relative to the start and the force on the proton from the
   oracle (xTB on the whole cluster), the ML model alone, the hybrid (core: the donor
   and acceptor waters; switched groups: the other waters, ``--r-core``/``--r-buffer`` Å
   from the core's centroid; QM correction to three bodies, core + two waters), the same
   to two bodies ("hybrid b2"), and the hard buffered cluster (below; "hard": one QM
   cluster of the core and every water inside r_buffer, all many-body QM terms, no
   switch). "hybrid+shell" adds the waters whose O is within ``--shell`` Å of a core O to
   the core.
3b. Regions: the same path in the training cluster and in a larger relaxed cluster of
   ``--large`` waters (outer waters beyond r_buffer stay ML), for each ``--regions``
   ``r_core:r_buffer`` pair: the largest path-energy error of the two- and three-body
   hybrids and the hard cluster, the groups inside r_buffer, and ε_F of the interface at
   the path's end (QM vs ML on the buffered cluster): the diagnostic a user has to choose
   the radii, since inside the switch zone the energy is partly ML.
4. ε_F (QM vs ML forces on the interface atoms, both methods on the whole cluster, and
   both on the hybrid's buffered QM cluster) and ΔE_max (a water driven across both
   radii, steps of 1e-4 Å) of the hybrid, and ΔE_max of the hard buffered cluster.
5. NVE (velocity Verlet, ``--timestep`` fs, ``--nve-steps`` steps from the last MD frame
   with fresh 300 K momenta, same seed): drift (meV/atom/ps), fluctuation and largest
   deviation (meV/atom) for the hybrid, the ML model alone and the oracle alone, and the
   cost per step.

The MD frames and the model are cached in ``--work``.

    python bench/qmml.py --nve-steps 300                   # ~25 min on 2 CPU cores
    python bench/qmml.py --waters 6 --train-time 60 --nve-steps 100 --work qmml-smoke  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import molecule  # noqa: E402
from ase.optimize import BFGS  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from mlpot.active.oracle_md import oracle_md_frames  # noqa: E402
from mlpot.apps.qmml import QMMLCalculator, evaluate  # noqa: E402
from mlpot.apps.qmml_diagnostics import (  # noqa: E402
    diagnose,
    energy_jumps,
    force_mismatch,
    nve_drift,
)
from mlpot.calculators.ase_calculator import load_calculator  # noqa: E402
from mlpot.calculators.oracles import make_oracle  # noqa: E402
from mlpot.training import parse_config, run_training  # noqa: E402


class HardCluster(QMMLCalculator):
    """The conventional buffered cluster, for contrast: ``E_ML + Δ(core ∪ every group
    inside r_buffer)``, no switch; its energy jumps when a group crosses r_buffer."""

    def calculate(self, atoms=None, properties=None, system_changes=()):
        super(QMMLCalculator, self).calculate(atoms, properties, system_changes)
        part = self.partition(self.atoms)
        energy, forces, _ = evaluate(self.ml, self.atoms, role="ML")
        delta, delta_forces = self.delta(self.atoms, [part.groups[k] for k in part.active_groups()])
        self.results = {"energy": energy + delta, "forces": forces + delta_forces}


def water_cluster(n: int, seed: int, oracle) -> Atoms:
    """``n`` waters on a jittered 2.9 Å grid, random orientations, relaxed (fmax 0.05)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n ** (1 / 3)))
    sites = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)])
    sites = sites[np.argsort(np.linalg.norm(sites - sites.mean(0), axis=1), kind="stable")][:n]
    atoms = Atoms()
    for site in sites:
        water = molecule("H2O")
        turn = Rotation.random(random_state=int(rng.integers(1 << 30)))
        water.positions = turn.apply(water.positions - water.get_center_of_mass())
        water.positions += 2.9 * site + rng.normal(0, 0.1, 3)
        atoms += water
    atoms.calc = oracle
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=400)
    atoms.calc = None
    return atoms


def md_frames(start: Atoms, oracle, n_frames: int, seed: int) -> list[Atoms]:
    """GFN2-xTB Langevin MD at 300 K: ``n_frames`` frames every 10 steps after 200
    (mlpot's checked oracle MD)."""
    settings = {"stride": 10, "equilibration": 200, "timestep_fs": 0.5, "seed": seed}
    run = oracle_md_frames(start, oracle, temperature=300.0, frames=n_frames, **settings)
    return [frame.labelled() for frame in run]


def train(frames: list[Atoms], work: Path, budget_s: float) -> Path:
    config = parse_config(
        {
            "model": {"name": "mpnn", "cutoff": 4.5, "channels": 32},
            "training": {
                "epochs": 2000,
                "batch_size": 8,
                "max_time_s": budget_s,
                "progress": False,
            },
            "data": {"validation_fraction": 0.1},
            "fisher": {"structures": 0},
            "output": str(work / "model"),
        }
    )
    return Path(run_training(config, train=frames, log=lambda _: None).model_path)


def reaction_site(atoms: Atoms) -> tuple[list[int], int, int]:
    """The water nearest the cluster's centre, its most strongly H-bonded proton and the
    acceptor water's O; the QM core is the donor and acceptor waters (O, H, H each)."""
    oxygens = np.flatnonzero(atoms.numbers == 8)
    centre = atoms.positions[oxygens].mean(axis=0)
    donor = int(oxygens[np.argmin(np.linalg.norm(atoms.positions[oxygens] - centre, axis=1))])
    pairs = [(h, int(o)) for h in (donor + 1, donor + 2) for o in oxygens if o != donor]
    h, acceptor = min(pairs, key=lambda pair: atoms.get_distance(*pair))
    return [donor, donor + 1, donor + 2, acceptor, acceptor + 1, acceptor + 2], h, acceptor


def proton_path(atoms: Atoms, donor: int, h: int, acceptor: int, points: int) -> list[Atoms]:
    """Proton ``h`` moved in a straight line from its place onto the acceptor O (ending
    0.98 Å from it on the O-O line), every other atom fixed."""
    start = atoms.positions[h].copy()
    direction = atoms.positions[acceptor] - atoms.positions[donor]
    end = atoms.positions[acceptor] - 0.98 * direction / np.linalg.norm(direction)
    path = []
    for t in np.linspace(0.0, 1.0, points):
        moved = atoms.copy()
        moved.positions[h] = (1 - t) * start + t * end
        path.append(moved)
    return path


def first_shell(atoms: Atoms, core: list[int], cutoff: float) -> list[int]:
    """Atoms of the waters whose O is within ``cutoff`` Å of a core O."""
    oxygens = [int(o) for o in np.flatnonzero(atoms.numbers == 8) if o not in core]
    core_o = [i for i in core if atoms.numbers[i] == 8]
    near = [o for o in oxygens if min(atoms.get_distance(o, c) for c in core_o) < cutoff]
    return [i for o in near for i in (o, o + 1, o + 2)]


def region_scan(start: Atoms, ml, regions, points: int) -> list[dict]:
    """Path-energy errors of the two- and three-body hybrids and the hard cluster for
    each ``(r_core, r_buffer)``, and ε_F (buffered cluster) at the path's end."""
    core, h, acceptor = reaction_site(start)
    path = proton_path(start, core[0], h, acceptor, points)
    rows = []
    for r_core, r_buffer in regions:
        options = {"qm_atoms": core, "r_core": r_core, "r_buffer": r_buffer}
        calcs = {
            "oracle": make_oracle("xtb"),
            "ml": ml,
            "b2": QMMLCalculator(make_oracle("xtb"), ml, body_order=2, **options),
            "b3": QMMLCalculator(make_oracle("xtb"), ml, body_order=3, **options),
            "hard": HardCluster(make_oracle("xtb"), ml, **options),
        }
        summary = compare_path(path, h, core, calcs)["summary"]
        mismatch = force_mismatch(calcs["b3"], path[-1])
        part = calcs["b3"].partition(start)
        rows.append(
            {
                "r_core": r_core,
                "r_buffer": r_buffer,
                "groups_inside": len(part.active_groups()),
                "groups": len(part.groups),
                **{f"error_{k}_eV": v["max_abs_energy_error_eV"] for k, v in summary.items()},
                "eps_F_rms_end": mismatch.rms,
                "eps_F_max_end": mismatch.max,
            }
        )
    return rows


def compare_path(path, h, core, calcs) -> dict:
    rows, energies, forces = [], {}, {}
    for name, calc in calcs.items():
        results = [evaluate(calc, atoms, role=name) for atoms in path]
        energies[name] = np.array([e for e, _, _ in results]) - results[0][0]
        forces[name] = np.array([f[h] for _, f, _ in results])
    for k, atoms in enumerate(path):
        rows.append(
            {
                "r_OH": float(atoms.get_distance(core[0], h)),
                **{f"dE_{name}": float(energies[name][k]) for name in calcs},
            }
        )
    summary = {}
    for name in calcs:
        if name == "oracle":
            continue
        summary[name] = {
            "max_abs_energy_error_eV": float(np.abs(energies[name] - energies["oracle"]).max()),
            "end_energy_error_eV": float(energies[name][-1] - energies["oracle"][-1]),
            "proton_force_rmse_eV_per_A": float(
                np.sqrt(np.mean(np.sum((forces[name] - forces["oracle"]) ** 2, axis=1)))
            ),
        }
    return {"rows": rows, "summary": summary, "barrier_oracle_eV": float(energies["oracle"].max())}


def nve(atoms, calcs, steps: int, timestep: float, seed: int) -> dict:
    out = {}
    for name, calc in calcs.items():
        start = time.perf_counter()
        run = nve_drift(
            atoms, calc, steps=steps, timestep_fs=timestep, temperature_K=300, seed=seed
        )
        out[name] = {
            "drift_meV_per_atom_per_ps": run.drift,
            "fluctuation_meV_per_atom": run.fluctuation,
            "max_deviation_meV_per_atom": run.max_deviation,
            "ms_per_step": 1e3 * (time.perf_counter() - start) / steps,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waters", type=int, default=16)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--train-time", type=float, default=300.0, help="s")
    parser.add_argument("--r-core", type=float, default=3.2)
    parser.add_argument("--r-buffer", type=float, default=5.0)
    parser.add_argument("--path", type=int, default=12)
    parser.add_argument("--shell", type=float, default=3.0, help="O-O, Å, hybrid+shell core")
    parser.add_argument("--large", type=int, default=32, help="waters, region scan")
    parser.add_argument("--regions", default="3.2:5.0,4.0:5.5,5.0:6.5", help="Å pairs")
    parser.add_argument("--nve-steps", type=int, default=1000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="qmml-bench")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    oracle = make_oracle("xtb")
    t0 = time.perf_counter()

    data = work / "frames.xyz"
    if not data.exists():
        start = water_cluster(args.waters, args.seed, oracle)
        ase.io.write(data, [start, *md_frames(start, oracle, args.frames, args.seed)])
    frames = ase.io.read(data, ":")
    start, frames = frames[0], frames[1:]
    model_path = work / "model" / "model.pt"
    if not model_path.exists():
        model_path = train(frames, work, args.train_time)
    metrics = json.loads((model_path.parent / "metrics.json").read_text())
    print(f"data and model ready in {time.perf_counter() - t0:.0f} s ({model_path})")
    print(f"model metrics: { {k: v for k, v in metrics.items() if not isinstance(v, dict)} }")

    ml = load_calculator(model_path, force_uncertainty=False, domain_scores=False)
    core, h, acceptor = reaction_site(start)
    options = {"qm_atoms": core, "r_core": args.r_core, "r_buffer": args.r_buffer}
    hybrid = QMMLCalculator(make_oracle("xtb"), ml, body_order=3, **options)
    part = hybrid.partition(start)
    print(
        f"{len(start)} atoms; core = donor and acceptor waters {core}; groups inside r_buffer: "
        f"{len(part.active_groups())} of {len(part.groups)}; interface atoms: "
        f"{len(part.interface_atoms())}"
    )

    hard = HardCluster(make_oracle("xtb"), ml, **options)
    shell = first_shell(start, core, args.shell)
    wide = QMMLCalculator(make_oracle("xtb"), ml, **{**options, "qm_atoms": core + shell})
    print(f"hybrid+shell: the core and the {len(shell) // 3} waters H-bonded to it in the core")
    path = proton_path(start, core[0], h, acceptor, args.path)
    pairwise = QMMLCalculator(make_oracle("xtb"), ml, body_order=2, **options)
    calcs = {
        "oracle": oracle,
        "ml": ml,
        "hybrid": hybrid,
        "hybrid b2": pairwise,
        "hybrid+shell": wide,
        "hard": hard,
    }
    bond = compare_path(path, h, core, calcs)
    print("\nproton transfer at the QM centre (energies relative to the start, eV):")
    print(" ".join(f"{name:>12}" for name in ["r(O-H) Å", *calcs]))
    for row in bond["rows"]:
        values = [row["r_OH"], *(row[f"dE_{name}"] for name in calcs)]
        print(" ".join(f"{v:12.3f}" for v in values))
    for name, figures in bond["summary"].items():
        print(
            f"{name:>12}: max |ΔE error| {figures['max_abs_energy_error_eV']:.3f} eV, at the end "
            f"{figures['end_energy_error_eV']:+.3f} eV; proton force RMSE "
            f"{figures['proton_force_rmse_eV_per_A']:.3f} eV/Å"
        )

    regions = [tuple(float(r) for r in pair.split(":")) for pair in args.regions.split(",")]
    large_file = work / f"cluster{args.large}.xyz"
    if not large_file.exists():
        ase.io.write(large_file, water_cluster(args.large, args.seed, oracle))
    clusters = {f"{args.waters} waters": start, f"{args.large} waters": ase.io.read(large_file)}
    scans = {}
    for name, cluster in clusters.items():
        scans[name] = region_scan(cluster, ml, regions, args.path)
        print(f"\nregions, {name}: largest path-energy error (eV) and ε_F at the end (eV/Å)")
        print("r_core r_buffer groups      ML  2-body  3-body    hard  ε_F rms  ε_F max")
        for row in scans[name]:
            errors = [row[f"error_{k}_eV"] for k in ("ml", "b2", "b3", "hard")]
            print(
                f"{row['r_core']:6.1f} {row['r_buffer']:8.1f} "
                f"{row['groups_inside']:3d}/{row['groups']:<3d}"
                + "".join(f"{e:8.3f}" for e in errors)
                + f"{row['eps_F_rms_end']:9.3f}{row['eps_F_max_end']:9.3f}"
            )

    report = diagnose(hybrid, start, full_qm=True)
    atom = int(part.groups[int(np.argmin(np.abs(part.distances - args.r_buffer)))][0])
    hard_jumps = energy_jumps(hard, start, atom)
    local = force_mismatch(hybrid, start)
    print(
        f"\nε_F (interface atoms, QM vs ML both on the whole cluster): RMS "
        f"{report.force_mismatch_rms:.3f} eV/Å, max {report.force_mismatch_max:.3f} eV/Å over "
        f"{report.n_interface_atoms} atoms; both on the buffered QM cluster: RMS "
        f"{local.rms:.3f}, max {local.max:.3f} eV/Å"
    )
    jumps = report.energy_jumps
    print(
        f"ΔE_max switched hybrid: {jumps.max_jump:.2e} eV at {jumps.at_distance:.4f} Å "
        f"(largest energy change of a step {jumps.largest_change:.2e} eV)"
    )
    print(
        f"ΔE_max hard buffered cluster: {hard_jumps.max_jump:.2e} eV at "
        f"{hard_jumps.at_distance:.3f} Å (water {atom})"
    )

    md = nve(
        frames[-1],
        {"hybrid": hybrid, "ml": ml, "oracle": oracle},
        args.nve_steps,
        args.timestep,
        args.seed,
    )
    print(f"\nNVE, {args.nve_steps} steps of {args.timestep} fs from 300 K:")
    for name, figures in md.items():
        print(
            f"{name:>7}: drift {figures['drift_meV_per_atom_per_ps']:+.3f} meV/atom/ps, "
            f"fluctuation {figures['fluctuation_meV_per_atom']:.3f} meV/atom, max deviation "
            f"{figures['max_deviation_meV_per_atom']:.3f} meV/atom, "
            f"{figures['ms_per_step']:.0f} ms/step"
        )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        figures = {
            "path": bond,
            "regions": scans,
            "force_mismatch": vars(report.force_mismatch),
            "force_mismatch_cluster": vars(local),
            "energy_jump_max_eV": report.energy_jump_max,
            "energy_jump_hard_cluster_eV": hard_jumps.max_jump,
            "nve": md,
            "metrics": metrics,
        }
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
