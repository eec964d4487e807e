"""The ``mlpot learn`` config: every section is a constructor's keyword arguments.

Validated in full before any oracle is called. Unknown keys are errors.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlpot.active.exploration import ExploreOptions
from mlpot.active.selection import STRATEGIES
from mlpot.calculators.oracles import RESPONSE_PROPERTIES
from mlpot.config_io import read_yaml, validate_config
from mlpot.errors import MlpotInputError
from mlpot.models.registry import build_model, with_elements
from mlpot.trust import check_oracle_name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OracleConfig(_Section):
    """``name``: emt, lj, xtb, pyscf or module:factory; ``params``: its keyword arguments.

    Only the name's form is checked here: nothing is imported. A ``module:factory`` oracle
    runs code, so the run itself needs ``trust_code=True`` (``--trust-code``)."""

    name: str = "xtb"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _well_formed(self):
        try:
            check_oracle_name(self.name, trust_code=True)  # the form only; trust is the run's
        except MlpotInputError as err:
            raise ValueError(str(err).removeprefix("field 'oracle': ")) from None
        return self


class InitialConfig(_Section):
    """First labels: ``normal_modes`` (molecules) or ``rattle``.

    ``hessian``: where the normal modes come from: ``oracle`` (finite differences, ``6N + 1``
    oracle calls) or ``valence`` (Lindh's model Hessian from the geometry alone, no oracle
    call; :mod:`mlpot.active.valence_hessian`: stiffer than the oracle's, so its samples
    spread less — on the default ethanol run the first committee's test force RMSE was 190
    meV/Å from oracle modes and 240 from valence ones; worth it where oracle calls are
    dear, e.g. DFT on a large molecule)."""

    method: Literal["normal_modes", "rattle"] = "normal_modes"
    hessian: Literal["valence", "oracle"] = "oracle"
    count: int = Field(32, ge=2)
    temperature: float = Field(300.0, gt=0)
    stdev: float = Field(0.05, ge=0)
    strain: float = Field(0.0, ge=0)


class TestSetConfig(_Section):
    """Held-out oracle MD: ``frames`` frames every ``stride`` steps at ``temperature`` K.

    The defaults span 1 ps: long enough for a small molecule's torsions to turn at 600 K
    (ethanol's OH rotor crosses between trans and gauche), so the test set is not just the
    neighbourhood of the starting conformer."""

    temperature: float = Field(600.0, gt=0)
    frames: int = Field(40, ge=1)
    stride: int = Field(25, ge=1)
    equilibration: int = Field(100, ge=0)
    timestep_fs: float = Field(1.0, gt=0)


class SelectConfig(_Section):
    """Which configurations are labelled, and when a trajectory is stopped.

    ``force_std``: calibrated per-atom force std (eV/Å) above which a configuration is a
    candidate; ``stop_force_std``: above this a trajectory is stopped. ``t2_quantile``: also
    a candidate when an atom's Mahalanobis T² (domain of applicability) exceeds the
    chi-square quantile ``χ²_F(t2_quantile)`` of the model's ``F`` features;
    ``stop_t2_quantile``: stop a trajectory above ``χ²_F(stop_t2_quantile)`` (None: off).
    ``use_domain``: also select configurations outside the checkpoint's own domain (T² or
    nearest-neighbour distance over its thresholds). ``strategy``: how a batch is chosen
    (``d_optimal``, ``max_variance``; ``random``: uniformly among every checked
    configuration of the exploration, the selection thresholds not applied, the stops as
    always: the baseline that shows what selection gains).
    The store records which score selected each configuration (``forces_std``, ``t2``).

    Stops are checked at every MD step, selection every ``explore.check_interval`` steps.
    Besides the scores, a trajectory stops when an atom's force exceeds ``max_force``
    (eV/Å; a blow-up, not thermal motion), when two atoms come closer than
    ``min_distance_fraction`` of the sum of their covalent radii (0.5: 1.32 Å for Cu–Cu,
    0.54 Å for C–H), on non-finite energy, forces or scores, and when the model raises
    (recorded as the trajectory's ``stop_reason``; the run goes on). None turns a limit
    off. The configuration that stopped a trajectory is not labelled (the step before it
    is, when over ``force_std``), unless ``label_beyond_stop``: then one stopped by
    ``forces_std``, ``t2`` or ``min_distance`` (finite, below ``max_force``) is a candidate
    too, with reason ``beyond_stop+<stop>``.
    """

    force_std: float = Field(0.1, gt=0)
    stop_force_std: float = Field(0.6, gt=0)
    t2_quantile: float | None = Field(None, gt=0, lt=1)
    stop_t2_quantile: float | None = Field(None, gt=0, lt=1)
    use_domain: bool = False
    strategy: str = "d_optimal"
    batch_size: int = Field(48, ge=1)
    max_force: float | None = Field(50.0, gt=0)
    min_distance_fraction: float | None = Field(0.5, gt=0, lt=1)
    label_beyond_stop: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.stop_force_std <= self.force_std:
            raise ValueError("stop_force_std must exceed force_std")
        if (
            self.t2_quantile is not None
            and self.stop_t2_quantile is not None
            and self.stop_t2_quantile <= self.t2_quantile
        ):
            raise ValueError("stop_t2_quantile must exceed t2_quantile")
        return self

    @property
    def needs_domain(self) -> bool:
        return self.use_domain or self.t2_quantile is not None or self.stop_t2_quantile is not None


class LabelConfig(_Section):
    """Labelling: ``executor`` process|thread|dask, ``workers``, ``scheduler`` (a Dask
    address to join), ``threads`` (OpenMP threads of each local worker process, None: one
    per core), ``retries`` per configuration, ``timeout_s`` per oracle call."""

    executor: Literal["process", "thread", "dask"] = "process"
    workers: int = Field(1, ge=1)
    threads: int | None = Field(1, ge=1)
    scheduler: str | None = None
    retries: int = Field(2, ge=0)
    timeout_s: float | None = Field(600.0, gt=0)


class TrainSection(_Section):
    """The committee trained each iteration: ``model`` spec, ``training`` options and
    ``loss`` weights (as in ``mlpot train``), ``ensemble_size`` members (``workers`` of
    them at once, each in a process of its own; None: as many as there are cores),
    ``validation_fraction``. ``warm_start``: each retraining continues from the members of
    the committee before (its weights, reference energies and normalisation) instead of
    starting from scratch, so the training time of every iteration adds up; the reference
    energies are re-fitted to the new labels (kept, the dimers that steering adds raised the
    default run's test energy RMSE from 1.7 to 142 meV/atom). Off by default: no gain
    measured on the default run (55 against 52 meV/Å from scratch).

    The default: the flagship ``mpnn`` (32 channels, 2 layers, float32) plus ZBL repulsion
    switched off between 0.5 and 0.75 of each pair's covalent bond length (walls where no
    label is, bonds left alone), two members trained at once for at most 40 s each."""

    model: dict[str, Any] = Field(
        default_factory=lambda: {
            "name": "sum",
            "terms": [
                {"name": "mpnn", "cutoff": 5.0, "channels": 32, "layers": 2},
                {"name": "zbl", "cutoff": 0.75, "onset": 0.5, "covalent": True},
            ],
        }
    )
    training: dict[str, Any] = Field(
        default_factory=lambda: {
            "epochs": 150,
            "max_time_s": 40.0,
            "batch_size": 8,
            "learning_rate": 0.005,
            "early_stopping_patience": 25,
            "dtype": "float32",
        }
    )
    loss: dict[str, Any] = Field(default_factory=dict)
    ensemble_size: int = Field(2, ge=2)
    workers: int | None = Field(None, ge=1)
    warm_start: bool = False
    validation_fraction: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _valid_for_training(self):
        """``model``, ``training`` and ``loss`` as ``mlpot train`` checks them, before any
        oracle call (not at the first retraining)."""
        from mlpot.training import parse_config

        raw = {"model": self.model, "training": self.training, "loss": self.loss}
        try:
            parse_config({"data": {"train": "-"}, **raw}, source="train")
        except MlpotInputError as err:
            raise ValueError(str(err)) from None
        return self


class StopConfig(_Section):
    """When the loop stops.

    Budgets, which end the run wherever it stands: ``oracle_budget`` labels (not counting
    the test set) and ``max_time_s``, the wall-clock seconds of the whole run (summed over
    the sessions of a resumed run; None: no limit). The loop stops for a budget only between
    its steps, so a run ends a training, an exploration trajectory or a validation later,
    and the final validation and report come after it.

    Convergence, where the loop *would* stop: test-set force RMSE at or below
    ``target_force_rmse`` eV/Å, ``patience_steps`` MD steps in a row without a flagged
    configuration, or ``max_iterations`` retrainings. With ``validate`` (and the top-level
    ``validation`` on) the quick validation of the current committee against the oracle is
    the stopping rule there: the run stops when every applicable check passes (reason
    ``validated``), and otherwise goes on, steered by the failing checks, validating again
    after each retraining (:mod:`mlpot.active.steering`). ``target_force_rmse`` is then
    part of the rule: a committee above it is not validated and the run goes on (exploring
    at the test temperature), so a run that stops ``validated`` has met it too.

    The embedded default (``mlpot learn`` without a config, :data:`EMBEDDED_DEFAULT`) asks
    for ``target_force_rmse: 0.06``; a config's own default is no target (what a force
    error is worth depends on the system; the validation's relative error applies to all).
    """

    oracle_budget: int = Field(256, ge=1)
    max_time_s: float | None = Field(330.0, gt=0)
    target_force_rmse: float | None = Field(None, gt=0)
    patience_steps: int = Field(2000, ge=1)
    max_iterations: int = Field(4, ge=1)
    #: ``validate`` in a config (the attribute is named so as not to shadow pydantic's)
    until_validated: bool = Field(True, alias="validate")


class ResponseSection(_Section):
    """Response labels and a response model learned alongside the potential.

    With this section every oracle label also records the oracle's ``dipole`` (e·Å) and,
    for ``kind: polarizability``, its ``polarizability`` (e·Å²/V), checked (finite, right
    shape) and stored with the label; at the end of the run a response model of ``kind``
    (:mod:`mlpot.models.response`, as ``mlpot response`` fits it: an ``mpnn`` body of
    ``channels`` channels and ``cutoff`` Å, ``radial_basis`` edge functions, ``members``
    models of an ensemble, at most ``epochs`` epochs) is trained on every stored label but
    the held-out test set's (``validation_fraction`` of them for early stopping), its error
    measured on the test set, and written next to the potential (``dipole.pt`` or
    ``polarizability.pt``). A dipole model adds the ``infrared`` check to the final
    validation. Molecules and clusters only; the oracle must give the property (xtb:
    dipoles; pyscf: dipoles and polarisabilities, the latter by six more SCF runs a label).
    """

    kind: Literal["dipole", "polarizability"] = "dipole"
    members: int = Field(1, ge=1)
    epochs: int = Field(500, ge=1)
    cutoff: float = Field(4.0, gt=0)
    channels: int = Field(16, ge=1)
    radial_basis: int | None = Field(None, ge=0)
    validation_fraction: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _buildable(self):
        if self.kind == "polarizability" and self.radial_basis == 0:
            raise ValueError(
                "radial_basis: a polarizability model's anisotropic part needs at least 1 "
                "(None: its default, 8)"
            )
        return self

    @property
    def properties(self) -> tuple[str, ...]:
        """The response properties each label records."""
        return ("dipole",) if self.kind == "dipole" else ("dipole", "polarizability")


class LearnConfig(_Section):
    """The whole ``mlpot learn`` config."""

    system: str = "ethanol"
    oracle: OracleConfig = OracleConfig()
    relax: bool = True
    initial: InitialConfig = InitialConfig()
    test: TestSetConfig = TestSetConfig()
    explore: ExploreOptions = ExploreOptions()
    select: SelectConfig = SelectConfig()
    label: LabelConfig = LabelConfig()
    train: TrainSection = TrainSection()
    stop: StopConfig = StopConfig()
    #: validate against the oracle: the final model (report), and as the stopping rule
    #: (``stop.validate``); false turns both off
    validation: bool = True
    seed: int = 0
    output: str = "mlpot-learn"
    #: ASE database URL of the event store, e.g. ``postgresql://user:pw@host:5432/mlpot``
    #: (one empty database per run); None: ``OUTPUT/store.db`` (SQLite)
    store: str | None = None
    #: response labels and model (:class:`ResponseSection`); None: energy and forces only
    response: ResponseSection | None = None


def _check_response(config: LearnConfig) -> None:
    """A response kind the built-in oracle cannot give, by the keys (ValueError)."""
    if config.response is None or config.oracle.name not in RESPONSE_PROPERTIES:
        return  # a module:factory oracle is checked once built, before any call
    gives = RESPONSE_PROPERTIES[config.oracle.name]
    lacking = [p for p in config.response.properties if p not in gives]
    if lacking:
        able = [name for name, props in RESPONSE_PROPERTIES.items() if lacking[0] in props]
        raise ValueError(
            f"response.kind: {config.response.kind} needs the oracle's {lacking[0]}, and "
            f"oracle.name {config.oracle.name!r} gives none; choose an oracle that does "
            f"({', '.join(able)}) or drop the response section"
        )


def _check_runnable(config: LearnConfig) -> None:
    """Combinations of sections that cannot run, named by their keys (ValueError)."""
    sc, stop = config.select, config.stop
    uses = [
        f"select.{key}"
        for key, on in (
            ("strategy: d_optimal", sc.strategy == "d_optimal"),
            ("t2_quantile", sc.t2_quantile is not None),
            ("stop_t2_quantile", sc.stop_t2_quantile is not None),
            ("use_domain", sc.use_domain),
        )
        if on
    ]
    if uses:
        model = build_model(with_elements(config.train.model, [1]))
        if not model.n_features:
            raise ValueError(
                f"{', '.join(uses)}: these need per-atom features, and train.model "
                f"{config.train.model.get('name')!r} has none (bpnn and mpnn have them); "
                "choose select.strategy: max_variance or random and drop the T² keys"
            )
    if stop.oracle_budget <= config.initial.count:
        raise ValueError(
            f"stop.oracle_budget ({stop.oracle_budget}) must exceed initial.count "
            f"({config.initial.count}): the initial labels alone would spend it"
        )
    _check_response(config)
    if config.label.scheduler is not None and config.label.executor != "dask":
        raise ValueError(
            f"label.scheduler is a Dask address: it needs label.executor: dask, "
            f"not {config.label.executor!r}"
        )


#: What ``mlpot learn`` without a config runs, over the field defaults (ethanol, GFN2-xTB):
#: a potential that passes its validation and has a test force RMSE at 600 K of at most
#: 60 meV/Å, within the default budgets.
EMBEDDED_DEFAULT: dict[str, Any] = {"stop": {"target_force_rmse": 0.06}}


def parse_learn_config(
    raw: dict[str, Any] | None, *, source: str = "config", base: Path | None = None
) -> LearnConfig:
    """Validate a learn config dict (``None``: the embedded default,
    :data:`EMBEDDED_DEFAULT`)."""
    config = validate_config(
        LearnConfig, copy.deepcopy(EMBEDDED_DEFAULT) if raw is None else raw, source=source
    )
    try:
        _check_runnable(config)
    except ValueError as err:
        raise MlpotInputError(str(err), source=source) from None
    if base is not None:
        if not Path(config.output).is_absolute():
            config.output = str((base / config.output).resolve())
        parts = []
        for part in (p.strip() for p in config.system.split(",")):
            candidate = base / part
            parts.append(str(candidate.resolve()) if part and candidate.exists() else part)
        config.system = ",".join(parts)
        if config.store is not None and "://" not in config.store:
            if not Path(config.store).is_absolute():
                config.store = str((base / config.store).resolve())
    return config


def load_learn_config(path: str | Path | None) -> LearnConfig:
    """Read a YAML learn config, or the embedded default when ``path`` is None."""
    if path is None:
        return parse_learn_config(None, base=Path.cwd())
    path = Path(path)
    return parse_learn_config(read_yaml(path), source=str(path), base=path.parent)
