"""The event store on a real PostgreSQL server (a throwaway one started for the test).

Skipped where PostgreSQL's server programs (``initdb``, ``pg_ctl``) or psycopg2 are missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from test_active_loop import _check_store, _raw

from mlpot.active import learn, parse_learn_config
from mlpot.active.store import Store
from mlpot.active.store_lock import StoreInUseError, StoreLock
from mlpot.errors import MlpotInputError

pytest.importorskip("psycopg2")
INITDB, PG_CTL = shutil.which("initdb"), shutil.which("pg_ctl")
pytestmark = pytest.mark.skipif(not (INITDB and PG_CTL), reason="PostgreSQL not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL server on a free local port, data in a temporary folder; yields a
    function that creates a fresh database and returns its URL."""
    root = Path(tempfile.mkdtemp(prefix="mlpot-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root without a user to run PostgreSQL as")
        shutil.chown(root, user)
        prefix = ["runuser", "-u", user, "--"]
    data, port = root / "data", _free_port()
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    subprocess.run([*prefix, INITDB, "-D", str(data), "-A", "trust", "-U", "mlpot"], **run)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    log = root / "log"
    subprocess.run([*prefix, PG_CTL, "-D", str(data), "-o", options, "-l", str(log), "-w",
                    "start"], **run)  # fmt: skip
    counter = iter(range(1000))

    def database() -> str:
        import psycopg2

        name = f"store{next(counter)}"
        con = psycopg2.connect(host="127.0.0.1", port=port, user="mlpot", dbname="postgres")
        con.autocommit = True
        con.cursor().execute(f"CREATE DATABASE {name}")
        con.close()
        return f"postgresql://mlpot@127.0.0.1:{port}/{name}"

    try:
        yield database
    finally:
        subprocess.run([*prefix, PG_CTL, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_store_events_round_trip(server):
    url = server()
    store = Store(url)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    store.add_request("a", atoms, iteration=1, reason="forces_std", scores={"forces_std": 0.3})
    store.add_request("b", atoms, iteration=1, reason="t2")
    results = {"energy": -1.5, "forces": np.zeros((4, 3))}
    assert store.add_label("a", atoms, results, attempts=2, oracle_s=0.1)
    assert not store.add_label("a", atoms, results, attempts=1, oracle_s=0.1)  # only once
    store.add_failure("b", "SCF did not converge", attempts=3)
    again = Store(url)  # a resumed run sees every event
    assert again.count("request") == 2 and again.pending() == []
    (labelled,) = again.labelled()
    assert labelled.uid == "a" and labelled.reason == "forces_std"
    assert labelled.atoms.get_potential_energy() == pytest.approx(-1.5)
    assert again.failures() == [{"uid": "b", "attempts": 3, "error": "SCF did not converge"}]


def test_learn_with_a_postgresql_store(server, tmp_path):
    url = server()
    config = parse_learn_config(_raw(tmp_path / "run", store=url))
    result = learn(config, log=lambda *_: None)
    assert result.store_path == url and not (tmp_path / "run" / "store.db").exists()
    store = _check_store(url, 16)
    assert store.count("model") >= 1
    # the store holds a run: starting another without --resume is refused
    with pytest.raises(MlpotInputError, match="already holds a learning run"):
        learn(parse_learn_config(_raw(tmp_path / "other", store=url)), log=lambda *_: None)


def test_unreachable_store_is_a_clear_error(tmp_path):
    port = _free_port()  # nothing listens there
    config = parse_learn_config(_raw(tmp_path / "run", store=f"postgresql://x@127.0.0.1:{port}/db"))
    with pytest.raises(MlpotInputError, match="cannot open the store"):
        learn(config, log=lambda *_: None)


def test_one_run_per_postgresql_store(server):
    """The advisory lock: a second holder is refused with the first one named; another
    database is independent; closing the holder's connection frees the store."""
    url, other = server(), server()
    held = StoreLock(url)
    with pytest.raises(StoreInUseError, match=f"mlpot learn pid {os.getpid()} on"):
        StoreLock(url)
    StoreLock(other).release()  # the lock is per database
    held.release()
    StoreLock(url).release()
