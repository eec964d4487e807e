"""Consistency checks: the batched prediction equals the calculator structure by structure,
and the energy is extensive (a supercell has the energy of its copies)."""

from __future__ import annotations

import numpy as np
import torch

from mlpot.data.graph import atoms_to_graph, collate
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict
from mlpot.testing.case import ConformanceCase, assert_close, energy_scale


def check_batched_equals_single(case: ConformanceCase) -> None:
    """One batch of every structure (the first of them twice), through
    :func:`~mlpot.physics.derivatives.predict` as training uses it, gives each structure
    the calculator's energy, forces and stress; a structure without periodicity gets zero
    stress."""
    model, rtol = case.model, case.settings.exact_rtol
    names = [*case.structures, next(iter(case.structures))]
    graphs = [
        atoms_to_graph(
            case.structures[name], model.cutoff, dtype=torch.float64, elements=model.elements
        )
        for name in names
    ]
    out = predict(model, collate(graphs), forces=True, stress=True)
    energies = out[outputs.ENERGY].numpy()  # (S,)
    counts = [len(case.structures[name]) for name in names]
    forces = np.split(out[outputs.FORCES].numpy(), np.cumsum(counts)[:-1])  # S x (N_s, 3)
    stress = out[outputs.STRESS].numpy()  # (S, 3, 3)
    entries = {f"batch entry {k} ({name})": (k, name) for k, name in enumerate(names)}

    def one(label: str) -> None:
        k, name = entries[label]
        atoms, reference = case.structures[name], case.reference[name]
        e_scale = energy_scale(atoms, reference)
        assert_close(energies[k], reference.energy, rtol=rtol, scale=e_scale, what="energy")
        assert_close(forces[k], reference.forces, rtol=rtol, what="forces")
        if reference.stress is not None:
            assert_close(stress[k], reference.stress, rtol=rtol, what="stress")
        elif not atoms.pbc.any():
            assert_close(stress[k], np.zeros((3, 3)), rtol=rtol, what="stress without a volume")

    case.for_each(entries, one)


def check_supercell_extensivity(case: ConformanceCase) -> None:
    """A 2×2×2 supercell (2×2×1 for a slab) of every periodic structure has the energy of
    its copies, their forces and local energies repeated, and the same stress."""
    rtol = case.settings.exact_rtol

    def one(name: str) -> None:
        atoms, reference = case.structures[name], case.reference[name]
        repeat = tuple(2 if periodic else 1 for periodic in atoms.pbc)
        copies = int(np.prod(repeat))
        result = case.evaluate(atoms.repeat(repeat))
        e_scale = copies * energy_scale(atoms, reference)
        expected_energy = copies * reference.energy
        assert_close(result.energy, expected_energy, rtol=rtol, scale=e_scale, what="energy")
        expected_forces = np.tile(reference.forces, (copies, 1))
        assert_close(result.forces, expected_forces, rtol=rtol, what="forces")
        assert_close(
            result.local_energies,
            np.tile(reference.local_energies, copies),
            rtol=rtol,
            scale=e_scale,
            what="local energies",
        )
        if reference.stress is not None:
            assert_close(result.stress, reference.stress, rtol=rtol, what="stress")

    case.for_each(case.periodic(), one)
