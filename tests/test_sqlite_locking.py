"""SQLite: a process opening the database while another holds it locked waits for the lock, from its
very first statement (issue 14, item 16: "database is locked" on the first connection of
tests/outbox/test_processes.py::test_two_processes_share_one_token_fetch[sqlite], and of a CLI
started beside `vetbot serve`).

The first statements on a new connection (SQLAlchemy's dialect set-up, the journal-mode check) ran
under the sqlite3 module's default busy timeout of 5 s, not vetbot's 10 s: a process whose last
connection was checkpointing the WAL on close (it holds the file exclusively meanwhile), or a backup,
made the other process's first connection fail after 5 s where any later statement would have waited.
Here the holder keeps an exclusive lock a little longer than 5 s (and well under 10 s), in WAL mode and
in rollback mode; the opener must get through on its first connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from storage.db import BUSY_TIMEOUT_S, Database
from tests.conftest import database_url

HOLD_S = 6.5  # past sqlite3's default 5 s, inside BUSY_TIMEOUT_S


def _holder(path: str, journal: str) -> subprocess.Popen[str]:
    """Another process that takes the database exclusively, says "held", and lets go after HOLD_S."""
    script = f"""
import sqlite3, time
c = sqlite3.connect({path!r}, isolation_level=None)
if {journal!r} == "wal":
    c.execute("PRAGMA locking_mode=EXCLUSIVE")  # as the last connection holds it while checkpointing
    c.execute("BEGIN IMMEDIATE")
    c.execute("UPDATE users SET kefu_sent = kefu_sent")
    c.execute("COMMIT")  # the exclusive file lock stays
else:
    c.execute("BEGIN EXCLUSIVE")  # rollback journal: readers are shut out too
print("held", flush=True)
time.sleep({HOLD_S})
c.close()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_first_connection_waits_for_a_lock_held_by_another_process(tmp_path: Path, journal: str) -> None:
    assert BUSY_TIMEOUT_S > HOLD_S + 2
    url, _ = database_url("sqlite", tmp_path)  # a migrated file, in WAL mode as `vetbot db upgrade` leaves it
    path = make_url(url).database or ""
    if journal == "delete":  # a file from before WAL, a restored backup
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=DELETE")
        con.close()
    holder = _holder(path, journal)

    async def open_and_write() -> str:
        db = Database(url)  # a new process's first connection (nothing pooled yet)
        try:
            async with db.session() as s:
                await s.execute(text("INSERT INTO wechat_tokens (appid, access_token, expires_at) "
                                     "VALUES ('wx_first', 't', 0)"))
            async with db.session() as s:
                return str((await s.execute(text("PRAGMA journal_mode"))).scalar_one())
        finally:
            await db.close()

    try:
        mode = asyncio.run(open_and_write())
    finally:
        holder.wait(timeout=60)
    assert mode == "wal", "the opener also switched a rollback-mode file to WAL once it could"
