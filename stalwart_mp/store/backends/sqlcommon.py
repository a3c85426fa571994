"""Pieces shared by the network SQL backends (PostgreSQL, MySQL/MariaDB)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from stalwart_mp.store.data import StoreError

T = TypeVar("T")

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_table(store: str, table: str) -> str:
    """The table name, validated: it is interpolated into SQL as a quoted identifier."""
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise StoreError(
            f'store "{store}": table = {table!r}: expected a name of letters, digits and '
            "underscores (not starting with a digit, at most 63 characters)"
        )
    return table


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
        self._closed = False
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"{prefix}-{self.name}")

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')
        if os.getpid() != self._pid:
            raise StoreError(
                f'store "{self.name}": opened in process {self._pid}, used in process '
                f"{os.getpid()}; open the store after fork, in the process using it"
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
