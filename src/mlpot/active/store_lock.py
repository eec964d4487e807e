"""One run per store: an advisory lock held for the whole of an ``mlpot learn`` run.

* SQLite file ``store.db``: ``flock`` on ``store.db.lock`` beside it, which names the holder
  (pid, host, start time). The kernel drops the lock when the holder exits in any way,
  ``kill -9`` included, so a killed run never blocks the one that resumes it.
* PostgreSQL URL: a session-level ``pg_try_advisory_lock`` on a connection kept open for
  the run (the server drops it when the connection closes); the connection's
  ``application_name`` names the holder.

A second process gets :class:`StoreInUseError` (an input error: exit code 2 on the
command line) naming the holder, before it has written anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from mlpot.errors import MlpotInputError


class StoreInUseError(MlpotInputError):
    """Another live process holds the store."""


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%c")}


def _describe(holder: dict | str) -> str:
    if isinstance(holder, dict) and "pid" in holder:
        return f"process {holder['pid']} on {holder.get('host', '?')} since {holder.get('since')}"
    return str(holder) or "an unknown process"


class StoreLock:
    """Hold the store at ``url`` (a path or a database URL) until :meth:`release`."""

    def __init__(self, url: str | Path) -> None:
        self.url = str(url)
        self._file = None
        self._connection = None
        if "://" in self.url:
            self._lock_database()
        else:
            self._lock_file(Path(self.url + ".lock"))

    def _lock_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held open for the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            handle.close()
            raise StoreInUseError(
                f"the store is in use by another mlpot learn run ({_describe(holder)}); "
                "wait for it to end, or stop it before resuming",
                source=self.url,
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_holder()))
        handle.flush()
        self._file = handle

    def _lock_database(self) -> None:
        import psycopg2

        key = int.from_bytes(hashlib.sha1(b"mlpot-store").digest()[:7], "big")
        me = _holder()
        name = f"mlpot learn pid {me['pid']} on {me['host']}"[:63]
        connection = psycopg2.connect(self.url, application_name=name)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if cursor.fetchone()[0]:
                self._connection = connection
                return
            cursor.execute(
                "SELECT a.application_name, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
            )
            row = cursor.fetchone()
        connection.close()
        holder = f"{row[0]} since {row[1]:%c}" if row else "another connection"
        raise StoreInUseError(
            f"the store is in use by another mlpot learn run ({holder}); wait for it to end, "
            "or stop it before resuming",
            source=self.url,
        )

    def release(self) -> None:
        """Let another run take the store (also happens when this process exits)."""
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
