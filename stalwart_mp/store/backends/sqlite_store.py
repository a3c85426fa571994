"""SQLite data store (stdlib ``sqlite3``): one file, usable by every process of the server.

Schema: ``kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID`` — BLOBs compare with memcmp (then
length), so the primary-key order is the memcmp order the data model relies on.

Durability and isolation:
- ``journal_mode=WAL``: readers work on the last committed snapshot and never see a batch
  half-written; they are not blocked by the writer.
- ``synchronous=FULL``: in WAL mode every commit fsyncs the WAL before returning, so
  ``write`` returns only after the batch survives a power loss (NORMAL would only protect
  against application crashes).
- Writes use ``BEGIN IMMEDIATE``: the write lock is taken before the batch reads its
  assertion/counter keys, so those reads cannot go stale before commit, in this process or
  any other. ``busy_timeout`` makes a contending writer wait instead of failing.

Threads: a connection per process (open the store after fork: an SQLite connection must
not cross a fork), used only by a one-thread executor, so the event loop never waits on
the disk or on another process's lock.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from stalwart_mp.store import forked
from stalwart_mp.store.backends.batch import (
    id_batch,
    keys_to_read,
    resolve,
    validate,
)
from stalwart_mp.store.backends.sqlcommon import ThreadedReads
from stalwart_mp.store.data import DataStore, StoreError, WriteBatch, decode_counter

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
_CHUNK = 500  # bound on SQL parameters per statement (SQLITE_MAX_VARIABLE_NUMBER >= 999)


class SqliteStore(ThreadedReads, DataStore):
    def __init__(self, name: str, path: str | os.PathLike[str]) -> None:
        self.name = name
        self.path = Path(path)
        self._pid = os.getpid()
        self._fork_generation = forked.generation()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{name}")
        self._closed = False
        try:
            self._conn = self._executor.submit(self._connect).result()
        except (OSError, sqlite3.Error) as exc:
            self._executor.shutdown()
            raise StoreError(f'store "{name}": cannot open SQLite at {self.path}: {exc}') from exc

    def _connect(self) -> sqlite3.Connection:
        if self.path.parent:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
        )
        return conn

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')
        if forked.generation() != self._fork_generation:
            raise StoreError(
                f'store "{self.name}": SQLite connection opened in process {self._pid} used in '
                f"process {os.getpid()}; open the store after fork, in the process using it"
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f'store "{self.name}": SQLite error at {self.path}: {exc}') from exc

    # --- reads ----------------------------------------------------------------------------

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        found: dict[bytes, bytes] = {}
        unique = list(dict.fromkeys(keys))
        # One read transaction so every chunk sees the same snapshot.
        self._conn.execute("BEGIN")
        try:
            for i in range(0, len(unique), _CHUNK):
                chunk = unique[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(self._conn.execute(f"SELECT k, v FROM kv WHERE k IN ({marks})", chunk))
        finally:
            self._conn.execute("COMMIT")
        return [found.get(k) for k in keys]

    def _range(
        self, start: bytes, end: bytes, reverse: bool, limit: int | None, keys_only: bool
    ) -> list[tuple[bytes, bytes | None]]:
        cols = "k" if keys_only else "k, v"
        order = "DESC" if reverse else "ASC"
        rows = self._conn.execute(
            f"SELECT {cols} FROM kv WHERE k >= ? AND k < ? ORDER BY k {order} LIMIT ?",
            (start, end, -1 if limit is None else limit),
        )
        if keys_only:
            return [(row[0], None) for row in rows]
        return [(k, v) for k, v in rows]

    # --- writes ---------------------------------------------------------------------------

    def _commit(self, batch: WriteBatch) -> dict[bytes, bytes | None]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")  # write lock first: the reads below stay valid
        try:
            current: dict[bytes, bytes | None] = {}
            for key in keys_to_read(batch):
                row = conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
                current[key] = None if row is None else row[0]
            final = resolve(batch, current)
            puts = [(k, v) for k, v in final.items() if v is not None]
            dels = [(k,) for k, v in final.items() if v is None]
            if puts:
                conn.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", puts)
            if dels:
                conn.executemany("DELETE FROM kv WHERE k = ?", dels)
            conn.execute("COMMIT")  # synchronous=FULL: returns after the WAL is fsync'ed
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return final

    async def write(self, batch: WriteBatch) -> None:
        validate(batch)
        await self._in_thread(self._commit, batch)

    async def assign_id(self, key: bytes) -> int:
        # BEGIN IMMEDIATE serializes writers of every process on the database file, so the
        # read-increment-write of the counter is atomic.
        return decode_counter((await self._in_thread(self._commit, id_batch(key)))[key])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self._pid:
            self._executor.submit(self._conn.close).result()
        self._executor.shutdown(wait=True)
