"""Where labelling runs: local processes (default), threads, or a Dask cluster.

All are used through the ``concurrent.futures`` interface (``submit`` returning a future).
``dask`` starts a ``LocalCluster`` of worker processes; with ``scheduler="tcp://HOST:PORT"``
it joins an existing cluster instead (e.g. one started by dask-jobqueue on SLURM).
Time limits on the oracle are enforced inside local worker processes; on Dask workers,
which run tasks in threads, they are not.

Local worker processes die with the driver, however it ends (``kill -9`` included), and
keep to ``threads`` OpenMP threads (:mod:`mlpot.processes`), so no oracle worker outlives
the run; multiprocessing's resource tracker then sees its last client go and exits too.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mlpot.errors import MlpotInputError
from mlpot.processes import die_with_parent

EXECUTORS = ("process", "thread", "dask")


@dataclass
class LabelExecutor:
    """An executor plus whatever must be closed with it (a Dask client and cluster)."""

    executor: Executor
    kind: str
    _closers: tuple[Any, ...] = ()

    def submit(self, fn, /, *args, **kwargs):
        return self.executor.submit(fn, *args, **kwargs)

    def shutdown(self) -> None:
        if self.kind != "dask":  # a Dask client's executor closes with the client
            self.executor.shutdown(wait=False, cancel_futures=True)
        for closer in self._closers:
            closer.close()


def make_executor(
    kind: str = "process",
    *,
    workers: int = 1,
    scheduler: str | None = None,
    threads: int | None = None,
) -> LabelExecutor:
    """Build the labelling executor named ``kind`` with ``workers`` workers; ``threads``:
    OpenMP threads of each local worker process (None: the runtime's default)."""
    if kind == "process":
        context = multiprocessing.get_context("spawn")  # no forked torch state
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=die_with_parent,
            initargs=(os.getpid(), threads),
        )
        return LabelExecutor(pool, kind)
    if kind == "thread":
        return LabelExecutor(ThreadPoolExecutor(max_workers=workers), kind)
    if kind == "dask":
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise MlpotInputError(
                "executor 'dask' needs dask.distributed: pip install 'mlpot[dask]'",
                field="label.executor",
            ) from None
        if scheduler:
            client = Client(scheduler)
            return LabelExecutor(client.get_executor(), kind, (client,))
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
        return LabelExecutor(client.get_executor(), kind, (client, cluster))
    raise MlpotInputError(
        f"unknown executor {kind!r}; choose from {list(EXECUTORS)}", field="label.executor"
    )
