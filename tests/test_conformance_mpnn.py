"""The Cartesian message-passing model (``mpnn``): physics conformance, float32, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_conformance_models import fitted

from mlpot.data.graph import atoms_to_graph
from mlpot.models.registry import build_model
from mlpot.nn.cartesian import CartesianHarmonics, CartesianInvariants
from mlpot.nn.radial import polynomial_envelope
from mlpot.physics.derivatives import predict
from mlpot.testing import PhysicsConformance, evaluate

CU, AG = 29, 47
SPEC = {"name": "mpnn", "elements": [CU, AG], "cutoff": 4.5, "channels": 8}


class TestCartesianMPNN(PhysicsConformance):
    """Rank-2 harmonics (4-body products), two layers: receptive field 2 r_c; one channel
    mixing per centre element (the default)."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(2)
        model = build_model(SPEC).double()
        return fitted(model, self.make_structures(model), seed=4)


class TestCartesianMPNNVectorsOnly(PhysicsConformance):
    """``l_max = 1``, three layers (receptive field 3 r_c), other widths."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(1)
        spec = {**SPEC, "l_max": 1, "layers": 3, "product_channels": 4, "radial_basis": 6}
        model = build_model(spec).double()
        return fitted(model, self.make_structures(model), seed=5)


class TestCartesianMPNNVectorFeatures(PhysicsConformance):
    """Vector features passed between three layers (``vector_channels``): equivariant
    messages must keep every invariance, exact forces and stress."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(3)
        model = build_model({**SPEC, "layers": 3, "vector_channels": 4}).double()
        return fitted(model, self.make_structures(model), seed=6)


class TestCartesianMPNNSharedMixing(PhysicsConformance):
    """One channel mixing for every atom (``element_mixing: false``, the model of files
    written before element mixing): every invariance, exact forces and stress."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(4)
        model = build_model({**SPEC, "element_mixing": False}).double()
        return fitted(model, self.make_structures(model), seed=7)


def test_element_mixing_uses_each_element_own_matrices():
    """With one layer, changing the Ag atoms' channel mixing changes the energies of the Ag
    atoms and leaves the Cu atoms' untouched; a shallow ensemble with element mixing passes
    the finite-difference checks of its members (explicit reverse pass)."""
    from ase.build import bulk

    from mlpot.testing import check_energy_model

    torch.manual_seed(0)
    model = build_model({**SPEC, "layers": 1, "element_mixing": True}).double()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms.numbers[::5] = AG
    atoms.rattle(0.1, seed=1)
    graph = atoms_to_graph(atoms, model.cutoff)
    before = model(graph).detach()
    with torch.no_grad():
        model.interactions[0].mixing[model.species(torch.tensor([AG]))[0]].mul_(1.5)
    after = model(graph).detach()
    is_ag = torch.as_tensor(atoms.numbers == AG)
    assert float((after - before)[is_ag].abs().min()) > 1e-8
    torch.testing.assert_close(after[~is_ag], before[~is_ag], rtol=0, atol=0)
    shallow = build_model({**SPEC, "name": "mpnn_shallow", "heads": 3, "element_mixing": True})
    assert shallow.double().eval().member_gradients(graph) is not None
    assert check_energy_model(shallow).ok


def test_vector_features_reach_the_energy_and_fall_back_to_autograd_members():
    """The vector path is used (its parameters get gradients, and zeroing it changes the
    energy); the explicit member reverse pass covers scalar features only, so with vectors
    the last-layer and head derivatives come from autograd, and agree with it."""
    from ase.build import bulk

    from mlpot.physics import outputs
    from mlpot.physics.ensemble import predict_members
    from mlpot.testing import check_energy_model

    torch.manual_seed(0)
    model = build_model({**SPEC, "vector_channels": 3}).double()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms.numbers[::5] = AG
    atoms.rattle(0.1, seed=1)
    graph = atoms_to_graph(atoms, model.cutoff)
    energy = model(graph).sum()
    energy.backward()
    second = model.interactions[1]
    for parameter in (second.vector_radial.weight, second.vector_mixing):
        assert float(parameter.grad.abs().max()) > 0
    assert float(model.interactions[0].vector_out.grad.abs().max()) > 0
    with torch.no_grad():
        second.vector_mixing.zero_()
        assert abs(float(model(graph).sum()) - float(energy)) > 1e-6
    assert model.last_layer_gradients(graph, torch.zeros(2, model.n_last_layer_features)) is None
    shallow = build_model({**SPEC, "name": "mpnn_shallow", "heads": 3, "vector_channels": 3})
    shallow = shallow.double().eval()
    assert shallow.member_gradients(graph) is None
    members = predict_members(shallow, graph)  # autograd
    heads = shallow.member_energies(graph).sum(1)  # (K,)
    torch.testing.assert_close(members[outputs.MEMBER_ENERGY][:, 0], heads, rtol=1e-12, atol=0)
    assert float(members[outputs.MEMBER_FORCES].std(0).abs().max()) > 0
    assert check_energy_model(shallow).ok  # members' forces against finite differences
    with pytest.raises(ValueError, match="l_max >= 1"):
        build_model({**SPEC, "l_max": 0, "vector_channels": 2})


class TestCartesianMPNNTanhRadial(PhysicsConformance):
    """Bounded radial features (``radial_activation: tanh``)."""

    lattice_constant = 3.7
    rattle = 0.1

    def make_model(self):
        torch.manual_seed(4)
        model = build_model({**SPEC, "radial_activation": "tanh"}).double()
        return fitted(model, self.make_structures(model), seed=7)


def test_tanh_radial_features_are_bounded_and_keep_exact_member_derivatives():
    """|φ| < 1 at any distance (SiLU's grow with the Bessel functions at short range), and
    the explicit reverse pass of the shallow heads (closed-form dφ/dr) equals autograd."""
    from ase.build import bulk

    from mlpot.physics import outputs
    from mlpot.physics.ensemble import predict_members

    torch.manual_seed(5)
    r = torch.linspace(0.05, 4.4, 200, dtype=torch.float64)
    tanh = build_model({**SPEC, "radial_activation": "tanh"}).double()
    silu = build_model(SPEC).double()
    assert float(tanh.radial_features(r).detach().abs().max()) < 1.0
    assert float(silu.radial_features(r[:10]).detach().abs().max()) > 1.0
    with pytest.raises(ValueError, match="radial_activation"):
        build_model({**SPEC, "radial_activation": "relu"})
    spec = {**SPEC, "name": "mpnn_shallow", "heads": 3, "radial_activation": "tanh"}
    shallow = build_model(spec).double().eval()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 1, 1)
    atoms.numbers[::3] = AG
    atoms.set_cell(atoms.cell.array @ [[1, 0.06, 0], [0, 1, -0.04], [0.03, 0, 1]], True)
    atoms.rattle(0.1, seed=2)
    graph = atoms_to_graph(atoms, shallow.cutoff)
    assert shallow.member_gradients(graph, strain=True) is not None
    explicit = predict_members(shallow, graph, stress=True)
    batched = predict_members(shallow, graph, stress=True, explicit_gradients=False)
    for key, value in batched.items():
        torch.testing.assert_close(explicit[key], value.detach(), rtol=1e-10, atol=1e-12)
    assert float(explicit[outputs.MEMBER_FORCES].std(0).abs().max()) > 1e-6


def test_harmonics_and_invariants_transform_correctly():
    """Y_1 rotates as a vector, M(Y_2) as Q M Qᵀ; the contractions are invariant."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q[:, 0] = -q[:, 0] if torch.det(q) > 0 else q[:, 0]  # an improper rotation
    unit = torch.nn.functional.normalize(torch.randn(6, 3, generator=gen, dtype=torch.float64))
    harmonics = CartesianHarmonics(2).double()
    y, y_rot = harmonics(unit), harmonics(unit @ q.T)  # (E, 9)
    torch.testing.assert_close(y_rot[:, 1:4], y[:, 1:4] @ q.T, rtol=0, atol=1e-13)
    basis = CartesianInvariants(2).matrices.T.reshape(5, 3, 3)
    m = torch.einsum("ek,kab->eab", y[:, 4:], basis)
    m_rot = torch.einsum("ek,kab->eab", y_rot[:, 4:], basis)
    torch.testing.assert_close(m_rot, q @ m @ q.T, rtol=0, atol=1e-13)
    # u uᵀ - I/3 up to the normalisation √(15/2), and Σ_m Y_m² = 2l + 1
    expected = (
        unit[:, :, None] * unit[:, None, :] - torch.eye(3, dtype=torch.float64) / 3
    ) * 7.5**0.5
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-13)
    np.testing.assert_allclose((y[:, 1:4] ** 2).sum(1), 3.0, rtol=1e-13)
    np.testing.assert_allclose((y[:, 4:] ** 2).sum(1), 5.0, rtol=1e-13)
    # invariants of neighbour sums, before and after the rotation
    weights = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64)  # N=2, K=4, E=6
    u, v = (weights @ y).permute(2, 0, 1), (weights.flip(1) @ y).permute(2, 0, 1)  # (9, 2, 4)
    u_rot = (weights @ y_rot).permute(2, 0, 1)  # (9, 2, 4)
    v_rot = (weights.flip(1) @ y_rot).permute(2, 0, 1)  # (9, 2, 4)
    invariants = CartesianInvariants(2).double()
    reference = invariants(u, v)
    assert reference.abs().min() > 1e-6
    torch.testing.assert_close(invariants(u_rot, v_rot), reference, rtol=1e-12, atol=1e-12)


def test_envelope_is_twice_continuously_zero_at_cutoff():
    r = torch.tensor([0.0, 4.0, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
    u = polynomial_envelope(r, 5.0, 6)
    (du,) = torch.autograd.grad(u.sum(), r, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), r)
    u, du = u.detach(), du.detach()
    assert float(u[0]) == 1.0 and float(u[3]) == 0.0
    assert abs(float(u[2])) < 1e-14 and abs(float(du[2])) < 1e-12 and abs(float(d2u[2])) < 1e-10
    assert float(u[1]) > 0 and float(du[1]) < 0


def test_float32_matches_float64():
    """The same weights in float32 give float64's energy and forces to single precision."""
    from ase.build import bulk

    torch.manual_seed(2)
    model = build_model(SPEC).double().eval()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms.numbers[::3] = AG
    atoms.rattle(0.1, seed=3)
    reference = evaluate(model, atoms)
    single = model.float()
    graph = atoms_to_graph(atoms, single.cutoff, dtype=torch.float32)
    out = predict(single, graph, forces=True, stress=True)
    assert out["energy"].dtype == torch.float32 and out["forces"].dtype == torch.float32
    e_scale = max(abs(reference.energy), 1.0)
    assert abs(float(out["energy"][0]) - reference.energy) < 1e-5 * e_scale
    f_scale = np.abs(reference.forces).max()
    assert np.abs(out["forces"].detach().numpy() - reference.forces).max() < 1e-4 * f_scale
    s_scale = np.abs(reference.stress).max()
    assert np.abs(out["stress"].detach().numpy()[0] - reference.stress).max() < 1e-4 * s_scale
