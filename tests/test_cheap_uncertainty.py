"""Cheap uncertainty on the flagship: the shallow mpnn (heads on its last layer) and the
last-layer prediction rigidity (LLPR) of a single model."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from test_conformance_models import fitted
from uncertainty_models import data_files, mpnn_path, mpnn_shallow_path, one_thread

from mlpot.calculators import load_calculator
from mlpot.data.dataset import read_dataset, sample_to_graph
from mlpot.data.graph import NUMBERS, atoms_to_graph, collate
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_checkpoint, load_model, save_model
from mlpot.models.registry import build_model
from mlpot.models.sum import SumModel
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict, strained_graph, structure_sum
from mlpot.physics.ensemble import predict_members
from mlpot.testing import check_energy_model, default_structures
from mlpot.uncertainty.assess import calibrate_files
from mlpot.uncertainty.ensemble import predict_with_uncertainty
from mlpot.uncertainty.llpr import fit_llpr, llpr_checkpoint, posterior_covariance

pytestmark = pytest.mark.usefixtures("one_thread")
assert one_thread  # the fixture is used through pytestmark

CU, AG = 29, 47
SHALLOW = {"name": "mpnn_shallow", "elements": [CU, AG], "cutoff": 4.5, "channels": 8}


class _Member(torch.nn.Module):
    """One member of an ensemble model as a plain energy model (for autograd)."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, graph):
        return self.model.member_energies(graph, member_derivatives=True)[self.k]


def _cells(n: int = 2):
    graphs = []
    for seed in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 1, 1)
        atoms.numbers[::3] = AG
        atoms.set_cell(atoms.cell.array @ [[1, 0.06, 0], [0, 1, -0.04], [0.03, 0, 1]], True)
        atoms.rattle(0.1, seed=seed)
        graphs.append(atoms_to_graph(atoms, 4.5))
    return collate(graphs)


def _shallow(spec=SHALLOW, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(spec).double()
    structures = default_structures(model.elements, model.cutoff, lattice_constant=3.7)
    return fitted(model, structures, seed=seed).eval()


@pytest.mark.parametrize(
    "spec",
    [
        {**SHALLOW, "heads": 4},
        {**SHALLOW, "heads": 3, "l_max": 1, "layers": 3, "readout_hidden": 0},
        {**SHALLOW, "heads": 2, "activation": "tanh", "product_channels": 5},
        {**SHALLOW, "heads": 3, "element_mixing": False},
    ],
    ids=[
        "l2-hidden-readout",
        "l1-three-layers-linear-readout",
        "two-heads-tanh-narrow-products",
        "shared-mixing",
    ],
)
def test_shallow_mpnn_members_are_exact(spec):
    """Mean of the heads = forward; every head's explicit forces and stress = autograd on
    that head alone, to 1e-10 (float64)."""
    model = _shallow(spec)
    graph = _cells()
    out = predict_members(model, graph, stress=True)
    k = model.n_members
    assert out[outputs.MEMBER_FORCES].shape == (k, 16, 3)
    mean = predict(model, graph, forces=True, stress=True)
    for key in (outputs.ENERGY, outputs.FORCES, outputs.STRESS):
        torch.testing.assert_close(out[key], mean[key], rtol=1e-10, atol=1e-12)
    for m in range(k):
        head = predict(_Member(model, m), graph, forces=True, stress=True)
        for plain, member in (
            (outputs.ENERGY, outputs.MEMBER_ENERGY),
            (outputs.FORCES, outputs.MEMBER_FORCES),
            (outputs.STRESS, outputs.MEMBER_STRESS),
        ):
            torch.testing.assert_close(out[member][m], head[plain], rtol=1e-10, atol=1e-12)
    assert float(out[outputs.MEMBER_FORCES].std(0).abs().max()) > 1e-4  # heads differ


def test_shallow_mpnn_members_are_exact_with_one_element():
    """A one-element model takes the ungrouped path of the element mixing: its heads'
    explicit forces and stress equal autograd on each head alone (float64)."""
    torch.manual_seed(3)
    model = build_model({**SHALLOW, "elements": [CU], "heads": 3}).double().eval()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 1, 1)
    atoms.rattle(0.1, seed=5)
    graph = atoms_to_graph(atoms, 4.5)
    out = predict_members(model, graph, stress=True)
    for m in range(3):
        head = predict(_Member(model, m), graph, forces=True, stress=True)
        torch.testing.assert_close(
            out[outputs.MEMBER_FORCES][m], head[outputs.FORCES], rtol=1e-10, atol=1e-12
        )
        torch.testing.assert_close(
            out[outputs.MEMBER_STRESS][m], head[outputs.STRESS], rtol=1e-10, atol=1e-12
        )
    assert float(out[outputs.MEMBER_FORCES].std(0).abs().max()) > 1e-4


def test_shallow_mpnn_spread_is_rotation_invariant_and_trains_heads_only():
    model = _shallow()
    atoms = molecule("CH3CH2OH")
    atoms.numbers[:] = [CU if z == 6 else AG for z in atoms.numbers]
    atoms.positions *= 1.9  # metal-like distances
    rotated = atoms.copy()
    rotated.rotate(37, (1, 2, 3), center=(0, 0, 0))
    rotated.positions[:, 0] *= -1  # and a reflection
    spread = [
        predict_with_uncertainty(model, atoms_to_graph(a, model.cutoff)) for a in (atoms, rotated)
    ]
    for key in (outputs.ENERGY_STD, outputs.FORCES_STD):
        assert float(spread[0][key].abs().max()) > 0
        torch.testing.assert_close(spread[0][key], spread[1][key], rtol=1e-10, atol=1e-14)
    # training mode: per-head derivatives are refused; the NLL term's gradient is the heads'
    model.train()
    with pytest.raises(ValueError, match="eval"):
        predict_members(model, _cells(1))
    with pytest.raises(ValueError, match="eval"):
        model.member_gradients(_cells(1))
    with pytest.raises(ValueError, match="at least 2 heads"):
        build_model({**SHALLOW, "heads": 1})


def test_shallow_mpnn_passes_the_conformance_kit():
    model = _shallow({**SHALLOW, "heads": 3})
    report = check_energy_model(model)
    assert report.ok


def test_trained_shallow_mpnn_calibrates_and_reports_through_the_calculator(tmp_path):
    path = mpnn_shallow_path()
    assert load_checkpoint(path)["model"]["terms"][1]["name"] == "mpnn_shallow"
    run = calibrate_files(path, [data_files()["calibration"]], output=tmp_path / "cal.pt")
    for quantity in ("energy", "forces", "stress"):
        assert np.isfinite(run.calibration.scale_of(quantity))
    atoms = read_dataset(data_files()["off"])[0].atoms
    atoms.calc = load_calculator(tmp_path / "cal.pt")
    for name in (outputs.ENERGY_STD, outputs.FORCES_STD, outputs.STRESS_STD):
        value = np.asarray(atoms.calc.get_property(name, atoms))
        assert np.all(np.isfinite(value)) and np.all(value > 0)
    assert atoms.calc.get_property(outputs.FORCES_STD, atoms).shape == (len(atoms),)


def _structure(kind: str):
    """A sheared Cu/Ag cell, a pair of atoms farther apart than the cutoff (no edges), or
    both and a molecule in one batch."""
    pair = Atoms("CuAg", positions=[[0, 0, 0], [0, 0, 6.0]])
    if kind == "cell":
        return _cells(1)
    if kind == "no-edges":
        return atoms_to_graph(pair, 4.5)
    cluster = molecule("CH3CH2OH")
    cluster.numbers[:] = [CU if z == 6 else AG for z in cluster.numbers]
    cluster.positions *= 1.9
    return collate([_cells(1), atoms_to_graph(pair, 4.5), atoms_to_graph(cluster, 4.5)])


@pytest.mark.parametrize("element_mixing", [False, True], ids=["shared", "element-mixing"])
@pytest.mark.parametrize("k_members", [1, 2, 5])
@pytest.mark.parametrize("kind", ["cell", "no-edges", "batch"])
def test_one_reverse_pass_for_all_members_equals_autograd_member_by_member(
    k_members, kind, element_mixing
):
    """The explicit reverse pass (all members at once, mpnn_gradients) for ``K`` read-out
    weight shifts of an mpnn: energies, position and strain derivatives equal autograd on
    each member alone to 1e-12 (float64), for one member, two, five, a structure without
    edges and a batch, with one channel mixing for all atoms or one per element."""
    torch.manual_seed(6)
    spec = {**SHALLOW, "name": "mpnn", "element_mixing": element_mixing}
    model = build_model(spec).double()
    model = fitted(model, default_structures(model.elements, 4.5, lattice_constant=3.7), seed=6)
    generator = torch.Generator().manual_seed(k_members)
    shifts = torch.randn(k_members, model.n_last_layer_features, generator=generator)
    shifts = 0.5 * shifts.double()
    graph = _structure(kind)
    explicit = model.last_layer_gradients(graph, shifts, strain=True)
    strained, inputs = strained_graph(graph, forces=True, stress=True)
    last = model.last_layer(strained)
    local = last.energies[None, :] + shifts @ last.features.T  # (K, N)
    torch.testing.assert_close(explicit.energies, local.detach(), rtol=1e-12, atol=1e-12)
    assert explicit.positions.shape == (k_members, graph[NUMBERS].shape[0], 3)
    for k in range(k_members):
        d_positions, d_strain = torch.autograd.grad(
            local[k].sum(), inputs, retain_graph=True, allow_unused=True
        )
        if d_positions is None:  # no edges: the energy does not depend on positions
            d_positions, d_strain = torch.zeros_like(inputs[0]), torch.zeros_like(inputs[1])
        torch.testing.assert_close(explicit.positions[k], d_positions, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(explicit.strain[k], d_strain, rtol=1e-12, atol=1e-12)
    if kind == "no-edges":
        assert float(explicit.positions.abs().max()) == 0.0
    else:
        assert float(explicit.positions.abs().max()) > 1e-3


# -- last-layer prediction rigidity -----------------------------------------------------------


def _graphs(name: str, model):
    return [
        sample_to_graph(s, model.cutoff, dtype=torch.float64, elements=model.elements)
        for s in read_dataset(data_files()[name])
    ]


def test_llpr_posterior_matches_a_direct_computation():
    model = load_model(mpnn_path())
    train = _graphs("train", model)
    features = np.stack(
        [structure_sum(model.last_layer(g).features, g)[0].detach().numpy() for g in train]
    )  # (S, L)
    n_features = model.n_last_layer_features
    assert features.shape == (len(train), n_features) == (36, 8 + 8)
    gram = features.T @ features
    regularizer = 1e-3 * np.trace(gram) / n_features  # a well-conditioned inverse to compare
    llpr = fit_llpr(model, train, regularizer=regularizer, members=6, seed=1)
    expected = np.linalg.inv(gram + regularizer * np.eye(n_features))
    np.testing.assert_allclose(llpr.covariance.numpy(), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        posterior_covariance(gram, regularizer), expected, rtol=1e-9, atol=1e-12
    )
    off = collate(_graphs("off", model))
    f_off = structure_sum(model.last_layer(off).features, off).detach().numpy()
    np.testing.assert_allclose(
        llpr.energy_variance(off).detach().numpy(),
        np.einsum("si,ij,sj->s", f_off, expected, f_off),
        rtol=1e-8,
    )
    # members: centred samples; their mean is the model, their energies linear in the shifts
    assert float(llpr.shifts.mean(0).abs().max()) < 1e-12 * float(llpr.shifts.abs().max())
    members = llpr.member_energies(off)  # (K, N)
    torch.testing.assert_close(members.mean(0), model(off), rtol=1e-10, atol=1e-10)
    energies = structure_sum(members.T, off).T.detach().numpy()  # (K, S)
    base = structure_sum(model(off), off).detach().numpy()
    np.testing.assert_allclose(energies - base, llpr.shifts.numpy() @ f_off.T, atol=1e-9)


def test_llpr_members_forces_are_exact_and_off_data_is_less_rigid():
    model = load_model(mpnn_path())
    llpr = fit_llpr(model, _graphs("train", model), validation=_graphs("calibration", model))
    assert 0 < float(llpr.regularizer)
    graph = atoms_to_graph(read_dataset(data_files()["off"])[1].atoms, model.cutoff)
    explicit = predict_members(llpr, graph, stress=True)
    batched = predict_members(llpr, graph, stress=True, explicit_gradients=False)
    for key, value in batched.items():
        torch.testing.assert_close(explicit[key], value, rtol=1e-10, atol=1e-12)
    per_atom = {}
    for name in ("train", "calibration", "off"):
        batch = collate(_graphs(name, model))
        variance = llpr.energy_variance(batch).detach()
        per_atom[name] = float(torch.median(variance.sqrt() / batch["n_atoms"]))
    assert per_atom["off"] > 5 * per_atom["calibration"]
    assert per_atom["off"] > 5 * per_atom["train"]


def test_llpr_checkpoint_round_trip_and_calculator(tmp_path):
    run = llpr_checkpoint(
        mpnn_path(),
        [data_files()["train"]],
        tmp_path / "llpr.pt",
        validation=[data_files()["calibration"]],
        members=4,
    )
    payload = load_checkpoint(run.checkpoint)
    assert payload["model"]["name"] == "llpr" and payload["model"]["members"] == 4
    assert payload["domain"] is not None and payload["calibration"] is not None
    assert payload["reference_energies"]  # the wrapped model's offsets
    loaded = load_model(run.checkpoint)
    graph = atoms_to_graph(read_dataset(data_files()["off"])[0].atoms, loaded.cutoff)
    again = fit_llpr(
        load_model(mpnn_path()), _graphs("train", loaded), regularizer=run.regularizer, members=4
    )  # the same fit in memory (same seed)
    torch.testing.assert_close(loaded.covariance, again.covariance)
    torch.testing.assert_close(loaded.member_energies(graph), again.member_energies(graph))
    torch.testing.assert_close(loaded(graph), load_model(mpnn_path())(graph))
    atoms = read_dataset(data_files()["off"])[0].atoms
    atoms.calc = load_calculator(run.checkpoint)
    for name in (outputs.ENERGY_STD, outputs.FORCES_STD, outputs.STRESS_STD):
        value = np.asarray(atoms.calc.get_property(name, atoms))
        assert np.all(np.isfinite(value)) and np.all(value > 0)


def test_llpr_refuses_models_without_a_linear_last_layer(tmp_path):
    lj = build_model({"name": "lj", "elements": [CU], "sigma": 2.3, "epsilon": 0.05})
    with pytest.raises(MlpotInputError, match="last-layer"):
        build_model({"name": "llpr", "model": {"name": "lj", "elements": [CU]}})
    with pytest.raises(ValueError, match="last-layer"):
        fit_llpr(lj.double(), [atoms_to_graph(bulk("Cu", "fcc", a=3.61), lj.cutoff)])
    with pytest.raises(MlpotInputError, match="members"):
        build_model({"name": "llpr", "model": {**SHALLOW, "name": "mpnn"}, "members": "x"})
    shallow = build_model(SHALLOW)
    assert shallow.n_last_layer_features == 0
    save_model(tmp_path / "shallow.pt", SumModel([shallow]))
    with pytest.raises(MlpotInputError, match="single model"):
        llpr_checkpoint(tmp_path / "shallow.pt", [data_files()["train"]], tmp_path / "x.pt")


def test_llpr_on_a_bpnn():
    """The same posterior for a Behler–Parrinello network (element-blocked features of its
    networks' last hidden layers), with the members' forces by autograd."""
    torch.manual_seed(5)
    bpnn = build_model({"name": "bpnn", "elements": [CU], "cutoff": 4.0, "hidden": [16]})
    if not bpnn.n_last_layer_features:
        pytest.skip("this BehlerParrinello offers no last-layer features")
    model = bpnn.double()
    train = _graphs("train", model)
    model.fit_statistics(train)
    model.eval()
    off = collate(_graphs("off", model))
    torch.testing.assert_close(model.last_layer(off).energies, model(off))
    llpr = fit_llpr(model, train, validation=_graphs("calibration", model), members=4)
    assert llpr.member_gradients(off) is None  # autograd, batched over the members
    out = predict_members(llpr, off)
    assert out[outputs.MEMBER_FORCES].shape == (4, off["positions"].shape[0], 3)
    torch.testing.assert_close(out[outputs.FORCES], predict(model, off)[outputs.FORCES])
    calibration = collate(_graphs("calibration", model))
    variance = {
        name: llpr.energy_variance(batch).detach()
        for name, batch in (("off", off), ("calibration", calibration))
    }
    assert float(variance["off"].median()) > float(variance["calibration"].median())
