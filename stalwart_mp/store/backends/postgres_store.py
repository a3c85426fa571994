"""PostgreSQL data store (psycopg2): table ``(k BYTEA PRIMARY KEY, v BYTEA)``.

Order: BYTEA compares bytewise (``byteacmp``: memcmp, then the shorter value first) and takes
no collation, so ``ORDER BY k`` is the memcmp order of the data model (the conformance suite
checks ``b"\\x01" < b"\\x01\\x00" < b"\\x02"`` and 0x00/0xff boundaries).

Atomicity and isolation: a batch is one transaction (READ COMMITTED). Readers use single
statements, which only ever see committed transactions, never half a batch.

Write-write races: before reading anything, a batch takes a transaction-scoped advisory lock
on every key it touches (ids = 64-bit hash of table and key), in ascending id order.
Row locks (``SELECT ... FOR UPDATE``) cannot do this alone: they do not exist for an absent
key, so two batches asserting "absent" could both pass. SERIALIZABLE would be correct too but
turns every contended counter (``assign_id``, quota, modseq) into serialization failures and
retries; advisory locks make contending writers simply queue, and sorted acquisition rules out
deadlocks. A hash collision only serializes two unrelated batches. Since every write of this
store takes the locks, the values read after locking stay current until commit. The lock
table is shared memory (``max_locks_per_transaction``), so a batch touching more than
``MAX_KEY_LOCKS`` keys takes one exclusive table-wide lock instead, and ordinary batches hold
that table lock in shared mode.

Durability: the batch returns after COMMIT, which with ``synchronous_commit`` on (forced on
for our sessions if the server turned it off) returns after the WAL is flushed.

Concurrency: a ``ThreadedConnectionPool`` per process (open the store after fork) and a thread
pool of the same size; psycopg2 releases the GIL while it waits on the server.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2
import psycopg2.errorcodes
import psycopg2.extensions
import psycopg2.pool

from stalwart_mp.store.backends.batch import (
    id_batch,
    keys_to_read,
    resolve,
    touched_keys,
    validate,
)
from stalwart_mp.store.backends.sqlcommon import ExecutorMixin, ThreadedReads, check_table
from stalwart_mp.store.data import DataStore, StoreError, WriteBatch, decode_counter

T = TypeVar("T")

MAX_KEY_LOCKS = 32
_RETRY_CODES = {
    psycopg2.errorcodes.SERIALIZATION_FAILURE,
    psycopg2.errorcodes.DEADLOCK_DETECTED,
}
_MAX_ATTEMPTS = 20
_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE


class _Connection(psycopg2.extensions.connection):
    """A pooled connection that remembers whether its session was prepared."""

    prepared = False


class _CommitUnknown(StoreError):
    """The connection broke during COMMIT: the batch may or may not have been committed."""


def lock_id(table: str, key: bytes) -> int:
    """The advisory lock id of ``key`` in ``table`` (advisory locks are per database)."""
    digest = hashlib.blake2b(table.encode() + b"\0" + key, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresStore(ThreadedReads, ExecutorMixin, DataStore):
    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 5432,
        database: str = "stalwart",
        user: str = "stalwart",
        password: str = "",
        pool_size: int = 10,
        timeout: float = 15.0,
        options: str = "",
        table: str = "kv",
    ) -> None:
        self.name = name
        self.table = check_table(name, table)
        self._where = f"{host}:{port}"
        self._sql_table = f'"{table}"'
        self._table_lock = lock_id(table, b"")  # keys are never empty: no clash with a key
        params: dict[str, Any] = {
            "host": host,
            "port": port,
            "dbname": database,
            "user": user,
            "password": password,
            "connect_timeout": max(2, math.ceil(timeout)),  # libpq: whole seconds, >= 2
            "application_name": f"stalwart-mp:{name}",
            "connection_factory": _Connection,
        }
        if options:
            params["options"] = options
        try:
            self._pool = psycopg2.pool.ThreadedConnectionPool(1, pool_size, **params)
        except psycopg2.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__  # libpq: multi-line
            raise StoreError(
                f'store "{name}": cannot connect to PostgreSQL at {self._where}: {reason}'
            ) from exc
        try:
            self._with_conn(self._create_table, retry=True)
        except BaseException:
            self._pool.closeall()
            raise
        self._start_executor(pool_size, "pg")

    # --- connections ----------------------------------------------------------------------

    def _prepare(self, conn: _Connection) -> None:
        conn.autocommit = True  # explicit BEGIN/COMMIT; plain reads are single statements
        with conn.cursor() as cur:
            cur.execute("SHOW synchronous_commit")
            if cur.fetchone()[0] == "off":
                # "off" acknowledges commits before the WAL flush: breaks our promise.
                cur.execute("SET synchronous_commit TO on")
        conn.prepared = True

    def _with_conn(self, fn: Callable[[Any], T], *, retry: bool) -> T:
        """Run ``fn(cursor)`` on a pooled connection.

        A connection found broken is discarded; the call is retried once on a fresh one when
        ``retry`` (reads, and writes that failed before COMMIT was sent).
        """
        for attempt in range(2):
            try:
                conn = self._pool.getconn()
            except psycopg2.Error as exc:
                raise StoreError(
                    f'store "{self.name}": cannot connect to PostgreSQL at {self._where}: {exc}'
                ) from exc
            try:
                if not conn.prepared:
                    self._prepare(conn)
                with conn.cursor() as cur:
                    result = fn(cur)
            except BaseException as exc:
                broken = conn.closed != 0
                if not broken and conn.info.transaction_status != _IDLE:
                    try:  # autocommit mode: conn.rollback() would not send ROLLBACK
                        with conn.cursor() as rollback:
                            rollback.execute("ROLLBACK")
                    except psycopg2.Error:
                        broken = True
                self._pool.putconn(conn, close=broken)
                if isinstance(exc, StoreError):
                    raise
                if isinstance(exc, psycopg2.Error):
                    if broken and retry and attempt == 0:
                        continue
                    raise StoreError(
                        f'store "{self.name}": PostgreSQL at {self._where}: '
                        f"{str(exc).strip() or type(exc).__name__}"
                    ) from exc
                raise
            self._pool.putconn(conn)
            return result
        raise AssertionError("unreachable")

    def _create_table(self, cur: Any) -> None:
        # Serialize concurrent first starts: CREATE TABLE IF NOT EXISTS races on pg_type.
        cur.execute("BEGIN")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._table_lock,))
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {self._sql_table} (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)"
        )
        cur.execute("COMMIT")

    # --- reads ----------------------------------------------------------------------------

    def _get_many(self, keys: list[bytes]) -> list[bytes | None]:
        def run(cur: Any) -> list[bytes | None]:
            cur.execute(f"SELECT k, v FROM {self._sql_table} WHERE k = ANY(%s::bytea[])", (keys,))
            found = {bytes(k): bytes(v) for k, v in cur.fetchall()}
            return [found.get(k) for k in keys]

        return self._with_conn(run, retry=True)

    def _range(
        self, start: bytes, end: bytes, reverse: bool, limit: int | None, keys_only: bool
    ) -> list[tuple[bytes, bytes | None]]:
        cols = "k" if keys_only else "k, v"
        order = "DESC" if reverse else "ASC"
        sql = (
            f"SELECT {cols} FROM {self._sql_table} WHERE k >= %s AND k < %s "
            f"ORDER BY k {order} LIMIT %s"
        )

        def run(cur: Any) -> list[tuple[bytes, bytes | None]]:
            cur.execute(sql, (start, end, limit))  # LIMIT NULL = no limit
            if keys_only:
                return [(bytes(row[0]), None) for row in cur.fetchall()]
            return [(bytes(k), bytes(v)) for k, v in cur.fetchall()]

        return self._with_conn(run, retry=True)

    # --- writes ---------------------------------------------------------------------------

    def _lock_keys(self, cur: Any, batch: WriteBatch) -> None:
        keys = touched_keys(batch)
        if len(keys) > MAX_KEY_LOCKS:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._table_lock,))
            return
        ids = sorted({lock_id(self.table, k) for k in keys})
        # Shared table lock first, then key locks in ascending order (one round trip).
        cur.execute(
            "SELECT pg_advisory_xact_lock_shared(%s); "
            "SELECT pg_advisory_xact_lock(x) FROM unnest(%s::int8[]) AS x",
            (self._table_lock, ids),
        )

    def _transaction(self, cur: Any, batch: WriteBatch) -> dict[bytes, bytes | None]:
        cur.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        self._lock_keys(cur, batch)
        current: dict[bytes, bytes | None] = {}
        reads = keys_to_read(batch)
        if reads:
            cur.execute(f"SELECT k, v FROM {self._sql_table} WHERE k = ANY(%s::bytea[])", (reads,))
            current = {bytes(k): bytes(v) for k, v in cur.fetchall()}
        final = resolve(batch, current)  # AssertionFailed => rollback in _with_conn
        puts = [(k, v) for k, v in final.items() if v is not None]
        dels = [k for k, v in final.items() if v is None]
        if puts:
            cur.execute(
                f"INSERT INTO {self._sql_table} (k, v) "
                "SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
                "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                ([psycopg2.Binary(k) for k, _ in puts], [psycopg2.Binary(v) for _, v in puts]),
            )
        if dels:
            cur.execute(f"DELETE FROM {self._sql_table} WHERE k = ANY(%s::bytea[])", (dels,))
        try:
            cur.execute("COMMIT")  # returns once the WAL is flushed (synchronous_commit)
        except psycopg2.Error as exc:
            if cur.connection.closed:
                raise _CommitUnknown(
                    f'store "{self.name}": connection to PostgreSQL at {self._where} lost '
                    f"during COMMIT; the batch may or may not be stored: {exc}"
                ) from exc
            raise
        return final

    def _commit(self, batch: WriteBatch) -> dict[bytes, bytes | None]:
        for attempt in range(_MAX_ATTEMPTS):
            try:
                return self._with_conn(lambda cur: self._transaction(cur, batch), retry=True)
            except StoreError as exc:
                cause = exc.__cause__
                if (
                    isinstance(cause, psycopg2.Error)
                    and cause.pgcode in _RETRY_CODES
                    and attempt + 1 < _MAX_ATTEMPTS
                ):
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                raise
        raise AssertionError("unreachable")

    async def write(self, batch: WriteBatch) -> None:
        validate(batch)
        await self._in_thread(self._commit, batch)

    async def assign_id(self, key: bytes) -> int:
        # The counter key's advisory lock serializes every increment across all processes
        # and nodes; the new value is read and written under it, then committed.
        return decode_counter((await self._in_thread(self._commit, id_batch(key)))[key])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._pool.closeall()
