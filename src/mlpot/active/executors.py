"""Where labelling runs: local processes (default), threads, or a Dask cluster.

All are used through the ``concurrent.futures`` interface (``submit`` returning a future).
``dask`` starts a ``LocalCluster`` of worker processes; with ``scheduler="tcp://HOST:PORT"``
it joins an existing cluster instead (e.g. one started by dask-jobqueue on SLURM).
Time limits on the oracle are enforced inside local worker processes; on Dask workers,
which run tasks in threads, they are not.

Local worker processes die with the driver, however it ends (``kill -9`` included): each
asks the kernel for a parent-death signal when it starts (Linux ``prctl``), so no oracle
worker outlives the run; multiprocessing's resource tracker then sees its last client go
and exits too.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mlpot.errors import MlpotInputError

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


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Worker initializer: SIGKILL this process when its parent ``parent`` (the driver's
    pid) dies; exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the driver died before the signal was asked for
        os._exit(1)


def make_executor(
    kind: str = "process", *, workers: int = 1, scheduler: str | None = None
) -> LabelExecutor:
    """Build the labelling executor named ``kind`` with ``workers`` workers."""
    if kind == "process":
        context = multiprocessing.get_context("spawn")  # no forked torch state
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=die_with_parent,
            initargs=(os.getpid(),),
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
