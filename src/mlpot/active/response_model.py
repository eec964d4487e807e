"""Response labels and the response model of a run (the config's ``response`` section).

With the section set, every label the oracle produces holds the response properties too
(:mod:`mlpot.active.labelling`, :mod:`mlpot.active.oracle_md`), stored with it; at the end
of the run :func:`train_response_model` fits a dipole or polarisability model
(:mod:`mlpot.models.response`) to the stored labels with
:func:`mlpot.training.response.fit_response` (an ensemble with
:func:`~mlpot.training.response.fit_response_ensemble`) and writes it next to the potential.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from mlpot.active.config import LearnConfig, ResponseSection
from mlpot.active.store import TEST, Store
from mlpot.data.systems import build_system
from mlpot.errors import MlpotInputError

#: fewest labels (training and early-stopping validation together) a response model fits
MIN_LABELS = 4
#: unit of each kind's error
UNITS = {"dipole": "e·Å", "polarizability": "e·Å²/V"}


def response_file(kind: str) -> str:
    """The file name of a run's response model of ``kind``: ``dipole.pt``,
    ``polarizability.pt``."""
    return f"{kind}.pt"


def check_response(config: LearnConfig, calculator) -> None:
    """Before any oracle call: the oracle's calculator gives the response properties of
    ``config.response`` (a ``module:factory`` oracle is known only once built) and the start
    structures are molecules or clusters. Raises :class:`MlpotInputError` naming the key."""
    section = config.response
    if section is None:
        return
    implemented = list(getattr(calculator, "implemented_properties", []))
    lacking = [p for p in section.properties if p not in implemented]
    if lacking:
        raise MlpotInputError(
            f"response.kind: {section.kind} needs the oracle's {lacking[0]}, and oracle "
            f"{config.oracle.name!r} gives none (it gives {', '.join(implemented)}); choose "
            "an oracle that does or drop the response section",
            field="response",
        )
    periodic = [k for k, atoms in enumerate(build_system(config.system)) if atoms.pbc.any()]
    if periodic:
        raise MlpotInputError(
            f"response: system {config.system!r} is periodic (structure {periodic[0]}); a "
            "periodic cell's dipole is defined only modulo the polarisation quantum, so "
            "response models take molecules and clusters",
            field="response",
        )


@dataclass
class ResponseResult:
    """A run's trained response model: its ``kind``, file, and errors (e·Å or e·Å²/V,
    root mean square over the components): ``validation_rmse`` on the labels held out for
    early stopping, ``test_rmse`` on the held-out test set (None when no test frame holds
    the label); ``held_out`` names the figure a summary quotes."""

    kind: str
    path: str
    n_train: int
    n_validation: int
    n_test: int
    epochs: int
    train_rmse: float
    validation_rmse: float
    test_rmse: float | None
    members: int = 1

    @property
    def held_out(self) -> tuple[str, float]:
        """``("test", rmse)`` or, without test labels, ``("validation", rmse)``."""
        if self.test_rmse is not None:
            return "test", self.test_rmse
        return "validation", self.validation_rmse

    def describe(self) -> str:
        """One line for progress and summaries."""
        which, rmse = self.held_out
        return (
            f"{self.kind} model {self.path}: held-out {which} {self.kind} RMSE {rmse:.3g} "
            f"{UNITS[self.kind]} ({self.n_train} training, {self.n_validation} validation, "
            f"{self.n_test} test labels)"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _with_label(labelled: list, kind: str) -> list[Atoms]:
    """The structures of ``labelled`` (store rows) whose labels hold ``kind``."""
    out = []
    for item in labelled:
        results = item.atoms.calc.results if item.atoms.calc is not None else {}
        if results.get(kind) is not None:
            out.append(item.atoms)
    return out


def train_response_model(
    section: ResponseSection,
    store: Store,
    out: Path,
    *,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> ResponseResult | None:
    """Fit the response model of ``section`` to the labels in ``store`` and write it to
    ``out / response_file(kind)``. Every label but the test set's trains it
    (``validation_fraction`` held out for early stopping); the test set's measures it.
    None, with a log line, when fewer than :data:`MIN_LABELS` labels hold the property
    (labels of a run resumed after the section was added hold none)."""
    from mlpot.models.checkpoint import save_response_model
    from mlpot.models.registry import build_model
    from mlpot.models.response import DipoleModel, PolarizabilityModel, body_spec
    from mlpot.training import fit_response, fit_response_ensemble, response_metrics

    kind = section.kind
    labelled = store.labelled(exclude={TEST})
    pool = _with_label(labelled, kind)
    test = _with_label(store.labelled(reasons={TEST}), kind)
    if len(pool) < MIN_LABELS:
        log(
            f"no {kind} model: only {len(pool)} of {len(labelled)} labels hold a {kind} "
            f"(labels stored before the response section was set hold none)"
        )
        return None
    order = np.random.default_rng(seed).permutation(len(pool))
    n_val = max(1, int(round(section.validation_fraction * len(pool))))
    validation = [pool[k] for k in order[:n_val]]
    train = [pool[k] for k in order[n_val:]]
    elements = sorted({int(z) for atoms in pool + test for z in atoms.numbers})
    kinds = {cls.kind: cls for cls in (DipoleModel, PolarizabilityModel)}
    options = {} if section.radial_basis is None else {"radial_basis": section.radial_basis}

    def build(k: int):
        body = build_model(
            body_spec(
                {
                    "name": "mpnn",
                    "elements": elements,
                    "cutoff": section.cutoff,
                    "channels": section.channels,
                }
            )
        )
        return kinds[kind](body, **options).double()

    log(f"training the {kind} model on {len(train)} labels ({len(validation)} validation) ...")
    if section.members > 1:
        model, summary = fit_response_ensemble(
            build, section.members, train, validation, seed=seed, epochs=section.epochs
        )
    else:
        torch.manual_seed(seed)
        model = build(0)
        summary = fit_response(model, train, validation, epochs=section.epochs, seed=seed)
    test_rmse = response_metrics(model, test, "test")[kind]["rmse"] if test else None
    path = out / response_file(kind)
    result = ResponseResult(
        kind=kind,
        path=str(path),
        n_train=len(train),
        n_validation=len(validation),
        n_test=len(test),
        epochs=int(summary["epochs"]),
        train_rmse=float(summary["train_rmse"]),
        validation_rmse=float(summary["validation_rmse"]),
        test_rmse=test_rmse,
        members=section.members,
    )
    save_response_model(path, model, training={**result.to_dict(), "source": "mlpot learn"})
    log(result.describe())
    return result
