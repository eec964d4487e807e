"""Reading YAML config files and validating them into typed configs, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mlpot.errors import MlpotInputError

Config = TypeVar("Config", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any] | None:
    """The mapping in a YAML file; a missing file or bad YAML names the file."""
    path = Path(path)
    if not path.is_file():
        raise MlpotInputError("config file not found", source=str(path))
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise MlpotInputError(f"not valid YAML: {err}", source=str(path)) from None


def format_validation_error(err: ValidationError, *, prefix: str = "") -> str:
    """Every problem pydantic found, by its key path (under ``prefix``), in one line:
    ``"training.epochs: Input should be greater than or equal to 1; ..."``."""
    head = (prefix,) if prefix else ()
    return "; ".join(
        f"{'.'.join(str(part) for part in (*head, *e['loc']))}: {e['msg']}" for e in err.errors()
    )


def validate_config(cls: type[Config], raw: Any, *, source: str) -> Config:
    """``cls(**raw)``, with every problem listed by its key path in one clear error."""
    if not isinstance(raw, dict):
        raise MlpotInputError("config must be a mapping of sections", source=source)
    try:
        return cls(**raw)
    except ValidationError as err:
        raise MlpotInputError(
            f"invalid config: {format_validation_error(err)}", source=source
        ) from None
    except (MlpotInputError, TypeError, ValueError) as err:
        raise MlpotInputError(f"invalid config: {err}", source=source) from None
