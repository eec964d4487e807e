"""Names of the predicted quantities: the only place they are spelled out.

Units and sign conventions are ASE's:

* ``ENERGY`` ``(S,)`` eV; ``FORCES`` ``(N, 3)`` eV/Å with ``F = -dE/dx``;
* ``VIRIAL`` ``(S, 3, 3)`` eV with ``W = -dE/dε`` for a symmetric strain ``ε`` applied to
  positions and cell;
* ``STRESS`` ``(S, 3, 3)`` eV/Å³ with ``σ = (1/V) dE/dε = -W/V``: positive is tensile
  (a stretched crystal pulls back), the sign of ``atoms.get_stress()``. Voigt order when
  flattened: xx, yy, zz, yz, xz, xy.
"""

ENERGY = "energy"
LOCAL_ENERGIES = "local_energies"
FORCES = "forces"
VIRIAL = "virial"
STRESS = "stress"

ENERGY_STD = "energy_std"
FORCES_STD = "forces_std"
STRESS_STD = "stress_std"

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))

# every member of an ensemble (committee members or shallow-ensemble heads), leading axis K
MEMBER_ENERGY = "member_energy"  # (K, S) eV
MEMBER_FORCES = "member_forces"  # (K, N, 3) eV/Å
MEMBER_STRESS = "member_stress"  # (K, S, 3, 3) eV/Å³
# (K, S) eV, float64: each member's energy minus the members' mean, summed over the atoms'
# own deviations, so that it keeps the digits a float32 total rounds away
MEMBER_ENERGY_DEVIATION = "member_energy_deviation"

# domain of applicability
MAHALANOBIS = "mahalanobis"  # (N,) squared Mahalanobis distance T² of each atom's features
D_MIN = "d_min"  # (N,) distance to the nearest training atom in feature space
HULL_DISTANCE = "hull_distance"  # (N,) signed distance to the training features' convex hull
# in their leading principal components (> 0 outside; see mlpot.uncertainty.domain)
IN_DOMAIN = "in_domain"  # (S,) bool: every atom within every threshold
