"""Per-atom features, the capability behind domain scores, the probe and D-optimal selection:
every learned model offers them (bpnn: its descriptors; mpnn: its last layer's scalars)."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from uncertainty_models import CUTOFF, data_files, mpnn_committee_path, one_thread

from mlpot.calculators import load_calculator
from mlpot.data.graph import atoms_to_graph
from mlpot.models.registry import build_model
from mlpot.physics import outputs
from mlpot.uncertainty.assess import (
    collect_residuals,
    load_with_statistics,
    per_structure_max,
    read_graphs,
)

pytestmark = pytest.mark.usefixtures("one_thread")
assert one_thread

SPECS = {
    "bpnn": {"name": "bpnn", "elements": [29], "cutoff": CUTOFF, "hidden": [8]},
    "bpnn_shallow": {"name": "bpnn_shallow", "elements": [29], "cutoff": CUTOFF, "heads": 3},
    "mpnn": {"name": "mpnn", "elements": [29], "cutoff": CUTOFF, "channels": 6, "layers": 2},
    "sum": {
        "name": "sum",
        "terms": [
            {"name": "offsets", "elements": [29], "energies": [-0.1]},
            {"name": "mpnn", "elements": [29], "cutoff": CUTOFF, "channels": 6},
        ],
    },
}


def _features(model, atoms):
    graph = atoms_to_graph(atoms, model.cutoff, dtype=torch.float64, elements=model.elements)
    return model.features(graph).detach().numpy()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_features_are_invariant_and_follow_the_atoms(name):
    torch.manual_seed(0)
    model = build_model(SPECS[name]).double()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 1)
    atoms.rattle(0.1, seed=1)
    x = _features(model, atoms)
    assert x.shape == (len(atoms), model.n_features) and model.n_features > 0
    assert np.isfinite(x).all() and x.std(axis=0).max() > 0  # environments differ
    turned = atoms.copy()
    turned.rotate(37, (1, 2, 3), rotate_cell=True)
    turned.translate((0.3, -0.2, 0.7))
    np.testing.assert_allclose(_features(model, turned), x, atol=1e-10)
    order = np.random.default_rng(2).permutation(len(atoms))
    np.testing.assert_allclose(_features(model, atoms[order]), x[order], atol=1e-10)


def test_a_model_without_features_says_so():
    lj = build_model({"name": "lj", "elements": [29], "sigma": 2.3, "epsilon": 0.4})
    assert lj.n_features == 0
    with pytest.raises(ValueError, match="exposes no per-atom features"):
        lj.features({})


def test_an_mpnn_committee_has_domain_scores_that_separate_off_data_cells():
    """The flagship gets T², d_min and in_domain from its last layer's scalars."""
    path = mpnn_committee_path()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=4)
    atoms.calc = load_calculator(path)
    atoms.get_potential_energy()
    for name in (outputs.MAHALANOBIS, outputs.D_MIN, outputs.IN_DOMAIN):
        assert name in atoms.calc.results
    loaded = load_with_statistics(path)
    worst = {}
    for name in ("calibration", "off"):
        graphs = read_graphs([data_files()[name]], loaded.model)
        res = collect_residuals(loaded.model, graphs, domain=loaded.domain)
        worst[name] = float(np.median(per_structure_max(res.t2, res.batch)))
    assert worst["off"] > 3 * worst["calibration"]


def test_learn_with_the_flagship_and_d_optimal_selection(tmp_path):
    """mpnn committees in the loop, batches chosen by D-optimal design on their features
    (the default strategy; it used to end in a raw traceback)."""
    from test_active_loop import _check_store, _raw

    from mlpot.active import learn, parse_learn_config

    raw = _raw(tmp_path / "run")
    raw["train"]["model"] = {"name": "mpnn", "cutoff": 3.8, "channels": 8, "layers": 1}
    raw["select"]["strategy"] = "d_optimal"
    result = learn(parse_learn_config(raw), log=lambda line: None)
    store = _check_store(result.store_path, 16)
    assert any(r.reason != "initial" and r.reason != "test" for r in store.requests().values())
