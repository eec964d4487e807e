"""Lindh's model Hessian: invariance, the physics of its modes against GFN2-xTB's, and the
normal-mode initial data it gives without a single oracle call."""

import numpy as np
import pytest
from ase.build import molecule
from ase.optimize import BFGS

from mlpot.active.sampling import harmonic_modes, modes_of_hessian
from mlpot.active.valence_hessian import valence_hessian

CM = 521.47  # cm⁻¹ per sqrt(eV / (Å² amu))


@pytest.fixture(scope="module")
def ethanol():
    from tblite.ase import TBLite

    atoms = molecule("CH3CH2OH")
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    BFGS(atoms, logfile=None).run(fmax=0.005)
    atoms.calc = None
    return atoms


def test_symmetric_positive_and_blind_to_rigid_motion(ethanol):
    h = valence_hessian(ethanol)
    assert np.allclose(h, h.T)
    eigenvalues = np.linalg.eigvalsh(h)
    assert eigenvalues[:6] == pytest.approx(np.zeros(6), abs=1e-8)  # 3 translations, 3 rotations
    assert eigenvalues[6] > 1e-2  # every internal motion costs energy
    rotated = ethanol.copy()
    rotated.rotate(37, "x", center="COM")
    rotated.rotate(-71, "z", center="COM")
    assert np.linalg.eigvalsh(valence_hessian(rotated)) == pytest.approx(eigenvalues, abs=1e-8)


def test_modes_resemble_the_oracles(ethanol):
    """The X–H stretches stand apart (above 2500 cm⁻¹, one per X–H bond) and span nearly
    the same space as GFN2-xTB's; every frequency within a factor 2.5 of xTB's."""
    from tblite.ase import TBLite

    w2, modes = modes_of_hessian(ethanol, valence_hessian(ethanol))
    w2_ref, modes_ref = harmonic_modes(ethanol, TBLite(method="GFN2-xTB", verbosity=0))
    freq, freq_ref = np.sqrt(w2) * CM, np.sqrt(w2_ref) * CM
    assert len(freq) == len(freq_ref) == 3 * len(ethanol) - 6
    assert (freq > 2500).sum() == (freq_ref > 2500).sum() == 6
    ratio = freq / freq_ref
    assert ratio.min() > 0.8 and ratio.max() < 2.5
    stretch, stretch_ref = modes[freq > 2500], modes_ref[freq_ref > 2500]
    a, b = stretch.reshape(6, -1), stretch_ref.reshape(6, -1)
    overlap = np.linalg.svd(a @ b.T, compute_uv=False)  # cosines of the principal angles
    assert overlap.min() > 0.9


def test_valence_start_costs_no_oracle_call(tmp_path, ethanol):
    """``initial: {method: normal_modes, hessian: valence}``: the initial requests are
    normal-mode samples (spread like kT over the modes), and set-up calls nothing."""
    from mlpot.active import parse_learn_config
    from mlpot.active.labelling import OracleSpec
    from mlpot.active.setup import RunSetup
    from mlpot.active.store import Store

    config = parse_learn_config(
        {
            "initial": {"method": "normal_modes", "hessian": "valence", "count": 6},
            "output": str(tmp_path),
        }
    )
    store = Store(tmp_path / "store.db")
    setup = RunSetup(config, tmp_path, OracleSpec("xtb", {}), store, log=lambda line: None)
    setup.initial_requests([ethanol])
    requests = [r for r in store.requests().values() if r.reason == "initial"]
    assert setup.calls == 0 and len(requests) == 6
    shifts = np.array([r.toatoms().positions - ethanol.positions for r in requests])
    rms = np.sqrt((shifts**2).sum(-1).mean())
    assert 0.02 < rms < 0.2  # thermal displacements at 300 K, not a rattle or nothing
    assert not np.allclose(shifts[0], shifts[1])
