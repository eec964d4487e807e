"""Reciprocal-space sums of the smooth Coulomb kernel in a periodic cell (no parameters,
no I/O): :class:`LongRangeSettings` (how a cell's sum is done, with what depends on the
cell only cached) and :func:`reciprocal_potential`. Free molecules, slabs and the real-space
remainder: :mod:`mlpot.nn.electrostatics`.

Reciprocal space, per structure of a batch
------------------------------------------
With ``G(k) = 4π exp(-σ²k²/2) / k²`` and the structure factor ``S(k) = Σ_j q_j e^{ik·r_j}``,
``φ_i = (1/V) Σ_{k≠0} G(k) Re[e^{-ik·r_i} S(k)] - q_i √(2/π)/σ - 2πσ² Q/V`` (own Gaussian
removed; a net charge ``Q`` is compensated by a uniform background, the usual convention).

Both run through torch-pme (``pip install 'mlpot[long-range]'``), whose
``CoulombPotential(smearing=σ)`` has exactly this kernel, self term and background; it gets
no neighbour list (the reciprocal part only) and the 3D-periodic setting (the slab
correction of :mod:`mlpot.nn.electrostatics` is ours: torch-pme's takes a Cartesian axis,
not the normal of the periodic plane). The dense Coulomb matrix of charge equilibration
(:func:`mlpot.nn.electrostatics.coulomb_matrix`) is ours too: torch-pme returns potentials,
and a matrix from them needs one charge channel per atom.

* **Ewald** (``method="ewald"``): torch-pme's ``EwaldCalculator`` over the sphere of
  reciprocal lattice vectors ``0 < |k| <= k_max``, ``k_max = √(2 ln(10/accuracy)) / σ`` (the
  kernel has fallen to a tenth of ``accuracy`` there; measured RMS force errors stay below
  ``accuracy``), passed to it as ``kvectors`` (its own choice from ``lr_wavelength`` is a
  box, which does not turn with the cell). ``O(N²)`` since ``K`` grows with the volume.
  Exact identities (rotations, supercells) hold to round-off because the sphere turns and
  repeats with the lattice.
* **PME** (``method="pme"``, use it beyond ~100 atoms): particle-particle particle-mesh
  (P3M) with torch-pme's pieces
  (Hockney–Eastwood/Deserno–Holm): its ``MeshInterpolator`` spreads the charges with
  B-splines of order ``interpolation_nodes`` (``p`` = 3 to 5; smooth to ``p - 2``
  derivatives, so forces are continuous), its ``P3MKSpaceFilter`` convolves with
  ``G(k) / U(k)²`` by FFT, and the same B-splines interpolate back: ``O(N log N)``. Two
  choices are ours: the mesh size is the next FFT-friendly integer (factors 2, 3, 5) above
  ``cell length / mesh_spacing`` (torch-pme rounds up to a power of two, up to 8 times the
  points), with the spacing from ``accuracy`` (:func:`pme_mesh_spacing`, measured error
  model) unless ``mesh_spacing`` is given; and the filter takes ``U`` at the mesh phases
  ``k·a_i / n_i`` along the cell vectors (torch-pme 0.5 multiplies Cartesian ``k`` by
  cell-vector lengths, right for orthogonal cells only: on a sheared cell its force error
  stalls near 1e-3 whatever the mesh).

Both are differentiable in positions and cell (the cell enters through the wave vectors,
the volume and the fractional coordinates), so forces and stress
(:func:`mlpot.physics.derivatives.predict`) are exact gradients of the approximate energy.
The set of wave vectors and the mesh size are integers chosen from the cell, so under a
changing cell (NPT) the energy can step by an amount of the order of ``accuracy`` where
one of them changes.
What depends on the cell only (the selected wave vectors; the P3M filter on the mesh) is
cached; it is recomputed (differentiably) only when the cell carries a gradient (stress) or
changes.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict

import torch

METHODS = ("ewald", "pme")

#: Default relative accuracy of the reciprocal-space sum (RMS force error / RMS force).
DEFAULT_ACCURACY = 1e-3

#: P3M error model: ``rms force error / rms force <= c (h/σ)^e`` per B-spline order, for the
#: P3M of :func:`_pme` (``e`` fitted on rattled, sheared rock salt with 64 and 216 ions,
#: σ = 0.8 to 1.4 Å, h/σ = 0.15 to 1, against Ewald at 1e-14; ``c`` is twice the worst of
#: those, as CsCl-type cells reach 1.5 times it).
PME_ERROR_MODEL = {3: (0.9, 2.67), 4: (0.5, 3.23), 5: (0.23, 5.05)}

#: Orders of the own smooth PME this module had before torch-pme (6, 7): read as 5.
_LEGACY_ORDERS = (6, 7)

_CACHE_SIZE = 16


def pme_mesh_spacing(smearing: float, accuracy: float, order: int) -> float:
    """Largest PME mesh spacing (Å) whose relative RMS force error is about ``accuracy``."""
    factor, exponent = PME_ERROR_MODEL[order]
    return float(smearing) * min((accuracy / factor) ** (1.0 / exponent), 1.0)


def _fft_size(n: int) -> int:
    """The smallest integer ``>= n`` with no prime factor above 5 (fast FFT)."""
    n = max(int(n), 1)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _torchpme():
    """The torch-pme package, or a clear error naming the extra that installs it."""
    try:
        import torchpme
    except ImportError as error:  # pragma: no cover - torch-pme is a test dependency
        raise ImportError(
            "periodic electrostatics (coulomb in a cell) runs through torch-pme: "
            "pip install 'mlpot[long-range]'"
        ) from error
    return torchpme


@functools.cache
def _p3m_filter_class():
    """torch-pme's P3M k-space filter with the mesh phases taken along the cell vectors."""
    from torchpme.lib.kspace_filter import P3MKSpaceFilter

    class CellP3MFilter(P3MKSpaceFilter):
        """``G(k) / U(k)²`` with ``U = Π_i sinc(m_i / n_i)^p`` at the integer frequency ``m_i
        = k·a_i / 2π`` along each cell vector (mode 0: the potential), as a product of three
        1D factors. torch-pme 0.5 evaluates ``sinc`` at ``k_x |a_x| / 2π n_x`` per Cartesian
        axis instead, the same only for orthogonal cells. ``U`` depends on integers only, so
        it carries no cell gradient."""

        def _compute_influence(self, kvectors: torch.Tensor) -> torch.Tensor:
            options = {"dtype": kvectors.dtype, "device": kvectors.device}
            n1, n2, n3 = (int(n) for n in self.ns_mesh)
            power = 2 * self.interpolation_nodes
            u1, u2 = (torch.sinc(torch.fft.fftfreq(n, **options)) ** power for n in (n1, n2))
            u3 = torch.sinc(torch.fft.rfftfreq(n3, **options)) ** power  # |m/n| <= ½: > 0
            return 1.0 / (u1[:, None, None] * u2[None, :, None] * u3)  # (n1, n2, n3//2+1)

    return CellP3MFilter


def _inverse_cell(cell: torch.Tensor) -> torch.Tensor:
    """``cell⁻¹`` of a 3x3 cell from cross products (cheaper than LU for autograd)."""
    a, b, c = cell.unbind(0)
    adjugate = torch.stack(
        [torch.linalg.cross(b, c), torch.linalg.cross(c, a), torch.linalg.cross(a, b)], dim=1
    )  # columns: b×c, c×a, a×b
    return adjugate / torch.dot(a, torch.linalg.cross(b, c))


def _reciprocal_metric(cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reciprocal vectors ``B = 2π cell⁻ᵀ`` (rows) and the metric ``B Bᵀ`` as 6 components."""
    recip = 2.0 * math.pi * _inverse_cell(cell).transpose(0, 1)  # (3, 3), k = m @ recip
    g = recip @ recip.T
    return recip, torch.stack([g[0, 0], g[1, 1], g[2, 2], g[0, 1], g[0, 2], g[1, 2]])


def _metric_products(m: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` products of integer indices so that ``k² = products @ metric6``."""
    a, b, c = m.unbind(-1)
    return torch.stack([a * a, b * b, c * c, 2 * a * b, 2 * a * c, 2 * b * c], dim=-1)


def _kernel(k2: torch.Tensor, smearing: float) -> torch.Tensor:
    """``4π exp(-σ²k²/2) / k²``, zero at ``k = 0``."""
    zero = k2 == 0
    safe = torch.where(zero, torch.ones_like(k2), k2)
    value = 4.0 * math.pi * torch.exp(-0.5 * smearing**2 * safe) / safe
    return torch.where(zero, torch.zeros_like(value), value)


class _Cache(OrderedDict):
    """A small least-recently-used dictionary."""

    def get_or(self, key, build):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = build()
        self[key] = value
        if len(self) > _CACHE_SIZE:
            self.popitem(last=False)
        return value


def _cell_key(cell: torch.Tensor) -> tuple:
    return (cell.dtype, str(cell.device), cell.detach().cpu().numpy().tobytes())


class LongRangeSettings:
    """How the smooth long-range Coulomb kernel is summed in cells (no parameters, no I/O).

    Args:
        smearing: Gaussian width ``σ`` of the range separation, Å.
        method: ``ewald`` or ``pme`` for periodic cells.
        accuracy: target relative RMS error of the long-range forces (default ``1e-3``);
            sets the Ewald sphere ``k_max = √(2 ln(10/accuracy)) / σ`` and the PME mesh
            spacing (:func:`pme_mesh_spacing`).
        lr_wavelength: shortest wavelength kept in the Ewald sum, Å (``k_max = 2π /
            lr_wavelength``); overrides ``accuracy`` for Ewald.
        mesh_spacing: largest PME mesh spacing, Å; overrides ``accuracy`` for PME.
        interpolation_nodes: P3M B-spline order ``p`` (mesh points per axis and atom),
            3 to 5 (torch-pme's range); 5 (default) needs the coarsest mesh by far (orders
            3 and 4 converge like ``h²`` to ``h³``). 6 and 7, the orders of the former own
            PME, are read as 5.
    """

    def __init__(
        self,
        smearing: float,
        method: str = "ewald",
        lr_wavelength: float | None = None,
        mesh_spacing: float | None = None,
        interpolation_nodes: int = 5,
        accuracy: float | None = None,
    ) -> None:
        if not smearing > 0:
            raise ValueError(f"smearing must be positive, got {smearing}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        accuracy = DEFAULT_ACCURACY if accuracy is None else float(accuracy)
        if not 0 < accuracy < 1:
            raise ValueError(f"accuracy must be in (0, 1), got {accuracy}")
        interpolation_nodes = int(interpolation_nodes)
        if interpolation_nodes in _LEGACY_ORDERS:
            interpolation_nodes = max(PME_ERROR_MODEL)
        if interpolation_nodes not in PME_ERROR_MODEL:
            raise ValueError(
                f"interpolation_nodes must be one of {sorted(PME_ERROR_MODEL)}, "
                f"got {interpolation_nodes}"
            )
        self.smearing = float(smearing)
        self.method = method
        self.accuracy = accuracy
        self.interpolation_nodes = interpolation_nodes
        if lr_wavelength:
            self.k_cutoff = 2.0 * math.pi / float(lr_wavelength)
        else:
            self.k_cutoff = math.sqrt(2.0 * math.log(10.0 / accuracy)) / self.smearing
        self.mesh_spacing = float(
            mesh_spacing or pme_mesh_spacing(self.smearing, accuracy, self.interpolation_nodes)
        )
        self._wave_numbers = _Cache()  # cell -> integer k indices inside the sphere (K, 3)
        self._kernels = _Cache()  # cell without gradient -> k vectors, weights, P3M filter
        self._calculators = {}  # (dtype, device) -> torch-pme Ewald calculator

    # ------------------------------------------------------------------ Ewald

    def wave_numbers(self, cell: torch.Tensor) -> torch.Tensor:
        """Integer indices ``m (K, 3)`` of the half sphere ``0 < |m @ B| <= k_max``."""

        def build():
            with torch.no_grad():
                recip, _ = _reciprocal_metric(cell.detach())
                lengths = torch.linalg.vector_norm(cell.detach(), dim=1)
                bounds = [int(self.k_cutoff * float(n) / (2 * math.pi)) + 1 for n in lengths]
                axes = [torch.arange(-n, n + 1, device=cell.device) for n in bounds]
                m = torch.cartesian_prod(*axes)  # (box, 3)
                half = (m[:, 0] > 0) | (
                    (m[:, 0] == 0) & ((m[:, 1] > 0) | ((m[:, 1] == 0) & (m[:, 2] > 0)))
                )
                m = m[half]
                k2 = ((m.to(cell.dtype) @ recip) ** 2).sum(1)
                return m[k2 <= self.k_cutoff**2].to(cell.dtype)

        return self._wave_numbers.get_or(("k",) + _cell_key(cell), build)

    def ewald_terms(self, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Wave vectors ``k (K, 3)`` and weights ``2 G(k) / V (K,)`` of the half sphere."""

        def build():
            m = self.wave_numbers(cell)
            recip, metric = _reciprocal_metric(cell)
            k2 = _metric_products(m) @ metric
            volume = torch.linalg.det(cell).abs()
            return m @ recip, 2.0 * _kernel(k2, self.smearing) / volume

        if cell.requires_grad:
            return build()
        return self._kernels.get_or(("ewald",) + _cell_key(cell), build)

    # ------------------------------------------------------------------ PME

    def mesh_shape(self, cell: torch.Tensor) -> tuple[int, int, int]:
        lengths = torch.linalg.vector_norm(cell.detach(), dim=1).tolist()
        return tuple(_fft_size(math.ceil(n / self.mesh_spacing)) for n in lengths)

    def potential(self, dtype: torch.dtype, device: torch.device):
        """torch-pme's ``CoulombPotential(smearing=σ)`` in ``dtype`` on ``device``."""
        return self.ewald_calculator(dtype, device).potential

    def ewald_calculator(self, dtype: torch.dtype, device: torch.device):
        """torch-pme's ``EwaldCalculator`` (its ``lr_wavelength`` unused: the k vectors of
        :meth:`ewald_kvectors` are passed to it)."""
        key = (dtype, str(device))
        if key not in self._calculators:
            torchpme = _torchpme()
            potential = torchpme.CoulombPotential(smearing=self.smearing)
            calculator = torchpme.EwaldCalculator(potential, lr_wavelength=1.0)
            self._calculators[key] = calculator.to(dtype=dtype, device=device)
        return self._calculators[key]

    def ewald_kvectors(self, cell: torch.Tensor) -> torch.Tensor:
        """The full sphere ``0 < |k| <= k_max`` of wave vectors ``(2K, 3)``, ``±k``."""

        def build():
            k = self.wave_numbers(cell) @ _reciprocal_metric(cell)[0]
            return torch.cat([k, -k])

        if cell.requires_grad:
            return build()
        return self._kernels.get_or(("kvectors",) + _cell_key(cell), build)

    def p3m_filter(self, cell: torch.Tensor, shape: tuple[int, int, int]):
        """torch-pme's P3M filter of ``cell`` on the mesh ``shape`` (cell-vector phases)."""

        def build():
            ns = torch.tensor(shape, device=cell.device)
            return _p3m_filter_class()(
                cell,
                ns,
                self.interpolation_nodes,
                self.potential(cell.dtype, cell.device),
                fft_norm="backward",
                ifft_norm="forward",
            )

        if cell.requires_grad:
            return build()
        return self._kernels.get_or(("p3m", shape) + _cell_key(cell), build)


def reciprocal_potential(
    charges: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor, settings: LongRangeSettings
) -> torch.Tensor:
    """The 3D-periodic sum ``φ_i`` of ``charges (n, C)`` at ``positions (n, 3)`` Å in ``cell
    (3, 3)`` by ``settings.method`` (own Gaussian removed, net charge compensated by a
    uniform background), ``(n, C)`` in e/Å."""
    if settings.method == "ewald":
        return _ewald(charges, positions, cell, settings)
    return _pme(charges, positions, cell, settings)


def _no_pairs(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An empty neighbour list: torch-pme computes the reciprocal part only."""
    return (
        torch.zeros((0, 2), dtype=torch.long, device=positions.device),
        positions.new_zeros(0),
    )


def _ewald(charges, positions, cell, settings) -> torch.Tensor:
    """torch-pme's Ewald sum over the sphere of ``settings``, own Gaussian and background
    included, ``(n, C)``; torch-pme returns ``V_i = φ_i / 2``."""
    calculator = settings.ewald_calculator(positions.dtype, positions.device)
    kvectors = settings.ewald_kvectors(cell)
    pairs, distances = _no_pairs(positions)
    return 2.0 * calculator(charges, cell, positions, pairs, distances, kvectors=kvectors)


def _pme(charges, positions, cell, settings) -> torch.Tensor:
    """P3M with torch-pme's mesh interpolator and filter, own Gaussian and background
    removed with torch-pme's ``CoulombPotential`` terms as in its calculators, ``(n, C)``."""
    torchpme = _torchpme()
    shape = settings.mesh_shape(cell)
    ns = torch.tensor(shape, device=cell.device)
    interpolator = torchpme.lib.MeshInterpolator(cell, ns, settings.interpolation_nodes, "P3M")
    interpolator.compute_weights(positions)
    mesh = interpolator.points_to_mesh(charges)  # (C, n1, n2, n3)
    volume = torch.linalg.det(cell).abs()
    phi = interpolator.mesh_to_points(settings.p3m_filter(cell, shape).forward(mesh)) / volume
    coulomb = settings.potential(positions.dtype, positions.device)
    phi = phi - coulomb.self_contribution() * charges  # own Gaussian √(2/π)/σ
    return phi - 2.0 * coulomb.background_correction() * charges.sum(0) / volume  # 2πσ²Q/V
