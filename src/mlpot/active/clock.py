"""The run's clock and its time budget (``stop.max_time_s``)."""

from __future__ import annotations

import time

from mlpot.active.store import Store


class RunClock:
    """The run's clock: seconds of work over all its sessions (the store's ``elapsed_s``
    goes on from its largest value), against the time budget ``max_time_s`` (None: none).

    ``reserve`` (s) is kept for a training after exploration (the last one's duration):
    exploration ends by :attr:`deadline`, and the budget counts as spent once less than
    ``reserve`` is left, so a run does not explore for labels it has no time to train on."""

    def __init__(self, store: Store, max_time_s: float | None) -> None:
        self.origin = time.time() - store.elapsed_s()
        self.max_time_s = max_time_s
        self.reserve = 0.0

    def elapsed(self) -> float:
        return time.time() - self.origin

    def left(self) -> float | None:
        """Seconds left of the budget (None: no budget)."""
        return None if self.max_time_s is None else self.max_time_s - self.elapsed()

    @property
    def deadline(self) -> float | None:
        """``time.time()`` by which exploration ends, a training's time before the end."""
        if self.max_time_s is None:
            return None
        return self.origin + self.max_time_s - self.reserve

    def spent(self) -> bool:
        """Less than :attr:`reserve` left of the budget."""
        return self.max_time_s is not None and self.elapsed() + self.reserve >= self.max_time_s

    def stamp(self) -> str:
        """``[  42 s]``: the elapsed time, for progress lines."""
        return f"[{self.elapsed():5.0f} s]"
