"""Pieces shared by the SQL backends: the network data stores and the SQL directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from stalwart_mp.store import forked
from stalwart_mp.store.data import StoreError

T = TypeVar("T")
C = TypeVar("C")

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_table(store: str, table: str) -> str:
    """The table name, validated: it is interpolated into SQL as a quoted identifier."""
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise StoreError(
            f'store "{store}": table = {table!r}: expected a name of letters, digits and '
            "underscores (not starting with a digit, at most 63 characters)"
        )
    return table


class ThreadedReads:
    """``get``, ``get_many`` and ``range`` of an SQL data store whose reads are blocking
    ``_get_many`` / ``_range`` methods run on its thread pool by ``_in_thread``."""

    async def get(self, key: bytes) -> bytes | None:
        return (await self._in_thread(self._get_many, [key]))[0]  # type: ignore[attr-defined]

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        return await self._in_thread(self._get_many, list(keys))  # type: ignore[attr-defined]

    async def range(self, start: bytes, end: bytes, *, reverse: bool = False,
                    limit: int | None = None, keys_only: bool = False
                    ) -> list[tuple[bytes, bytes | None]]:
        from stalwart_mp.store.backends.batch import check_range

        if not check_range(start, end, limit):
            return []
        return await self._in_thread(  # type: ignore[attr-defined]
            self._range, start, end, reverse, limit, keys_only)  # type: ignore[attr-defined]


class ExecutorMixin:
    """A per-process thread pool, sized like the connection pool, for blocking driver calls.

    One thread per pooled connection: a thread always finds a connection, and the event loop
    never waits on the network (CONVENTIONS.md §7).
    """

    name: str
    _executor: ThreadPoolExecutor
    _pid: int
    _closed: bool

    def _start_executor(self, threads: int, prefix: str) -> None:
        self._pid = os.getpid()
        self._fork_generation = forked.generation()
        self._closed = False
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"{prefix}-{self.name}")

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')
        if forked.generation() != self._fork_generation:
            raise StoreError(
                f'store "{self.name}": opened in process {self._pid}, used in process '
                f"{os.getpid()}; open the store after fork, in the process using it"
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


# --- admin-written queries ----------------------------------------------------------------

# A string literal, a quoted identifier, a comment, a placeholder or a percent sign.
_SQL_TOKEN = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|--[^\n]*|/\*.*?\*/|(?P<mark>\?)|(?P<pct>%)""",
    re.DOTALL,
)
_SQL_TOKEN_BACKSLASH = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`[^`]*`|--[^\n]*|/\*.*?\*/"""
    r"""|(?P<mark>\?)|(?P<pct>%)""",
    re.DOTALL,
)


def qmark_to_format(sql: str, *, backslash_escapes: bool = False) -> tuple[str, int]:
    """Translate a query written with ``?`` placeholders (as administrators write them, the
    same for every database) to the ``%s`` style of psycopg2 and PyMySQL.

    Returns the query and its number of placeholders, so the one value can be passed as
    often as the query uses it. A ``?`` inside a string literal, a quoted identifier or a
    comment is text, not a placeholder. Every ``%`` becomes ``%%``, even inside literals:
    both drivers format the whole query string with ``%`` (``LIKE '%@'`` would otherwise be
    read as a format directive). ``backslash_escapes``: string literals may contain ``\'``
    (MySQL's default sql_mode), so such a quote does not end the literal.
    """
    pattern = _SQL_TOKEN_BACKSLASH if backslash_escapes else _SQL_TOKEN
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        if m.group("mark"):
            count += 1
            return "%s"
        if m.group("pct"):
            return "%%"
        return m.group(0).replace("%", "%%")

    return pattern.sub(replace, sql), count


def count_qmarks(sql: str) -> int:
    """The number of ``?`` placeholders of a query, outside literals and comments."""
    return sum(1 for m in _SQL_TOKEN.finditer(sql) if m.group("mark"))


class ConnectionPool(Generic[C]):
    """Idle connections, most recently used first; new ones are opened on demand.

    For drivers without a thread-safe pool of their own (PyMySQL, sqlite3) and for callers
    that must know whether a connection was just opened: a failure on a reused connection
    may only mean the server dropped it while idle (a restart, ``wait_timeout``), worth one
    retry on a fresh one; a failure on a fresh connection is the real answer. The number of
    connections is bounded by the threads using the pool (each holds at most one at a time).
    """

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None]) -> None:
        self._connect = connect
        self._close = close
        self._idle: queue.LifoQueue[C] = queue.LifoQueue()

    def get(self) -> tuple[C, bool]:
        """A connection and whether it was opened just now (errors of ``connect`` pass)."""
        try:
            return self._idle.get_nowait(), False
        except queue.Empty:
            return self._connect(), True

    def put(self, conn: C, *, broken: bool = False) -> None:
        if broken:
            self._discard(conn)
        else:
            self._idle.put(conn)

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            self._discard(conn)

    def _discard(self, conn: C) -> None:
        # A connection being thrown away (often because it broke) may fail to close.
        with contextlib.suppress(Exception):
            self._close(conn)
