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
    if not path.exists():
        raise MlpotInputError("config file not found", source=str(path))
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise MlpotInputError(f"not valid YAML: {err}", source=str(path)) from None


def validate_config(cls: type[Config], raw: Any, *, source: str) -> Config:
    """``cls(**raw)``, with every problem listed by its key path in one clear error."""
    if not isinstance(raw, dict):
        raise MlpotInputError("config must be a mapping of sections", source=source)
    try:
        return cls(**raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise MlpotInputError(f"invalid config: {problems}", source=source) from None
    except (MlpotInputError, TypeError, ValueError) as err:
        raise MlpotInputError(f"invalid config: {err}", source=source) from None
