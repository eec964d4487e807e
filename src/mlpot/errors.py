"""The one error type for bad input, with the place it came from."""

from __future__ import annotations


class MlpotInputError(ValueError):
    """Bad input from a user: a file, a frame, a field, or a config key.

    The message always names where the problem is, e.g.
    ``data.xyz, frame 3, field 'forces': contains NaN``; ``reason`` is the message without
    the place (to re-raise it for another place).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        frame: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = message
        self.source = source
        self.frame = frame
        self.field = field
        where = []
        if source is not None:
            where.append(str(source))
        if frame is not None:
            where.append(f"frame {frame}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
