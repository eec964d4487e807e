"""What several commands share: options, exit codes, bad-input handling, KEY=VALUE parsing
and the compute resources (threads, device)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mlpot.errors import MlpotInputError

#: Exit status of a run whose checks failed or whose predictions are not finite.
EXIT_FAILED = 1
#: Exit status of bad input: a missing or malformed file, config, option or model.
EXIT_BAD_INPUT = 2

#: ``--trust-code``: on every command that may build an oracle named in a file, a config or
#: an option (train, eval, fisher, calibrate, probe, validate, learn).
TrustCode = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Allow module:factory oracles named in the model or config to import and run code.",
    ),
]

#: ``--threads``: torch's CPU threads, on every command that computes.
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads", metavar="N", min=1, help="CPU threads for torch (default: torch's choice)."
    ),
]

#: ``--device``: the torch device a command evaluates the model on (eval, fisher,
#: calibrate, probe, validate); checked by :func:`use_resources`.
Device = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="DEVICE",
        help="Torch device to evaluate the model on, e.g. cpu, cuda, cuda:1.",
    ),
]

#: ``--json``: machine-readable output.
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

#: ``--oracle``: a reference calculator by name.
Oracle = Annotated[
    str,
    typer.Option(
        "--oracle",
        metavar="NAME",
        help="Reference calculator: emt, lj, xtb, pyscf, module:factory.",
    ),
]

#: ``--oracle-param KEY=VALUE``, repeatable: the oracle's parameters.
OracleParams = Annotated[
    list[str] | None,
    typer.Option(
        "--oracle-param",
        metavar="KEY=VALUE",
        help="Oracle parameter with a YAML value, e.g. sigma=2.3 (repeatable).",
    ),
]


@contextmanager
def exit_on_bad_input() -> Iterator[None]:
    """Turn an :class:`~mlpot.errors.MlpotInputError` into its message on stderr and exit
    status 2, without a traceback."""
    try:
        yield
    except MlpotInputError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=EXIT_BAD_INPUT) from None


def read_structures(path, index: str | int = ":"):
    """``ase.io.read(path, index)``; a missing or unreadable file is an input error naming
    it (``index`` ``":"``: all frames, a list; an integer: that frame)."""
    import ase.io

    if not Path(path).is_file():
        raise MlpotInputError("file not found", source=str(path))
    try:
        return ase.io.read(path, index)
    except Exception as err:
        raise MlpotInputError(
            f"unreadable ({err.__class__.__name__}: {err})", source=str(path)
        ) from None


def parse_key_values(pairs: list[str] | None, *, option: str = "--oracle-param") -> dict[str, Any]:
    """``["sigma=2.3", "smooth=true"]`` -> ``{"sigma": 2.3, "smooth": True}``: values are
    read as YAML; a pair without ``=`` or a key, or a value that is not YAML, is an input
    error naming ``option``."""
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MlpotInputError(f"expected KEY=VALUE, got {pair!r}", field=option)
        try:
            params[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            message = f"value of {key.strip()!r} is not YAML: {getattr(err, 'problem', err)}"
            raise MlpotInputError(message, field=option) from None
    return params


def use_resources(threads: int | None, device: str | None = None) -> None:
    """Set torch's CPU ``threads`` (None: leave them) and check that ``device`` exists on
    this machine (an input error otherwise)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise MlpotInputError(f"not a torch device: {device!r}", field="--device") from None
    available = {
        "cuda": lambda: (
            torch.cuda.is_available()
            and (parsed.index is None or parsed.index < torch.cuda.device_count())
        ),
        "mps": lambda: torch.backends.mps.is_available(),
    }.get(parsed.type, lambda: True)
    if not available():
        raise MlpotInputError(f"device {device!r} is not available here", field="--device")
