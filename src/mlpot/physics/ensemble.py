"""The one place where the members of an ensemble model get their forces and stress.

A model with members answers the member protocol of
:class:`~mlpot.models.base.EnergyModel`. :func:`predict_members` gives the mean outputs and
every member's, stacked on a leading axis ``K``, the cheapest way the model allows:

* a committee (:meth:`~mlpot.models.base.EnergyModel.member_models`): each member model
  through :func:`~mlpot.physics.derivatives.predict`, one backward pass each;
* a model that computes its members' exact derivatives itself
  (:meth:`~mlpot.models.base.EnergyModel.member_gradients`, e.g. the shallow ensemble's
  explicit descriptor gradients): those, plus the ordinary derivatives of the parts the
  members share;
* otherwise the member energies ``(K, N)`` once, and the derivatives of all ``K`` member
  energies in one batched backward pass (``torch.autograd.grad(...,
  is_grads_batched=True)``; one pass per member where an operator has no batching rule),
  with the symmetric-strain construction of
  :func:`~mlpot.physics.derivatives.predict`, so member stresses include the periodic
  images too.

The mean outputs are the means over the members: forces and stress are linear in the
energy, so they equal the derivatives of the mean energy.
"""

from __future__ import annotations

import torch

from mlpot.data.graph import Graph
from mlpot.models.base import EnergyModel, MemberGradients
from mlpot.physics import outputs
from mlpot.physics.derivatives import (
    predict,
    strained_graph,
    stress_from_strain_derivative,
    structure_sum,
)

_STACKED = {
    outputs.ENERGY: outputs.MEMBER_ENERGY,
    outputs.FORCES: outputs.MEMBER_FORCES,
    outputs.STRESS: outputs.MEMBER_STRESS,
}


def predict_members(
    model: EnergyModel,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    member_forces: bool = True,
    create_graph: bool = False,
    explicit_gradients: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean and per-member predictions of a model with ``K`` members.

    Args:
        model: an ensemble model (``model.n_members > 0``; otherwise
            :class:`~mlpot.errors.MlpotInputError`).
        graph: the (batched) structures.
        forces, stress: derive forces ``(N, 3)`` eV/Å and stress ``(S, 3, 3)`` eV/Å³.
        member_forces: also derive them for every member; otherwise (where that is
            cheaper) only the mean's derivatives are taken, in one ordinary backward pass.
            A committee always gives its members' forces.
        create_graph: keep the derivative graph (for a loss on derivatives); otherwise the
            results are detached.
        explicit_gradients: use the model's own member gradients when it offers them
            (False: batched autograd, e.g. to check them).

    Returns ``ENERGY (S,)``, ``LOCAL_ENERGIES (N,)``, ``MEMBER_ENERGY (K, S)`` and
    ``MEMBER_ENERGY_DEVIATION (K, S)`` (float64, see :func:`energy_deviation`); with
    ``forces``/``stress`` the means ``FORCES``, ``STRESS``, ``VIRIAL`` and, with
    ``member_forces``, ``MEMBER_FORCES (K, N, 3)`` and ``MEMBER_STRESS (K, S, 3, 3)``.
    Per-member forces of a shallow ensemble need evaluation mode (``model.eval()``).
    """
    members = model.member_models()
    if members:
        results = _each_member(
            members, graph, forces=forces, stress=stress, create_graph=create_graph
        )
    elif (
        member_forces
        and forces
        and not create_graph
        and explicit_gradients
        and (gradients := model.member_gradients(graph, strain=stress)) is not None
    ):
        results = _from_gradients(gradients, graph, stress=stress)
    else:
        results = _by_autograd(
            model,
            graph,
            forces=forces,
            stress=stress,
            member_forces=member_forces,
            create_graph=create_graph,
        )
    if not create_graph:
        results = {key: value.detach() for key, value in results.items()}
    return results


def energy_deviation(local: torch.Tensor, graph: Graph) -> torch.Tensor:
    """``E_k - mean_k E_k`` per structure ``(K, S)``, float64, detached, from the members'
    local energies ``(K, N)``: summed over the atoms' deviations, in float64. A float32
    total of a large structure carries summation errors of ~1e-4 eV (2048 Cu atoms,
    ~1300 eV), different for each member, which the spread of two members 2 meV apart
    inherited as a 21 % error (tests/test_uncertainty_ensemble.py); on a molecule two
    float32 totals can even agree to the last bit, a zero spread no calibration takes."""
    local = local.detach().double()
    return structure_sum((local - local.mean(0)).T, graph).T


def _each_member(
    members: list[EnergyModel], graph: Graph, *, forces: bool, stress: bool, create_graph: bool
) -> dict[str, torch.Tensor]:
    """Member models one by one: the means of their outputs, and the members' stacked."""
    stacked: dict[str, list[torch.Tensor]] = {}
    for member in members:
        out = predict(member, graph, forces=forces, stress=stress, create_graph=create_graph)
        for key, value in out.items():
            stacked.setdefault(key, []).append(value)
    per_member = {key: torch.stack(values) for key, values in stacked.items()}  # (K, ...)
    results = {key: value.mean(0) for key, value in per_member.items()}
    results[outputs.MEMBER_ENERGY_DEVIATION] = energy_deviation(
        per_member[outputs.LOCAL_ENERGIES], graph
    )
    for plain, member in _STACKED.items():
        if plain in per_member:
            results[member] = per_member[plain]
    return results


def _from_gradients(
    gradients: MemberGradients, graph: Graph, *, stress: bool
) -> dict[str, torch.Tensor]:
    """Outputs from the model's own member gradients, plus the derivatives of the members'
    common part, taken once the ordinary way."""
    local, d_positions, d_strain = gradients.energies, gradients.positions, gradients.strain
    if gradients.common is not None:
        common = predict(gradients.common, graph, forces=True, stress=stress)
        local = local + common[outputs.LOCAL_ENERGIES]  # (K, N)
        d_positions = d_positions - common[outputs.FORCES]  # (K, N, 3)
        if stress:
            d_strain = d_strain - common[outputs.VIRIAL]  # (K, S, 3, 3)
    energy = structure_sum(local.T, graph).T  # (K, S)
    grads = [d_positions, d_strain] if stress else [d_positions]
    return _assemble(local, energy, grads, graph, forces=True, stress=stress, member_forces=True)


def _by_autograd(
    model: EnergyModel,
    graph: Graph,
    *,
    forces: bool,
    stress: bool,
    member_forces: bool,
    create_graph: bool,
) -> dict[str, torch.Tensor]:
    """Member energies in one forward pass; their derivatives in one (batched) backward."""
    graph, inputs = strained_graph(graph, forces=forces, stress=stress)
    local = model.member_energies(graph, member_derivatives=member_forces and bool(inputs))
    energy = structure_sum(local.T, graph).T  # (K, S)
    if not inputs:
        return _assemble(local, energy, [], graph, forces=False, stress=False, member_forces=False)
    if member_forces:
        k = local.shape[0]
        basis = torch.eye(k, dtype=energy.dtype, device=energy.device)  # (K, K)
        cotangents = basis[:, :, None].expand(k, k, energy.shape[1])  # (K, K, S)
        grads = _batched_grads(energy, inputs, cotangents, create_graph=create_graph)
    else:
        grads = torch.autograd.grad(
            energy.mean(0).sum(), inputs, create_graph=create_graph, allow_unused=True
        )  # each input.shape
        grads = [
            torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)
        ]
    return _assemble(
        local, energy, grads, graph, forces=forces, stress=stress, member_forces=member_forces
    )


def _batched_grads(
    energy: torch.Tensor,
    inputs: list[torch.Tensor],
    cotangents: torch.Tensor,
    *,
    create_graph: bool,
) -> list[torch.Tensor]:
    """``d(cotangents[k] · energy)/d input`` for every member ``k``, each ``(K, *shape)``: one
    vectorised backward pass, or one pass per member where an operation has no batching
    rule (a custom operator such as featomic's SOAP gradients)."""
    k = cotangents.shape[0]
    try:
        grads = torch.autograd.grad(
            energy,
            inputs,
            grad_outputs=cotangents,
            is_grads_batched=True,
            create_graph=create_graph,
            retain_graph=True,
            allow_unused=True,
        )
    except RuntimeError:  # no vmap rule: the same derivatives member by member
        rows = [
            torch.autograd.grad(
                energy,
                inputs,
                grad_outputs=cotangents[m],
                create_graph=create_graph,
                retain_graph=True,
                allow_unused=True,
            )
            for m in range(k)
        ]
        grads = [
            None if column[0] is None else torch.stack(column) for column in zip(*rows, strict=True)
        ]
    return [
        x.new_zeros((k, *x.shape)) if g is None else g for g, x in zip(grads, inputs, strict=True)
    ]


def _assemble(
    local: torch.Tensor,
    energy: torch.Tensor,
    grads: list[torch.Tensor],
    graph: Graph,
    *,
    forces: bool,
    stress: bool,
    member_forces: bool,
) -> dict[str, torch.Tensor]:
    """The named outputs from the member energies, per atom ``local (K, N)`` and per
    structure ``energy (K, S)``, and the derivatives ``[dE/dx][, dE/dε]``: of every member
    ``(K, ...)`` with ``member_forces``, else of the mean energy."""
    results = {
        outputs.ENERGY: energy.mean(0),
        outputs.LOCAL_ENERGIES: local.mean(0),
        outputs.MEMBER_ENERGY: energy,
        outputs.MEMBER_ENERGY_DEVIATION: energy_deviation(local, graph),
    }
    if forces:
        results[outputs.FORCES] = -grads[0].mean(0) if member_forces else -grads[0]
        if member_forces:
            results[outputs.MEMBER_FORCES] = -grads[0]  # (K, N, 3)
    if stress:
        de_dstrain = grads[-1]  # (K, S, 3, 3) or (S, 3, 3)
        member_stress = stress_from_strain_derivative(de_dstrain, graph)
        if member_forces:
            results[outputs.MEMBER_STRESS] = member_stress
            de_dstrain, member_stress = de_dstrain.mean(0), member_stress.mean(0)
        results[outputs.VIRIAL] = -de_dstrain
        results[outputs.STRESS] = member_stress
    return results
