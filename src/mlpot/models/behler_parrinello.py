"""Behler–Parrinello network: per-atom descriptors and one small network per element.

``ε_i = s · NN_{Z_i}((G_i - μ_{Z_i}) / σ_{Z_i})`` with per-element feature means ``μ`` and
standard deviations ``σ`` fitted on the training set, and an energy scale ``s`` (eV) set
from the RMS of the training forces so the networks work with numbers of order one. The
descriptors ``G`` are ACSF (:mod:`mlpot.nn.acsf`, the default) or the SOAP power spectrum
(:mod:`mlpot.nn.soap`, computed by featomic: ``pip install 'mlpot[soap]'``).
Reference (per-element) energies are a separate :class:`~mlpot.models.offsets.AtomicOffsets`
term, added by :class:`~mlpot.models.sum.SumModel`.
"""

from __future__ import annotations

import torch

from mlpot.data.graph import FORCES, NUMBERS, Graph
from mlpot.models.arguments import (
    Activation,
    Count,
    Descriptor,
    Elements,
    Lambda,
    NonNegative,
    Positive,
    SoapOptions,
    Widths,
)
from mlpot.models.base import EnergyModel, LastLayer
from mlpot.nn.acsf import ACSF
from mlpot.nn.mlp import mlp
from mlpot.nn.soap import SOAP, SOAP_DEFAULTS
from mlpot.nn.species import SpeciesIndex


class BehlerParrinello(EnergyModel):
    """Descriptor (ACSF or SOAP) + per-element MLP energy model.

    Args:
        elements: atomic numbers.
        cutoff: descriptor cutoff, Å.
        radial_count, radial_min, angular_cutoff, angular_etas, zetas, lambdas: see
            :class:`~mlpot.nn.acsf.ACSF` (ignored with ``descriptor="soap"``).
        hidden: widths of the hidden layers of each element's network.
        activation: ``silu``, ``tanh`` or ``softplus``.
        descriptor: ``acsf`` or ``soap``.
        soap: SOAP hyper-parameters (:class:`~mlpot.nn.soap.SOAP`: ``max_radial``,
            ``max_angular``, ``density_width`` Å, ``smoothing_width`` Å,
            ``center_atom_weight``), defaults for those left out; only with
            ``descriptor="soap"``.

    The config names ``descriptor`` and ``soap`` (all of its values) only for a SOAP
    model, so an ACSF model's config is what it was before SOAP existed.
    """

    name = "bpnn"

    def __init__(
        self,
        elements: Elements,
        cutoff: Positive = 5.0,
        radial_count: Count = 12,
        radial_min: NonNegative = 0.5,
        angular_cutoff: Positive | None = None,
        angular_etas: Widths = (0.005, 0.03, 0.1),
        zetas: list[Count] = (1, 2, 4),
        lambdas: list[Lambda] = (1, -1),
        hidden: list[Count] = (64, 64),
        activation: Activation = "silu",
        descriptor: Descriptor = "acsf",
        soap: SoapOptions | None = None,
    ) -> None:
        if soap is not None and descriptor != "soap":
            raise ValueError("soap hyper-parameters are given but descriptor is not 'soap'")
        super().__init__(
            elements,
            cutoff,
            radial_count=radial_count,
            radial_min=radial_min,
            angular_cutoff=angular_cutoff,
            angular_etas=list(angular_etas),
            zetas=list(zetas),
            lambdas=list(lambdas),
            hidden=list(hidden),
            activation=activation,
        )
        if descriptor == "soap":
            soap = {**SOAP_DEFAULTS, **(soap or {})}
            self._config.update(descriptor="soap", soap=soap)
            self.descriptor = SOAP(self.elements, cutoff, **soap)
        else:
            self.descriptor = ACSF(
                self.elements,
                cutoff,
                radial_count=radial_count,
                radial_min=radial_min,
                angular_cutoff=angular_cutoff,
                angular_etas=tuple(angular_etas),
                zetas=tuple(zetas),
                lambdas=tuple(lambdas),
            )
        self.species = SpeciesIndex(self.elements)
        n_features, n_species = self.descriptor.n_features, len(self.elements)
        self.networks = torch.nn.ModuleList(
            mlp(n_features, list(hidden), 1, activation) for _ in self.elements
        )
        self.register_buffer("feature_mean", torch.zeros(n_species, n_features))
        self.register_buffer("feature_std", torch.ones(n_species, n_features))
        self.register_buffer("energy_scale", torch.tensor(1.0))

    @property
    def n_features(self) -> int:
        return self.descriptor.n_features

    def features(self, graph: Graph) -> torch.Tensor:
        """Normalised per-atom descriptors ``(N, F)``."""
        species = self.species(graph[NUMBERS])
        raw = self.descriptor(graph)  # (N, F)
        return (raw - self.feature_mean[species]) / self.feature_std[species]

    @torch.no_grad()
    def fit_statistics(self, graphs: list[Graph]) -> None:
        """Per-element feature mean and std; energy scale = RMS of the force labels."""
        dtype = self.feature_mean.dtype
        feats = torch.cat([self.descriptor(g).to(dtype) for g in graphs])
        species = torch.cat([self.species(g[NUMBERS]) for g in graphs])
        for k in range(len(self.elements)):
            x = feats[species == k]
            if len(x) == 0:
                continue
            self.feature_mean[k] = x.mean(0)
            std = x.std(0) if len(x) > 1 else torch.zeros_like(x[0])
            # a feature that never varies in the data carries no information: leave it unscaled
            self.feature_std[k] = torch.where(std > 1e-6, std, torch.ones_like(std))
        forces = [g[FORCES] for g in graphs if FORCES in g]
        if forces:
            rms = torch.cat(forces).pow(2).mean().sqrt()
            if rms > 0:
                self.energy_scale.fill_(float(rms))

    def element_outputs(self, graph: Graph, apply=None) -> torch.Tensor:
        """Every atom's normalised features through its element's network, ``(N, out)``
        (``apply(network, x)`` instead of ``network(x)`` when given)."""
        x = self.features(graph)  # (N, F)
        species = self.species(graph[NUMBERS])  # (N,)
        out = None
        for k, network in enumerate(self.networks):
            index = torch.nonzero(species == k).squeeze(1)
            rows = x.index_select(0, index)
            y = network(rows) if apply is None else apply(network, rows)  # (n, out)
            out = (x.new_zeros(x.shape[0], y.shape[1]) if out is None else out).index_copy(
                0, index, y
            )
        return out

    def forward(self, graph: Graph) -> torch.Tensor:
        return self.element_outputs(graph).squeeze(-1) * self.energy_scale  # (N,)

    @property
    def n_last_layer_features(self) -> int:
        return len(self.elements) * self.networks[0][-1].in_features

    def last_layer(self, graph: Graph) -> LastLayer:
        """Energies ``(N,)`` eV and, per atom, the input ``z_i`` of its element network's
        last linear layer times the energy scale, in that element's block of ``(N, Z·H)``
        (zeros elsewhere): ``ε_i = s (w_Z · z_i + b_Z)`` is linear in every ``w_Z``."""
        species = self.species(graph[NUMBERS])  # (N,)
        both = self.element_outputs(
            graph, lambda network, x: torch.cat([z := network[:-1](x), network[-1](z)], dim=1)
        )  # (N, H + 1)
        hidden, out = both[:, :-1], both[:, -1]
        blocks = torch.nn.functional.one_hot(species, len(self.elements)).to(hidden.dtype)
        features = (blocks[:, :, None] * hidden[:, None, :]).flatten(1)  # (N, Z*H)
        return LastLayer(out * self.energy_scale, features * self.energy_scale)
