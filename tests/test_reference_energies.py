"""Reference energies are fitted to what the parameter-free terms leave of the labels."""

from __future__ import annotations

import ase.io
import numpy as np
from conftest import emt_copper_frames

from mlpot.data.dataset import read_dataset
from mlpot.models.registry import with_elements
from mlpot.physics.derivatives import predict
from mlpot.training.config import parse_config
from mlpot.training.initial_model import build_initial_model, fixed_terms

LJ = {"name": "lj", "sigma": 2.33, "epsilon": 0.4, "cutoff": 4.0, "smooth": True}


def test_offsets_leave_out_fixed_terms(tmp_path):
    """With a fixed LJ term in the model, the offsets are the least-squares fit to
    label − LJ (not to the labels, which would count the LJ energy twice)."""
    frames = emt_copper_frames(8)  # bulk and vacancy cells: two compositions
    ase.io.write(tmp_path / "cu.xyz", frames)
    config = parse_config(
        {
            "data": {"train": str(tmp_path / "cu.xyz"), "validation_fraction": 0.0},
            "model": {"name": "sum", "terms": [{"name": "bpnn", "cutoff": 4.0}, LJ]},
            "training": {"dtype": "float64"},
            "output": str(tmp_path / "run"),
        }
    )
    samples = read_dataset(str(tmp_path / "cu.xyz"))
    model, graphs = build_initial_model(config, samples)
    offsets, learned = model.terms
    (lj,) = fixed_terms(learned)
    assert lj.name == "lj"  # the bpnn term has parameters; the LJ term has none

    lj_energy = np.array([float(predict(lj, g, forces=False)["energy"]) for g in graphs])
    counts = np.array([[len(s.atoms)] for s in samples], dtype=float)
    labels = np.array([s.energy for s in samples])
    expected, *_ = np.linalg.lstsq(counts, labels - lj_energy, rcond=None)
    assert abs(lj_energy).max() > 1.0  # the LJ term matters: double counting would show
    np.testing.assert_allclose(offsets.config()["energies"], expected, rtol=1e-10)
    # fitted to the labels alone they would differ by about the LJ energy per atom
    naive, *_ = np.linalg.lstsq(counts, labels, rcond=None)
    assert abs(naive[0] - expected[0]) > 0.01


def test_elements_reach_nested_terms():
    spec = with_elements({"name": "sum", "terms": [{"name": "bpnn"}, dict(LJ)]}, [29])
    assert all(term["elements"] == [29] for term in spec["terms"])
