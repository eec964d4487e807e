"""Energies, forces and stress of every member of an ensemble from one forward pass.

A shallow ensemble shares its network body and ends in ``K`` output heads: its per-atom
energies are a ``(N, K)`` tensor. :func:`predict_members` evaluates them once and takes the
derivatives of all ``K`` member energies in a single batched backward pass
(``torch.autograd.grad(..., is_grads_batched=True)``), with the same symmetric-strain
construction as :func:`~mlpot.physics.derivatives.predict`, so member stresses include the
periodic images too. The mean outputs are the means over the members: forces and stress are
linear in the energy, so they equal the derivatives of the mean energy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mlpot.data.graph import Graph
from mlpot.physics import outputs
from mlpot.physics.derivatives import (
    predict,
    strained_graph,
    stress_from_strain_derivative,
    structure_sum,
)

MemberGradients = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


def predict_members(
    member_energies: Callable[[Graph], torch.Tensor],
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    member_forces: bool = True,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Mean and per-member predictions of a model with ``K`` members.

    Args:
        member_energies: ``graph -> (N, K)`` per-atom energies of every member, eV.
        graph: the (batched) structures.
        forces, stress: derive forces ``(N, 3)`` eV/Å and stress ``(S, 3, 3)`` eV/Å³.
        member_forces: also derive them for every member (one batched backward pass);
            otherwise only the mean's derivatives are taken (one ordinary backward pass).
        create_graph: keep the derivative graph (for a loss on derivatives).

    Returns ``ENERGY (S,)``, ``LOCAL_ENERGIES (N,)`` and ``MEMBER_ENERGY (K, S)``; with
    ``forces``/``stress`` the means ``FORCES``, ``STRESS``, ``VIRIAL`` and, with
    ``member_forces``, ``MEMBER_FORCES (K, N, 3)`` and ``MEMBER_STRESS (K, S, 3, 3)``.
    """
    graph, inputs = strained_graph(graph, forces=forces, stress=stress)
    local = member_energies(graph)  # (N, K)
    energy = structure_sum(local, graph)  # (S, K)
    results = {
        outputs.ENERGY: energy.mean(1),
        outputs.LOCAL_ENERGIES: local.mean(1),
        outputs.MEMBER_ENERGY: energy.T,
    }
    if not inputs:
        return results
    if member_forces:
        k = local.shape[1]
        basis = torch.eye(k, dtype=energy.dtype, device=energy.device)  # (K, K)
        cotangents = basis[:, None, :].expand(k, energy.shape[0], k)  # (K, S, K)
        grads = torch.autograd.grad(
            energy,
            inputs,
            grad_outputs=cotangents,
            is_grads_batched=True,
            create_graph=create_graph,
            allow_unused=True,
        )  # each (K, *input.shape)
        grads = [
            g if g is not None else x.new_zeros((k, *x.shape))
            for g, x in zip(grads, inputs, strict=True)
        ]
    else:
        grads = torch.autograd.grad(
            energy.mean(1).sum(), inputs, create_graph=create_graph, allow_unused=True
        )
        grads = [
            torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)
        ]
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


def predict_members_from_gradients(
    member_gradients: MemberGradients,
    graph: Graph,
    *,
    stress: bool = False,
    shared: Callable[[Graph], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Mean and per-member predictions of a model that gives its members' gradients itself.

    ``member_gradients(graph, strain=stress)`` returns per-atom member energies ``(N, K)``,
    ``∂E_k/∂x (K, N, 3)`` and ``∂E_k/∂ε (K, S, 3, 3)`` (the symmetric strain of
    :func:`~mlpot.physics.derivatives.strained_graph`), e.g.
    :meth:`~mlpot.models.shallow_ensemble.ShallowEnsembleBPNN.member_gradients`. The
    per-atom energies ``shared(graph) (N,)`` of the terms common to all members (reference
    offsets, physical terms) are predicted once, the ordinary way, and added to every
    member. Outputs and shapes as for :func:`predict_members` with forces and
    ``member_forces``; detached.
    """
    local, d_positions, d_strain = member_gradients(graph, strain=stress)
    members = {outputs.FORCES: -d_positions}  # (K, N, 3)
    if stress:
        members[outputs.VIRIAL] = -d_strain
        members[outputs.STRESS] = stress_from_strain_derivative(d_strain, graph)
    if shared is not None:
        common = predict(shared, graph, forces=True, stress=stress)
        local = local + common[outputs.LOCAL_ENERGIES][:, None]
        members = {key: value + common[key] for key, value in members.items()}
    energy = structure_sum(local, graph)  # (S, K)
    results = {
        outputs.ENERGY: energy.mean(1),
        outputs.LOCAL_ENERGIES: local.mean(1),
        outputs.MEMBER_ENERGY: energy.T,
        outputs.MEMBER_FORCES: members[outputs.FORCES],
    }
    results.update({key: value.mean(0) for key, value in members.items()})
    if stress:
        results[outputs.MEMBER_STRESS] = members[outputs.STRESS]
    return {key: value.detach() for key, value in results.items()}
