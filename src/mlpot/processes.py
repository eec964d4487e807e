"""Worker processes of a run: they die with the process that started them, and keep to
the threads they are given. Importable from every package (standard library only).

A local worker process asks the kernel for a parent-death signal when it starts (Linux
``prctl``), so none outlives its driver, however the driver ends (``kill -9`` included).
Its OpenMP threads are limited because an OpenMP library (tblite, torch's CPU kernels)
otherwise starts a thread per core, and on a machine others keep busy those threads spin
against each other (GFN2-xTB on ethanol: 0.9 ms a call on one thread, up to 200 ms with two
threads on a loaded 2-core machine).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, threads: int | None = None) -> None:
    """Worker initializer: SIGKILL this process when its parent ``parent`` (the driver's
    pid) dies; exit now if it is already gone. ``threads``: OpenMP threads of the worker
    (:func:`limit_openmp_threads`; None leaves them)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the driver died before the signal was asked for
        os._exit(1)
    if threads is not None:
        limit_openmp_threads(threads)


def limit_openmp_threads(threads: int) -> None:
    """At most ``threads`` OpenMP threads for the calling thread's parallel regions: the
    environment for libraries not loaded yet, ``omp_set_num_threads`` for a GNU OpenMP
    runtime already loaded (torch's, and tblite's when they share it)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(threads)
    except OSError:  # no GNU OpenMP runtime here: the environment variable does it
        pass
