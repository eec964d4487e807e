"""The ``mlpot train`` config: validated in full before any data is read.

Every key is a constructor argument: ``model`` of the model class named by ``model.name``
(see :mod:`mlpot.models.registry`), ``loss`` of :class:`~mlpot.training.loss.LossWeights`,
``training`` of :class:`~mlpot.training.options.TrainingOptions`, ``ensemble`` of
:class:`~mlpot.training.options.EnsembleOptions`, ``baseline`` (delta-learning) of
:class:`~mlpot.training.delta.BaselineConfig`, ``finetune`` of
:class:`~mlpot.training.finetune.FinetuneConfig`, ``fisher`` of
:class:`~mlpot.training.finetune.FisherOptions`. Relative paths are relative to the config
file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlpot.config_io import read_yaml, validate_config
from mlpot.models.registry import check_model_spec, with_elements
from mlpot.training.delta import BaselineConfig
from mlpot.training.finetune import FinetuneConfig, FisherOptions
from mlpot.training.loss import LossWeights
from mlpot.training.options import EnsembleOptions, TrainingOptions


class KeysConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    energy: str | None = None
    forces: str | None = None
    stress: str | None = None


class DataConfig(BaseModel):
    """Where the labelled structures are and how to split them. Files only: structures in
    memory are given to :func:`~mlpot.training.run.run_training` and join these."""

    model_config = ConfigDict(extra="forbid")
    train: list[str] = []
    validation: list[str] = []
    test: list[str] = []
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    split_seed: int = 0
    keys: KeysConfig = KeysConfig()

    @model_validator(mode="after")
    def _fractions_fit(self):
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                "validation_fraction + test_fraction must be below 1, got "
                f"{self.validation_fraction} + {self.test_fraction}"
            )
        return self

    @field_validator("train", "validation", "test", mode="before")
    @classmethod
    def _listify(cls, value):
        return [value] if isinstance(value, str) else value


#: ``model.name`` of the response-property models (:mod:`mlpot.models.response`).
RESPONSE_KINDS = ("dipole", "polarizability")


def check_response_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A response model's section: ``{name, body: {an energy model with features},
    hidden, radial_basis}``; the body is checked like any model section."""
    unknown = sorted(set(spec) - {"name", "body", "hidden", "radial_basis"})
    if unknown:
        raise ValueError(f"unknown keys for a {spec['name']} model: {', '.join(unknown)}")
    body = spec.get("body", {"name": "mpnn"})
    if not isinstance(body, dict):
        raise ValueError("model.body must be a model section, e.g. {name: mpnn}")
    check_model_spec(with_elements(body, [1]), where="model.body")
    for key in ("hidden", "radial_basis"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"model.{key} must be a non-negative integer, got {value!r}")
    if spec["name"] == "polarizability" and spec.get("radial_basis") == 0:
        raise ValueError("model.radial_basis of a polarizability model must be at least 1")
    return {**spec, "body": body}


class TrainConfig(BaseModel):
    """The whole config file."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    data: DataConfig = DataConfig()
    model: dict[str, Any] = {"name": "bpnn"}
    loss: LossWeights = LossWeights()
    training: TrainingOptions = TrainingOptions()
    ensemble: EnsembleOptions = EnsembleOptions()
    baseline: BaselineConfig | None = None
    finetune: FinetuneConfig | None = None
    fisher: FisherOptions = FisherOptions()
    output: str = "mlpot-run"

    @field_validator("model")
    @classmethod
    def _check_model(cls, spec: dict[str, Any]) -> dict[str, Any]:
        if spec.get("name") in RESPONSE_KINDS:
            return check_response_spec(spec)
        # elements come from the data when the model takes them and they are not given
        check_model_spec(with_elements(spec, [1]))
        return spec

    @model_validator(mode="after")
    def _response_models_train_alone(self):
        if self.model.get("name") in RESPONSE_KINDS:
            extra = [
                key
                for key, unused in (
                    ("ensemble", self.ensemble.size == 1),
                    ("baseline", self.baseline is None),
                    ("finetune", self.finetune is None),
                )
                if not unused
            ]
            if extra:
                raise ValueError(
                    f"a {self.model['name']} model trains on its own labels: remove "
                    + ", ".join(extra)
                )
        return self

    @model_validator(mode="after")
    def _finetune_takes_its_model(self):
        if self.finetune is not None:
            if "model" in self.model_fields_set:
                raise ValueError(
                    "with finetune the model comes from finetune.checkpoint; "
                    "remove the model section"
                )
            if self.ensemble.size > 1:
                raise ValueError("finetune trains one model; remove ensemble.size")
        return self


def parse_config(
    raw: dict[str, Any], *, source: str = "config", base: Path | None = None
) -> TrainConfig:
    """Validate a config dict; paths become absolute relative to ``base``."""
    config = validate_config(TrainConfig, raw, source=source)
    if base is not None:
        data = config.data
        for name in ("train", "validation", "test"):
            setattr(
                data,
                name,
                [p if "://" in p else str((base / p).resolve()) for p in getattr(data, name)],
            )
        if not Path(config.output).is_absolute():
            config.output = str((base / config.output).resolve())
        if config.baseline is not None and config.baseline.cache is not None:
            config.baseline.cache = str((base / config.baseline.cache).resolve())
        if config.finetune is not None:
            tune = config.finetune
            tune.checkpoint = str((base / tune.checkpoint).resolve())
            tune.replay_data = [
                p if "://" in p else str((base / p).resolve()) for p in tune.replay_data
            ]
    return config


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    return parse_config(read_yaml(path), source=str(path), base=path.parent)
