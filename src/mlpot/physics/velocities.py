"""Maxwell–Boltzmann initial velocities, one call for every ASE version mlpot supports."""

from __future__ import annotations

from ase import Atoms

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta as _thermalize
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def _thermalize(atoms: Atoms, temperature_K: float, *, rng=None) -> None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


def thermalize_momenta(atoms: Atoms, temperature_K: float, *, rng=None) -> None:
    """Draw ``atoms``' momenta from the Maxwell–Boltzmann distribution at ``temperature_K``
    (K) with the numpy generator ``rng``."""
    _thermalize(atoms, temperature_K, rng=rng)
