"""MySQL / MariaDB data store (PyMySQL): ``(k VARBINARY(255) PRIMARY KEY, v LONGBLOB)``, InnoDB.

Order: VARBINARY compares bytewise with no padding and no collation, so the primary key order
is memcmp order. Keys are limited to 255 bytes (checked before sending; the session also runs
in strict SQL mode so nothing is ever silently truncated into another key).

Atomicity and isolation: a batch is one InnoDB transaction at REPEATABLE READ. The keys it
asserts on or adds to are read with ``SELECT ... FOR UPDATE``: an existing row gets an
exclusive record lock; an absent key gets a gap lock, which blocks any other transaction from
inserting that key until we commit — so "must be absent" assertions are race-free. Plain
reads run in autocommit mode, one statement each, and see only committed transactions.
Two batches racing to create the same absent key both hold the gap and deadlock on insert;
InnoDB rolls one back (error 1213) and we retry it from the start (it then sees the key).

Durability: ``write`` returns after COMMIT; InnoDB makes that durable only with
``innodb_flush_log_at_trx_commit = 1`` (the default), a server-wide setting — a warning is
logged when the server runs with another value.

Large values: PyMySQL (1.1+) sends bytes as hex literals (``_binary X'...'``), so a statement
is twice the size of the values it carries, and the server rejects any packet larger than its
``max_allowed_packet`` (16 MiB by default on MySQL 8 and MariaDB 10.6+). A value too big for
one statement is assembled in a session variable from pieces of at most half a packet
(``SET @v = CONCAT(@v, X'...')``) and inserted from there, inside the batch's transaction.
The server still has to hold the whole value in one packet when it returns it (and CONCAT's
result is capped at the same limit), so a value larger than ``max_allowed_packet`` minus a
small margin is refused before anything is sent, naming the setting to raise.

Concurrency: PyMySQL has no pool, so each store keeps its own small one (created lazily,
at most ``pool-size`` connections) and a thread pool of the same size; open the store after
fork. PyMySQL connections are not thread-safe: a connection is used by one thread at a time.
"""

from __future__ import annotations

import logging
import queue
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pymysql
import pymysql.err

from stalwart_mp.store.backends.batch import (
    id_batch,
    keys_to_read,
    resolve,
    validate,
)
from stalwart_mp.store.backends.sqlcommon import ExecutorMixin, ThreadedReads, check_table
from stalwart_mp.store.data import DataStore, Op, StoreError, WriteBatch, decode_counter

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_KEY = 255
_RETRY_CODES = {1213, 1020}  # deadlock victim; MariaDB "record has changed since last read"
_BROKEN_CODES = {2006, 2013, 2014, 2055}  # server gone away, lost connection, out of sync
_MAX_ATTEMPTS = 30
_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"
_PACKET_MARGIN = 4096  # SQL text, row header and protocol framing around a key and value
_MAX_PIECE = 4 << 20  # raw bytes per statement when assembling a large value
_DELETE_CHUNK = 1000  # keys per DELETE ... IN (...) statement
_VAR = "@stalwart_mp_value"


class _CommitUnknown(StoreError):
    """The connection broke during COMMIT: the batch may or may not have been committed."""


def _packet_hint(exc: BaseException) -> str:
    """Advice for errors caused by the server's packet limit (1153: packet too large, 1301:
    CONCAT result too large), which the server reports without naming the setting's value."""
    if isinstance(exc, pymysql.err.Error) and exc.args[:1] and exc.args[0] in (1153, 1301):
        return "; raise max_allowed_packet in the MySQL server's configuration"
    return ""


def _broken(exc: BaseException) -> bool:
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    return (
        isinstance(exc, pymysql.err.OperationalError)
        and exc.args[:1]
        and exc.args[0] in (_BROKEN_CODES)
    )


class _Pool:
    """A LIFO of idle connections; new ones are opened on demand (bounded by the threads)."""

    def __init__(self, connect: Callable[[], pymysql.connections.Connection]) -> None:
        self._connect = connect
        self._idle: queue.LifoQueue[pymysql.connections.Connection] = queue.LifoQueue()

    def get(self) -> pymysql.connections.Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._connect()

    def put(self, conn: pymysql.connections.Connection, *, broken: bool = False) -> None:
        if broken:
            try:
                conn.close()
            except pymysql.err.Error:
                pass
        else:
            self._idle.put(conn)

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            try:
                conn.close()
            except pymysql.err.Error:
                pass


class MysqlStore(ThreadedReads, ExecutorMixin, DataStore):
    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 3306,
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
        self._sql_table = f"`{table}`"
        self._params: dict[str, Any] = {
            "host": host,
            "port": port,
            "database": database,
            "user": user,
            "password": password,
            "connect_timeout": timeout,
            "autocommit": True,  # reads are single statements; writes BEGIN explicitly
            "binary_prefix": True,  # send bytes as _binary'...': no charset conversion
            "charset": "utf8mb4",
            "init_command": options or None,
        }
        self._pool = _Pool(self._connect)
        self._max_packet = 16 << 20  # replaced by the server's value in _setup
        conn = self._connect()
        try:
            self._setup(conn)
        except pymysql.err.Error as exc:
            self._pool.put(conn, broken=True)
            raise StoreError(f'store "{name}": MySQL at {self._where}: {exc}') from exc
        self._pool.put(conn)
        self._start_executor(pool_size, "mysql")

    # --- connections ----------------------------------------------------------------------

    def _connect(self) -> pymysql.connections.Connection:
        try:
            conn = pymysql.connect(**self._params)
            with conn.cursor() as cur:
                cur.execute(f"SET SESSION sql_mode = '{_SQL_MODE}'")
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return conn
        except pymysql.err.Error as exc:
            reason = exc.args[1] if len(exc.args) > 1 else str(exc)
            raise StoreError(
                f'store "{self.name}": cannot connect to MySQL at {self._where}: {reason}'
            ) from exc

    def _setup(self, conn: pymysql.connections.Connection) -> None:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self._sql_table} "
                "(k VARBINARY(255) NOT NULL PRIMARY KEY, v LONGBLOB NOT NULL) ENGINE=InnoDB"
            )
            cur.execute("SELECT @@innodb_flush_log_at_trx_commit, @@max_allowed_packet")
            flush, max_packet = cur.fetchone()
        self._max_packet = int(max_packet)
        if int(flush) != 1:
            log.warning(
                'store "%s": MySQL at %s runs with innodb_flush_log_at_trx_commit = %s; '
                "commits are not durable across a crash unless it is 1",
                self.name,
                self._where,
                flush,
            )

    def _with_conn(self, fn: Callable[[Any], T], *, retry: bool) -> T:
        """Run ``fn(cursor)`` on a pooled connection; a broken one is replaced (and the call
        retried once when ``retry``: reads, and writes that failed before COMMIT)."""
        for attempt in range(2):
            conn = self._pool.get()
            try:
                with conn.cursor() as cur:
                    result = fn(cur)
            except BaseException as exc:
                broken = _broken(exc)
                if not broken:
                    try:
                        conn.rollback()  # no-op when no transaction is open
                    except pymysql.err.Error:
                        broken = True
                self._pool.put(conn, broken=broken)
                if isinstance(exc, StoreError):
                    raise
                if isinstance(exc, pymysql.err.Error):
                    if _broken(exc) and retry and attempt == 0:
                        continue
                    raise StoreError(
                        f'store "{self.name}": MySQL at {self._where}: {exc}{_packet_hint(exc)}'
                    ) from exc
                raise
            self._pool.put(conn)
            return result
        raise AssertionError("unreachable")

    # --- reads ----------------------------------------------------------------------------

    def _get_many(self, keys: list[bytes]) -> list[bytes | None]:
        marks = ",".join(["%s"] * len(keys))

        def run(cur: Any) -> list[bytes | None]:
            cur.execute(f"SELECT k, v FROM {self._sql_table} WHERE k IN ({marks})", keys)
            found = dict(cur.fetchall())
            return [found.get(k) for k in keys]

        return self._with_conn(run, retry=True)

    def _range(
        self, start: bytes, end: bytes, reverse: bool, limit: int | None, keys_only: bool
    ) -> list[tuple[bytes, bytes | None]]:
        cols = "k" if keys_only else "k, v"
        order = "DESC" if reverse else "ASC"
        sql = f"SELECT {cols} FROM {self._sql_table} WHERE k >= %s AND k < %s ORDER BY k {order}"
        args: tuple[Any, ...] = (start, end)
        if limit is not None:
            sql += " LIMIT %s"
            args += (limit,)

        def run(cur: Any) -> list[tuple[bytes, bytes | None]]:
            cur.execute(sql, args)
            if keys_only:
                return [(row[0], None) for row in cur.fetchall()]
            return list(cur.fetchall())

        return self._with_conn(run, retry=True)

    # --- writes ---------------------------------------------------------------------------

    def _transaction(self, cur: Any, batch: WriteBatch) -> dict[bytes, bytes | None]:
        conn = cur.connection
        conn.begin()
        current: dict[bytes, bytes | None] = {}
        reads = keys_to_read(batch)
        if reads:
            marks = ",".join(["%s"] * len(reads))
            # Locking read: record locks on present keys, gap locks on absent ones.
            cur.execute(
                f"SELECT k, v FROM {self._sql_table} WHERE k IN ({marks}) FOR UPDATE", reads
            )
            current = dict(cur.fetchall())
        final = resolve(batch, current)  # AssertionFailed => rollback in _with_conn
        piece = self._piece_size()
        puts = [(k, v) for k, v in sorted(final.items()) if v is not None and len(v) <= piece]
        large = [(k, v) for k, v in sorted(final.items()) if v is not None and len(v) > piece]
        dels = [k for k, v in sorted(final.items()) if v is None]
        if puts:
            cur.executemany(
                f"INSERT INTO {self._sql_table} (k, v) VALUES (%s, %s) "
                "ON DUPLICATE KEY UPDATE v = VALUES(v)",
                puts,
            )
        for key, value in large:
            self._put_large(cur, key, value, piece)
        for i in range(0, len(dels), _DELETE_CHUNK):
            chunk = dels[i : i + _DELETE_CHUNK]
            marks = ",".join(["%s"] * len(chunk))
            cur.execute(f"DELETE FROM {self._sql_table} WHERE k IN ({marks})", chunk)
        try:
            conn.commit()
        except pymysql.err.Error as exc:
            if _broken(exc):
                raise _CommitUnknown(
                    f'store "{self.name}": connection to MySQL at {self._where} lost during '
                    f"COMMIT; the batch may or may not be stored: {exc}"
                ) from exc
            raise
        return final

    def _piece_size(self) -> int:
        """Raw bytes of value that fit in one statement: hex doubles them, plus the SQL."""
        return max(1024, min(_MAX_PIECE, (self._max_packet - _PACKET_MARGIN) // 2))

    def _put_large(self, cur: Any, key: bytes, value: bytes, piece: int) -> None:
        """Store a value too big for one statement: assemble it in a session variable."""
        cur.execute(f"SET {_VAR} = %s", (value[:piece],))
        for offset in range(piece, len(value), piece):
            cur.execute(f"SET {_VAR} = CONCAT({_VAR}, %s)", (value[offset : offset + piece],))
        cur.execute(
            f"INSERT INTO {self._sql_table} (k, v) VALUES (%s, {_VAR}) "
            "ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (key,),
        )
        cur.execute(f"SET {_VAR} = NULL")  # free the server-side copy now

    def _check_sizes(self, batch: WriteBatch) -> None:
        """Refuse, before any I/O, keys and values the server could not store or return."""
        max_value = self._max_packet - _PACKET_MARGIN
        for op, key, arg in batch.ops:
            if len(key) > MAX_KEY:
                raise StoreError(
                    f'store "{self.name}": key of {len(key)} bytes is longer than MySQL\'s '
                    f"{MAX_KEY}-byte key column: {key[:32]!r}..."
                )
            if op is Op.PUT and isinstance(arg, bytes) and len(arg) > max_value:
                raise StoreError(
                    f'store "{self.name}": value of {len(arg)} bytes for key {key[:32]!r} is '
                    f"larger than the MySQL server at {self._where} can hold in one packet "
                    f"(max_allowed_packet = {self._max_packet} bytes, of which at most "
                    f"{max_value} for a value); raise max_allowed_packet in the server's "
                    "configuration (e.g. max_allowed_packet = 64M under [mysqld])"
                )

    def _commit(self, batch: WriteBatch) -> dict[bytes, bytes | None]:
        for attempt in range(_MAX_ATTEMPTS):
            try:
                return self._with_conn(lambda cur: self._transaction(cur, batch), retry=True)
            except StoreError as exc:
                cause = exc.__cause__
                if (
                    isinstance(cause, pymysql.err.OperationalError)
                    and cause.args[:1]
                    and cause.args[0] in _RETRY_CODES
                    and attempt + 1 < _MAX_ATTEMPTS
                ):
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                raise
        raise AssertionError("unreachable")

    async def write(self, batch: WriteBatch) -> None:
        validate(batch)
        self._check_sizes(batch)
        await self._in_thread(self._commit, batch)

    async def assign_id(self, key: bytes) -> int:
        # SELECT ... FOR UPDATE on the counter row (or its gap) serializes every increment
        # across processes; the loser of a first-creation race is retried after the deadlock.
        return decode_counter((await self._in_thread(self._commit, id_batch(key)))[key])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._pool.close()
