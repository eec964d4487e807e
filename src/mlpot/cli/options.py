"""Options shared by several commands."""

from __future__ import annotations

from typing import Annotated

import typer

TRUST_HELP = "Allow module:factory oracles named in the model or config to import and run code."

#: ``--trust-code``: on every command that may build an oracle named in a file, a config or
#: an option (train, eval, fisher, calibrate, probe, validate, learn).
TrustCode = Annotated[bool, typer.Option("--trust-code", help=TRUST_HELP)]
