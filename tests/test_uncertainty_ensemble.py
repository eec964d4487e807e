"""Ensembles: member stacks of committees and shallow ensembles, and their spread."""

import copy

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from uncertainty_models import committee_path, data_files, one_thread, shallow_path

from mlpot.data.dataset import read_dataset, sample_to_graph
from mlpot.data.graph import FORCES, atoms_to_graph, collate
from mlpot.errors import MlpotInputError
from mlpot.models.checkpoint import load_model, save_model
from mlpot.models.ensembles import Committee
from mlpot.models.registry import build_model
from mlpot.models.sum import SumModel
from mlpot.physics import outputs
from mlpot.physics.derivatives import predict
from mlpot.physics.ensemble import predict_members
from mlpot.testing import PhysicsConformance
from mlpot.training.loss import ensemble_nll
from mlpot.uncertainty.ensemble import (
    load_committee,
    member_predictions,
    predict_with_uncertainty,
)

pytestmark = pytest.mark.usefixtures("one_thread")
assert one_thread  # the fixture is used through pytestmark

SHALLOW = {"name": "bpnn_shallow", "elements": [29], "cutoff": 4.0, "hidden": [16], "heads": 4}
BPNN = {"name": "bpnn", "elements": [29], "cutoff": 4.0, "hidden": [16]}


def _cells(n: int = 2):
    graphs = []
    for seed in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.rattle(0.08, seed=seed)
        graphs.append(atoms_to_graph(atoms, 4.0))
    return collate(graphs)


class _Head(torch.nn.Module):
    """One head of a shallow ensemble as a plain energy model."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, graph):
        return self.model.member_energies(graph)[self.k]


def test_identical_members_have_zero_spread():
    torch.manual_seed(0)
    member = build_model(BPNN).double()
    committee = Committee([member, copy.deepcopy(member), copy.deepcopy(member)])
    shallow = build_model(SHALLOW).double().eval()
    with torch.no_grad():
        for network in shallow.networks:
            network[-1].weight.copy_(network[-1].weight[:1].expand_as(network[-1].weight))
            network[-1].bias.fill_(0.3)
    for model in (committee, shallow):
        out = predict_with_uncertainty(model, _cells(), stress=True)
        assert float(out[outputs.ENERGY_STD].abs().max()) == 0.0
        force_scale = float(out[outputs.FORCES].abs().max())
        stress_scale = float(out[outputs.STRESS].abs().max())
        assert force_scale > 1e-3  # the members do predict forces
        if model is committee:
            assert float(out[outputs.FORCES_STD].abs().max()) == 0.0
            assert float(out[outputs.STRESS_STD].abs().max()) == 0.0
        else:
            # the heads' gradients are rows of one matrix product, whose rounding may differ
            # from row to row: zero up to the last bits of float64
            assert float(out[outputs.FORCES_STD].abs().max()) < 1e-14 * force_scale
            assert float(out[outputs.STRESS_STD].abs().max()) < 1e-14 * stress_scale


def test_float32_energy_spread_of_a_large_cell_matches_float64():
    """Two members whose 2048-atom totals (~1300 eV) differ by ~2 meV. Summed in float32,
    each total carries rounding errors of ~1e-4 eV that differ between members, and the
    spread of those totals was 21 % off the float64 one; summed from the atoms' own
    deviations in float64 it is within 1 %."""
    torch.manual_seed(0)
    member = build_model(BPNN).double()
    other = copy.deepcopy(member)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(1e-6 * torch.randn_like(parameter))
    committee = Committee([member, other])
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (8, 8, 8)
    atoms.rattle(0.05, seed=1)
    exact = predict_with_uncertainty(committee, atoms_to_graph(atoms, 4.0))
    single = predict_with_uncertainty(
        copy.deepcopy(committee).float(), atoms_to_graph(atoms, 4.0, dtype=torch.float32)
    )
    assert float(exact[outputs.ENERGY].abs()) > 1000.0
    assert 1e-3 < float(exact[outputs.ENERGY_STD]) < 3e-3
    assert single[outputs.ENERGY_STD].dtype == torch.float32
    assert float(single[outputs.ENERGY_STD]) == pytest.approx(
        float(exact[outputs.ENERGY_STD]), rel=1e-2
    )


@pytest.mark.parametrize("path", [committee_path, shallow_path], ids=["committee", "shallow"])
def test_spread_grows_off_the_training_data(path):
    """Unseen cells like the training ones against cells strained 8 % and rattled 0.2 Å."""
    model = load_model(path())
    spread = {}
    for name in ("calibration", "off"):
        samples = read_dataset(data_files()[name])
        batch = collate([sample_to_graph(s, 4.0, dtype=torch.float64) for s in samples])
        out = predict_with_uncertainty(model, batch)
        rms_force_std = out[outputs.FORCES_STD].pow(2).mean().sqrt()
        spread[name] = (rms_force_std, out[outputs.ENERGY_STD].median())
    assert spread["off"][0] > 10 * spread["calibration"][0]
    assert spread["off"][1] > 5 * spread["calibration"][1]


def test_heads_from_one_batched_pass_equal_each_head():
    torch.manual_seed(1)
    shallow = build_model(SHALLOW).double().eval()
    graph = _cells()
    out = predict_members(shallow, graph, stress=True)
    assert out[outputs.MEMBER_FORCES].shape == (4, 64, 3)
    for k in range(4):
        head = predict(_Head(shallow, k), graph, forces=True, stress=True)
        torch.testing.assert_close(out[outputs.MEMBER_ENERGY][k], head[outputs.ENERGY])
        torch.testing.assert_close(out[outputs.MEMBER_FORCES][k], head[outputs.FORCES])
        torch.testing.assert_close(out[outputs.MEMBER_STRESS][k], head[outputs.STRESS])
    mean = predict(shallow, graph, forces=True, stress=True)
    for key in (outputs.ENERGY, outputs.FORCES, outputs.STRESS):
        torch.testing.assert_close(out[key], mean[key].detach())


def test_explicit_member_gradients_equal_autograd_with_shared_terms():
    """Shallow heads next to member-less terms (offsets, Lennard-Jones): the members' forces
    and stress from the descriptor's explicit gradients equal those by batched autograd."""
    torch.manual_seed(3)
    shallow = build_model({**SHALLOW, "elements": [29, 47], "angular_cutoff": 3.2}).double()
    lj = build_model({"name": "lj", "elements": [29, 47], "sigma": 2.3, "epsilon": 0.05}).double()
    offsets = build_model({"name": "offsets", "elements": [29, 47], "energies": [-0.3, 0.2]})
    model = SumModel([offsets.double(), shallow, lj]).eval()
    graphs = []
    for seed in range(2):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 1, 1)
        atoms.numbers[::3] = 47
        atoms.set_cell(atoms.cell.array @ [[1, 0.06, 0], [0, 1, -0.04], [0.03, 0, 1]], True)
        atoms.rattle(0.1, seed=seed)
        graphs.append(atoms_to_graph(atoms, model.cutoff))  # edges beyond the ACSF cutoff too
    graph = collate(graphs)
    offered = model.member_gradients(graph, strain=True)
    assert offered is not None and offered.common is not None  # the explicit path is taken
    explicit = predict_members(model, graph, stress=True)
    batched = predict_members(model, graph, stress=True, explicit_gradients=False)
    assert set(batched) <= set(explicit)
    for key, value in batched.items():
        torch.testing.assert_close(explicit[key], value.detach(), rtol=1e-10, atol=1e-12)
    assert float(explicit[outputs.MEMBER_STRESS].std(0).abs().max()) > 1e-6


def test_committee_member_stack_equals_each_member():
    committee = load_model(committee_path())
    graph = _cells()
    stacked = member_predictions(committee, graph, stress=True)  # (M, ...) under plain names
    for m, member in enumerate(committee.members):
        alone = predict(member, graph, forces=True, stress=True)
        torch.testing.assert_close(stacked[outputs.FORCES][m], alone[outputs.FORCES].detach())
        torch.testing.assert_close(stacked[outputs.STRESS][m], alone[outputs.STRESS].detach())
    out = predict_with_uncertainty(committee, graph)
    expected = stacked[outputs.FORCES].std(0).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(out[outputs.FORCES_STD], expected)


def test_force_spread_can_be_skipped():
    shallow = load_model(shallow_path())
    graph = _cells()
    full = predict_with_uncertainty(shallow, graph)
    cheap = predict_with_uncertainty(shallow, graph, member_forces=False)
    assert outputs.FORCES_STD not in cheap
    torch.testing.assert_close(cheap[outputs.FORCES], full[outputs.FORCES])
    torch.testing.assert_close(cheap[outputs.ENERGY_STD], full[outputs.ENERGY_STD])


def test_models_without_members_or_with_mismatched_members_fail_clearly():
    torch.manual_seed(2)
    single = build_model(BPNN).double()
    assert single.n_members == 0
    with pytest.raises(MlpotInputError, match="no ensemble members"):
        predict_with_uncertainty(single, _cells(1))
    mixed = SumModel([build_model(SHALLOW), build_model({**SHALLOW, "heads": 3})]).double()
    mixed.eval()
    with pytest.raises(MlpotInputError, match="different sizes"):
        predict_with_uncertainty(mixed, _cells(1))
    with pytest.raises(ValueError, match="at least 2 heads"):
        build_model({**SHALLOW, "heads": 1})


def test_committee_of_mismatched_checkpoints_fails_clearly(tmp_path):
    torch.manual_seed(3)
    copper = tmp_path / "cu.pt"
    save_model(copper, build_model(BPNN).double())
    save_model(tmp_path / "cu2.pt", build_model(BPNN).double())
    alloy = tmp_path / "cuag.pt"
    save_model(alloy, build_model({**BPNN, "elements": [29, 47]}).double())
    assert len(load_committee([copper, tmp_path / "cu2.pt"]).members) == 2
    with pytest.raises(MlpotInputError, match="elements") as info:
        load_committee([copper, alloy])
    assert str(alloy) in str(info.value)
    with pytest.raises(MlpotInputError, match="itself an ensemble"):
        load_committee([copper, shallow_path()])
    with pytest.raises(MlpotInputError, match="at least 2"):
        load_committee([copper])


def test_spread_loss_moves_heads_apart_not_their_mean():
    """The ensemble NLL trains the heads' spread only: its gradient on the heads' biases sums
    to zero (the mean stays) and the shared body gets none (training mode)."""
    torch.manual_seed(4)
    shallow = build_model(SHALLOW).double()
    samples = read_dataset(data_files()["train"])[:4]
    batch = collate([sample_to_graph(s, 4.0, dtype=torch.float64) for s in samples])
    shallow.fit_statistics([sample_to_graph(s, 4.0, dtype=torch.float64) for s in samples])
    pred = predict_members(shallow, batch, member_forces=False, create_graph=True)
    loss = ensemble_nll(pred, batch)
    head, body = shallow.networks[0][-1], shallow.networks[0][0]
    grad, body_grad = torch.autograd.grad(loss, [head.bias, body.weight])  # (K,), (H, F)
    assert float(grad.abs().max()) > 1e-3
    assert abs(float(grad.sum())) < 1e-10 * float(grad.abs().max())
    assert float(body_grad.abs().max()) < 1e-12 * float(grad.abs().max())  # body: round-off
    # the stop-gradient changes no value, and per-head forces need evaluation mode
    with pytest.raises(ValueError, match="eval"):
        predict_members(shallow, batch)
    evaluated = predict_members(shallow.eval(), batch, member_forces=False)
    torch.testing.assert_close(
        evaluated[outputs.MEMBER_ENERGY], pred[outputs.MEMBER_ENERGY].detach()
    )


def test_trained_shallow_ensemble_fits_and_keeps_domain():
    from mlpot.models.checkpoint import load_checkpoint

    payload = load_checkpoint(shallow_path())
    assert payload["model"]["terms"][1]["heads"] == 6
    assert payload["domain"] is not None
    model = load_model(shallow_path())
    samples = read_dataset(data_files()["calibration"])
    batch = collate([sample_to_graph(s, 4.0, dtype=torch.float64) for s in samples])
    error = predict(model, batch, forces=True)[outputs.FORCES].detach() - batch[FORCES]
    label_rms = float(batch[FORCES].pow(2).mean().sqrt())
    assert float(error.pow(2).mean().sqrt()) < 0.5 * label_rms


def _fitted(model, structures):
    graphs = []
    generator = torch.Generator().manual_seed(5)
    for atoms in structures.values():
        graph = atoms_to_graph(atoms, model.cutoff)
        graph[FORCES] = 0.7 * torch.randn(len(atoms), 3, generator=generator, dtype=torch.float64)
        graphs.append(graph)
    model.fit_statistics(graphs)
    return model


class TestShallowEnsembleConformance(PhysicsConformance):
    """The mean of the heads is an energy model like any other: full physics suite."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(0)
        spec = {**SHALLOW, "elements": [29, 47], "cutoff": 4.5, "hidden": [16, 16]}
        model = build_model(spec).double()
        return _fitted(model, self.make_structures(model))


def test_fixture_files_are_readable():
    assert len(ase.io.read(data_files()["off"], index=":")) == 8
    assert np.isfinite(read_dataset(data_files()["off"])[0].forces).all()
