"""A hot test set for a data folder that has none: oracle-labelled frames of hot MD.

``../shared/data/ethanol_dft`` has one MD test set, at the temperature of its training
trajectory; the uncertainty and peer benches need a hotter one (Spearman of σ_F against
the force errors, AUROC hot vs in-distribution, accuracy away from the training
distribution). This script samples configurations from a Langevin trajectory of GFN2-xTB
(tblite; cheap, and a different method than the labels, so the frames are not biased
towards any model) at ``--temperature``, starting from the training file's first frame,
and labels each with PySCF DFT (``--xc``/``--basis``, density fitting; ethanol_dft's
reference is PBE/def2-SVP from ORCA: PySCF's energies agree to ~5 meV, a near-constant
offset, and its forces to ~1.4 meV/Å RMS on its test frames, ``--check``).

The labelled frames go to ``OUT/test_MD_<T>K.xyz`` (Å, eV, eV/Å), appended one at a time,
so a stopped run resumes where it stopped (the trajectory is seeded and replayed); every
file of ``--data`` is linked into ``OUT`` beside it, so ``OUT`` is a data folder the
benches read (``--data OUT``). ``--labelled FILE`` assembles the folder from frames
labelled before (``bench/data/``) instead of computing them.

```bash
python bench/hot_test_set.py --data ../shared/data/ethanol_dft --out runs/ethanol_hot \\
    --labelled bench/data/ethanol_dft_test_MD_1200K.xyz           # the committed frames
python bench/hot_test_set.py --data ../shared/data/ethanol_dft --out runs/ethanol_hot \\
    --temperature 1200 --frames 120                               # label them again (~30 min)
python bench/hot_test_set.py --data ../shared/data/ethanol_dft --check 5   # PySCF vs the data
```
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from data_folder import data_files  # noqa: E402  (beside this script)


def pyscf_labels(atoms, xc: str, basis: str) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) of ``atoms`` from PySCF restricted Kohn–Sham DFT with
    density fitting (a closed-shell molecule)."""
    from ase.units import Bohr, Hartree
    from pyscf import dft, gto

    mol = gto.M(
        atom=[
            (s, tuple(p))
            for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
        ],
        basis=basis,
        unit="Angstrom",
        charge=0,
        spin=0,
        verbose=0,
    )
    mf = dft.RKS(mol).density_fit()
    mf.xc = xc
    energy = mf.kernel()
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    gradient = mf.nuc_grad_method().kernel()
    return float(energy * Hartree), -np.asarray(gradient) * Hartree / Bohr


def hot_configurations(
    start, temperature: float, frames: int, stride: int, equilibrate: int, seed: int
):
    """Yield ``frames`` configurations of GFN2-xTB Langevin MD at ``temperature`` K (0.5 fs
    steps, every ``stride`` steps after ``equilibrate``); seeded, so a replay gives the same
    frames."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta
    from tblite.ase import TBLite

    atoms = start.copy()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature, rng=rng)
    dynamics = Langevin(
        atoms,
        0.5 * units.fs,
        temperature_K=temperature,
        friction=0.01 / units.fs,
        rng=rng,
        fixcm=False,
    )
    dynamics.run(equilibrate)
    for _ in range(frames):
        dynamics.run(stride)
        yield atoms.copy()


def link_folder(data: Path, out: Path) -> None:
    """Relative links in ``out`` to every file of ``data`` not already there."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(data.iterdir()):
        target = out / path.name
        if path.is_file() and not target.exists():
            target.symlink_to(os.path.relpath(path.resolve(), out.resolve()))


def label(args, out_file: Path, start) -> None:
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    done = len(ase.io.read(out_file, ":")) if out_file.exists() else 0
    if done >= args.frames:
        print(f"{out_file}: {done} frames, nothing to do")
        return
    print(
        f"{out_file}: {done} of {args.frames} frames labelled; sampling GFN2-xTB MD at "
        f"{args.temperature:g} K, labelling with PySCF {args.xc}/{args.basis}",
        flush=True,
    )
    started = time.perf_counter()
    configurations = hot_configurations(
        start, args.temperature, args.frames, args.stride, args.equilibrate, args.seed
    )
    for k, atoms in enumerate(configurations):
        if k < done:
            continue
        try:
            energy, forces = pyscf_labels(atoms, args.xc, args.basis)
        except RuntimeError as error:
            raise SystemExit(f"{out_file}: frame {k + 1}: {error}") from None
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
        frame.info["config_type"] = f"md_{args.temperature:g}K"
        ase.io.write(out_file, frame, format="extxyz", append=True)
        rate = (time.perf_counter() - started) / (k + 1 - done)
        print(
            f"  frame {k + 1}/{args.frames}: E {energy:.4f} eV, |F|max "
            f"{np.abs(forces).max():.2f} eV/Å ({rate:.0f} s per frame)",
            flush=True,
        )


def has_forces(atoms) -> bool:
    try:
        atoms.get_forces()
    except (RuntimeError, NotImplementedError):  # no calculator, or one without forces
        return False
    return True


def check(args, train: Path) -> None:
    """PySCF against the folder's own labels on its first test file's first frames."""
    import ase.io

    _, tests = data_files(args.data)
    path = next((p for p in tests if has_forces(ase.io.read(p, 0))), train)
    de, df = [], []
    for atoms in ase.io.read(path, f":{args.check}"):
        energy, forces = pyscf_labels(atoms, args.xc, args.basis)
        de.append(energy - atoms.get_potential_energy())
        df.append(forces - atoms.get_forces())
    df = np.concatenate(df)
    print(
        f"{path.name}, {len(de)} frames: PySCF - reference energy {np.mean(de) * 1e3:.2f} ± "
        f"{np.std(de) * 1e3:.2f} meV; forces RMS {np.sqrt(np.mean(df**2)) * 1e3:.2f} meV/Å, "
        f"max {np.abs(df).max() * 1e3:.2f} meV/Å"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of *train*/*test*.xyz")
    parser.add_argument("--out", type=Path, help="the data folder to write")
    parser.add_argument("--temperature", type=float, default=1200.0, help="K")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--stride", type=int, default=40, help="MD steps between frames")
    parser.add_argument("--equilibrate", type=int, default=400, help="MD steps before")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--xc", default="pbe")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--labelled", type=Path, help="frames labelled before (copied in)")
    parser.add_argument("--check", type=int, default=0, help="compare PySCF on N frames, exit")
    args = parser.parse_args()

    import ase.io

    train, _ = data_files(args.data)
    if args.check:
        check(args, train)
        return
    if args.out is None:
        parser.error("--out is required (unless --check)")
    link_folder(args.data, args.out)
    out_file = args.out / f"test_MD_{args.temperature:g}K.xyz"
    if args.labelled:
        if not out_file.exists():
            shutil.copyfile(args.labelled, out_file)
        print(f"{out_file}: {len(ase.io.read(out_file, ':'))} frames from {args.labelled}")
        return
    label(args, out_file, ase.io.read(train, 0))


if __name__ == "__main__":
    main()
