"""Diabatic multi-state model: adiabatic energies, forces and nonadiabatic couplings.

Known answer: a diatomic with two crossing Morse diabats and a Gaussian coupling (eV, Å)::

    V_1(r) = 3.0 (1 - exp(-1.8 (r - 1.0)))²                 bound
    V_2(r) = 1.0 (1 - exp(-1.5 (r - 1.8)))² + 1.5           displaced, crossing V_1 near 1.7 Å
    V_12(r) = 0.3 exp(-(r - 1.7)² / (2 · 0.5²))

Its adiabatic energies are ``E_± = (V_1 + V_2)/2 ± sqrt(ΔV²/4 + V_12²)``, ``ΔV = V_2 - V_1``;
with the phase convention ``U_nn ≥ 0`` the coupling is ``d_01 = ⟨ψ_0|∂_r ψ_1⟩ = (ΔV V_12' -
V_12 ΔV') / (ΔV² + 4 V_12²)`` (1/Å) along the bond, on the second atom (minus it on the
first). It peaks at the avoided crossing, 2.67 /Å at r ≈ 1.62 Å, where the gap is 0.6 eV.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from mlpot.apps.diabatic import (
    ENERGIES,
    FORCES,
    adiabatic_states,
    align_nac_phases,
    evaluate,
    load_diabatic,
    nac_key,
    predict_adiabatic,
    read_labels,
    save_diabatic,
)
from mlpot.apps.diabatic_training import fit_diabatic
from mlpot.data.graph import POSITIONS, atoms_to_graph, collate
from mlpot.errors import MlpotInputError
from mlpot.models.diabatic import DiabaticModel
from mlpot.models.registry import build_model

BODY = {
    "name": "bpnn",
    "elements": [1],
    "cutoff": 5.0,
    "radial_count": 16,
    "angular_etas": [0.1],
    "zetas": [1],
    "lambdas": [1],
    "hidden": [8],
}


# -- the exact two-state system -----------------------------------------------------------


def _morse(r, depth, width, centre, offset=0.0, lib=np):
    decay = lib.exp(-width * (r - centre))
    return depth * (1 - decay) ** 2 + offset, 2 * depth * (1 - decay) * width * decay


def diabats(r, lib=np):
    """``V_1, V_1', V_2, V_2', V_12, V_12'`` (eV, eV/Å) at distances ``r`` (Å)."""
    v1, dv1 = _morse(r, 3.0, 1.8, 1.0, lib=lib)
    v2, dv2 = _morse(r, 1.0, 1.5, 1.8, 1.5, lib=lib)
    gauss = 0.3 * lib.exp(-((r - 1.7) ** 2) / (2 * 0.5**2))
    return v1, dv1, v2, dv2, gauss, -gauss * (r - 1.7) / 0.5**2


def exact(r):
    """Adiabatic energies ``(2, R)`` eV, their r-derivatives ``(2, R)`` eV/Å and ``d_01(r)``
    1/Å (phase convention U_nn ≥ 0)."""
    v1, dv1, v2, dv2, v12, dv12 = diabats(np.asarray(r, dtype=np.float64))
    mean, dmean, gap, dgap = (v1 + v2) / 2, (dv1 + dv2) / 2, v2 - v1, dv2 - dv1
    root = np.sqrt(gap**2 / 4 + v12**2)
    droot = (gap * dgap / 4 + v12 * dv12) / root
    nac = (gap * dv12 - v12 * dgap) / (gap**2 + 4 * v12**2)
    return np.stack([mean - root, mean + root]), np.stack([dmean - droot, dmean + droot]), nac


def diatomic(r: float, direction, *, nac: bool = True) -> Atoms:
    """H2 at distance ``r`` along ``direction``, labelled with the exact adiabatic energies,
    forces on both states and (optionally) the coupling vector."""
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], r * u])
    energies, slopes, coupling = exact(r)
    atoms.info[ENERGIES] = energies
    forces = np.zeros((2, 2, 3))  # (atoms, states, xyz)
    forces[1] = -slopes[:, None] * u
    forces[0] = -forces[1]
    atoms.arrays[FORCES] = forces.reshape(2, 6)
    if nac:
        atoms.arrays[nac_key(0, 1)] = np.stack([-coupling * u, coupling * u])
    return atoms


class ExactDiabats(torch.nn.Module):
    """The exact diabatic matrix ``(S, 2, 2)`` eV of a batch of diatomics, with
    ``rotation(r)``, a mixing angle (rad), applied as ``O H Oᵀ`` when given."""

    cutoff, elements = 5.0, [1]

    def __init__(self, rotation=None) -> None:
        super().__init__()
        self.rotation = rotation

    def forward(self, graph):
        pairs = graph[POSITIONS].view(-1, 2, 3)
        r = torch.linalg.vector_norm(pairs[:, 1] - pairs[:, 0], dim=-1)  # (S,)
        v1, _, v2, _, v12, _ = diabats(r, lib=torch)
        h = torch.stack([torch.stack([v1, v12], -1), torch.stack([v12, v2], -1)], -2)
        if self.rotation is None:
            return h
        c, s = torch.cos(self.rotation(r)), torch.sin(self.rotation(r))
        o = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (S, 2, 2)
        return o @ h @ o.transpose(1, 2)


def _graph(frames, cutoff=5.0):
    return collate([atoms_to_graph(atoms, cutoff) for atoms in frames])


GRID = np.linspace(0.9, 2.9, 201)
Z_AXIS = np.array([0.0, 0.0, 1.0])


# -- the formula, without training --------------------------------------------------------


def test_exact_diabats_give_the_analytic_adiabats_forces_and_couplings():
    frames = [diatomic(r, Z_AXIS) for r in GRID]
    result = predict_adiabatic(ExactDiabats(), _graph(frames))
    energies, slopes, coupling = exact(GRID)
    np.testing.assert_allclose(result.energies.numpy().T, energies, atol=1e-12)
    np.testing.assert_allclose(result.forces[:, 1::2, 2].numpy(), -slopes, atol=1e-10)
    np.testing.assert_allclose(result.forces[:, 0::2].numpy(), -result.forces[:, 1::2].numpy())
    np.testing.assert_allclose(result.nac[0, 1, 1::2, 2].numpy(), coupling, atol=1e-10)
    np.testing.assert_allclose(result.nac[0, 1, 0::2, 2].numpy(), -coupling, atol=1e-10)
    np.testing.assert_allclose(result.nac[1, 0].numpy(), -result.nac[0, 1].numpy())
    assert torch.all(result.nac[0, 0] == 0) and torch.all(result.nac[1, 1] == 0)
    gap = (result.energies[:, 1] - result.energies[:, 0]).numpy()
    np.testing.assert_allclose(result.couplings[0, 1, 1::2, 2].numpy(), gap * coupling, atol=1e-9)
    peak = np.argmax(np.abs(coupling))
    assert abs(GRID[peak] - 1.625) < 0.011 and abs(coupling[peak] - 2.666) < 0.01


def test_coupling_is_the_overlap_of_the_state_with_the_derivative_of_the_other():
    """d_mn = <ψ_m|∂ψ_n/∂x> from finite differences of the phase-fixed eigenvectors, for
    three states of an untrained model on a bent triatomic (no 2-state shortcut)."""
    torch.manual_seed(1)
    body = build_model({"name": "bpnn", "elements": [1, 8], "cutoff": 4.0, "hidden": [8]})
    model = DiabaticModel(body, n_states=3, hidden=[16]).double()
    for head in model.heads:  # an order-one coupled matrix (not the near-diagonal start)
        torch.nn.init.normal_(head[-1].weight, std=0.5)
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0.05, 0.0], [-0.3, 0.9, 0.1]])
    graph = atoms_to_graph(atoms, 4.0)
    result = predict_adiabatic(model, graph)
    step = 1e-5
    for atom, axis in [(0, 0), (1, 1), (2, 2)]:
        vectors = []
        for sign in (1, -1):
            moved = dict(graph)
            moved[POSITIONS] = graph[POSITIONS].clone()
            moved[POSITIONS][atom, axis] += sign * step
            with torch.no_grad():
                energies, u = adiabatic_states(model(moved))
            vectors.append((energies[0], u[0]))
        derivative = (vectors[0][1] - vectors[1][1]) / (2 * step)  # (n, n): ∂ψ_n in columns
        overlap = result.vectors[0].T @ derivative  # <ψ_m|∂ψ_n>
        expected = result.nac[:, :, atom, axis]
        off = ~torch.eye(3, dtype=torch.bool)
        torch.testing.assert_close(overlap[off], expected[off], atol=1e-6, rtol=1e-5)
        slopes = (vectors[0][0] - vectors[1][0]) / (2 * step)
        torch.testing.assert_close(-slopes, result.forces[:, atom, axis], atol=1e-7, rtol=1e-6)


def test_adiabatic_labels_do_not_determine_the_couplings():
    """A position-dependent rotation of the diabatic basis keeps energies and forces and
    shifts the coupling by the rotation angle's derivative: d' = d - φ'(r)."""
    frames = [diatomic(r, Z_AXIS) for r in GRID]
    plain = predict_adiabatic(ExactDiabats(), _graph(frames))
    rotated = predict_adiabatic(ExactDiabats(lambda r: 0.2 * torch.sin(2 * r)), _graph(frames))
    torch.testing.assert_close(rotated.energies, plain.energies)
    torch.testing.assert_close(rotated.forces, plain.forces)
    shift = torch.as_tensor(0.4 * np.cos(2 * GRID))
    torch.testing.assert_close(rotated.nac[0, 1, 1::2, 2], plain.nac[0, 1, 1::2, 2] - shift)


def test_degenerate_states_are_an_error_naming_the_structure_or_flagged():
    class Uncoupled(ExactDiabats):
        def forward(self, graph):
            h = super().forward(graph)
            return h * torch.eye(2, dtype=h.dtype)  # no coupling: the diabats cross

    v1, _, v2, _, _, _ = diabats(np.linspace(1.5, 1.9, 4001))
    r_cross = np.linspace(1.5, 1.9, 4001)[np.argmin(np.abs(v1 - v2))]
    frames = [diatomic(1.2, Z_AXIS), diatomic(r_cross, Z_AXIS)]
    with pytest.raises(MlpotInputError, match="frame 1.*states 0 and 1 are degenerate"):
        predict_adiabatic(Uncoupled(), _graph(frames), min_gap=1e-2)
    result = predict_adiabatic(Uncoupled(), _graph(frames), min_gap=1e-2, allow_degenerate=True)
    assert result.degenerate[1, 0, 1] and not result.degenerate[0].any()
    assert torch.isinf(result.nac[0, 1, 2:]).all() and torch.isfinite(result.nac[0, 1, :2]).all()
    assert torch.isfinite(result.forces).all()


# -- labels -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda a: a.info.pop(ENERGIES), ENERGIES, "missing"),
        (lambda a: a.info.update({ENERGIES: [0.1, 0.2, 0.3]}), ENERGIES, "expected 2"),
        (lambda a: a.info.update({ENERGIES: [0.5, 0.2]}), ENERGIES, "ascending"),
        (lambda a: a.info.update({ENERGIES: [np.nan, 0.2]}), ENERGIES, "NaN"),
        (lambda a: a.arrays.update({FORCES: np.zeros((2, 3))}), FORCES, "shape"),
        (lambda a: a.arrays.update({nac_key(0, 1): np.full((2, 3), np.inf)}), nac_key(0, 1), "NaN"),
    ],
)
def test_bad_labels_name_the_frame_and_the_field(change, field, message):
    frames = [diatomic(r, Z_AXIS) for r in (1.0, 1.5, 2.0)]
    change(frames[2])
    with pytest.raises(MlpotInputError, match=message) as err:
        read_labels(frames[2], 2, frame=2, source="data.xyz")
    assert err.value.frame == 2 and err.value.field == field
    model = DiabaticModel(build_model(BODY), 2).double()
    with pytest.raises(MlpotInputError, match=f"frame 2, field '{field}'"):
        fit_diabatic(model, frames, epochs=1)


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="at least 2 states"):
        DiabaticModel(build_model(BODY), n_states=1)
    lj = build_model({"name": "lj", "elements": [1], "cutoff": 3.0})
    with pytest.raises(ValueError, match="no per-atom features"):
        DiabaticModel(lj, 2)
    with pytest.raises(MlpotInputError, match="nac_phase"):
        fit_diabatic(DiabaticModel(build_model(BODY)), [diatomic(1.0, Z_AXIS)], nac_phase="x")


def test_phases_are_tracked_along_a_path():
    rng = np.random.default_rng(3)
    frames = [diatomic(r, Z_AXIS) for r in np.linspace(1.0, 2.5, 20)]
    for atoms in frames:
        atoms.arrays[nac_key(0, 1)] *= rng.choice([-1.0, 1.0])
    aligned = align_nac_phases(frames, 2)
    along = np.array([a.arrays[nac_key(0, 1)][1, 2] for a in aligned])
    assert np.all(np.sign(along) == np.sign(along[0]))
    _, _, coupling = exact(np.linspace(1.0, 2.5, 20))
    np.testing.assert_allclose(np.abs(along), np.abs(coupling))
    other = Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    other.arrays[nac_key(0, 1)] = np.ones((3, 3))
    with pytest.raises(MlpotInputError, match="frame 1, field 'nac_0_1'"):
        align_nac_phases([frames[0], other], 2)


# -- learned from adiabatic labels: the known answer -------------------------------------


@pytest.fixture(scope="module")
def learned():
    """A model trained on 40 labelled diatomics (energies, forces and coupling vectors of
    consistent phase), r from 0.8 to 3.0 Å in random directions."""
    rng = np.random.default_rng(0)
    train = [diatomic(r, rng.normal(size=3)) for r in np.linspace(0.8, 3.0, 40)]
    torch.manual_seed(0)
    model = DiabaticModel(build_model(BODY), 2, hidden=[32, 32]).double()
    fit = fit_diabatic(model, train, epochs=600, learning_rate=5e-3, nac_phase="global")
    return model, fit


def test_learned_adiabats_match_the_exact_ones(learned):
    model, fit = learned
    result = evaluate(model, [diatomic(r, Z_AXIS) for r in GRID], nac=False)
    error = np.abs(result.energies.numpy().T - exact(GRID)[0])  # (2, R) eV
    assert error.mean() < 0.015 and error.max() < 0.05, (error.mean(), error.max())
    assert fit.train["energy_rmse"] < 0.015 and fit.train["nac_rmse"] < 0.05


def test_learned_couplings_match_the_exact_ones_through_the_avoided_crossing(learned):
    model, _ = learned
    result = evaluate(model, [diatomic(r, Z_AXIS) for r in GRID])
    predicted = result.nac[0, 1, 1::2, 2].numpy()
    _, _, coupling = exact(GRID)
    sign = np.sign(np.sum(predicted * coupling))  # one sign for the whole path
    assert np.abs(sign * predicted - coupling).max() < 0.25
    peak, top = np.argmax(np.abs(coupling)), np.argmax(np.abs(predicted))
    assert abs(GRID[top] - GRID[peak]) <= 0.02
    assert abs(abs(predicted[top]) / abs(coupling[peak]) - 1) < 0.08
    area = np.trapezoid(sign * predicted, GRID) / np.trapezoid(coupling, GRID)
    assert abs(area - 1) < 0.05


def test_learned_forces_are_minus_the_gradients_of_the_adiabats(learned):
    model, _ = learned
    rng = np.random.default_rng(5)
    atoms = Atoms("H2", positions=[[0.1, -0.2, 0.3], [0.1, -0.2, 0.3]])
    atoms.positions[1] += 1.63 * rng.normal(size=3) / np.sqrt(3)  # near the crossing
    forces = evaluate(model, atoms, nac=False).forces.numpy()  # (2, 2, 3)
    step = 1e-5
    for atom in range(2):
        for axis in range(3):
            moved = []
            for sign in (1, -1):
                shifted = atoms.copy()
                shifted.positions[atom, axis] += sign * step
                moved.append(evaluate(model, shifted, forces=False, nac=False).energies[0])
            slope = ((moved[0] - moved[1]) / (2 * step)).numpy()
            np.testing.assert_allclose(forces[:, atom, axis], -slope, atol=1e-6)


def test_energies_are_invariant_and_forces_and_couplings_equivariant(learned):
    model, _ = learned
    rng = np.random.default_rng(7)
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], 1.7 * rng.normal(size=3) / np.sqrt(3)])
    rotation = Rotation.random(random_state=11).as_matrix() * np.array([1.0, 1.0, -1.0])
    moved = atoms.copy()  # reflected, rotated, translated, atoms swapped
    moved.positions = (atoms.positions @ rotation.T + [0.3, -1.2, 2.0])[::-1]
    before, after = evaluate(model, atoms), evaluate(model, moved)
    torch.testing.assert_close(after.energies, before.energies)
    r = torch.as_tensor(rotation)
    torch.testing.assert_close(after.forces.flip(1), before.forces @ r.T)
    torch.testing.assert_close(after.nac.flip(2), before.nac @ r.T)


def test_a_saved_model_loads_without_running_code_and_predicts_the_same(learned, tmp_path):
    model, fit = learned
    path = tmp_path / "diabatic.pt"
    save_diabatic(path, model, training={"train": fit.train})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "mlpot-diabatic" and payload["config"]["n_states"] == 2
    loaded = load_diabatic(path)
    frames = [diatomic(r, Z_AXIS) for r in (1.2, 1.65, 2.4)]
    a, b = evaluate(model, frames), evaluate(loaded, frames)
    torch.testing.assert_close(a.energies, b.energies)
    torch.testing.assert_close(a.nac, b.nac)
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(MlpotInputError, match="bad.pt: not an mlpot model file"):
        load_diabatic(tmp_path / "bad.pt")
    torch.save({"format": "mlpot-checkpoint"}, tmp_path / "other.pt")
    with pytest.raises(MlpotInputError, match="not an mlpot diabatic model"):
        load_diabatic(tmp_path / "other.pt")


# -- command line (not registered in mlpot's app here: the commands on an app of their own) --


def test_command_line_fits_and_predicts(tmp_path):
    import ase.io
    import typer
    from typer.testing import CliRunner

    from mlpot.cli.diabatic import fit_diabatic as fit_command
    from mlpot.cli.diabatic import nac as nac_command

    app = typer.Typer()
    app.command("diabatic")(fit_command)
    app.command("nac")(nac_command)
    rng = np.random.default_rng(2)
    frames = [diatomic(r, rng.normal(size=3)) for r in np.linspace(1.0, 2.5, 8)]
    ase.io.write(tmp_path / "data.xyz", frames, format="extxyz")
    runner = CliRunner()
    model = tmp_path / "model.pt"
    args = ["diabatic", str(tmp_path / "data.xyz"), "-o", str(model), "--epochs", "3"]
    result = runner.invoke(app, [*args, "--nac-phase", "track", "--cutoff", "4.0"])
    assert result.exit_code == 0, result.output
    assert "validation: energy_rmse" in result.output
    out = tmp_path / "predicted.xyz"
    result = runner.invoke(app, ["nac", str(model), str(tmp_path / "data.xyz"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    predicted = ase.io.read(out, ":")
    labels = read_labels(predicted[3], 2, frame=3)
    assert labels.forces.shape == (2, 2, 3) and labels.nac[(0, 1)].shape == (2, 3)
    result = runner.invoke(app, [*args, "--nac-phase", "sometimes"])
    assert result.exit_code == 2 and "--nac-phase" in result.output
