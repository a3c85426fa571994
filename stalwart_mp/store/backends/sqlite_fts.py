"""SQLite FTS5 full-text store: table ``fts`` in the store's file (``path``).

Schema: ``fts5(account_id UNINDEXED, document_id UNINDEXED, f_from, f_to, ..., f_attachments)``
with ``rowid = account_id << 32 | document_id``. FTS5 only indexes the rowid besides the text,
so the rowid carries both ids: replacing or deleting one document is a rowid lookup, and an
account is a rowid range (its queries, ``all`` and ``unindex_account`` never scan other
accounts). Ids are 32-bit, as ``fts.check_ids`` enforces.

Text: ``fts_text`` tokens joined by spaces. The ``ascii`` tokenizer splits on ASCII
non-alphanumerics only and keeps every non-ASCII character in its token, so our normalised
Unicode tokens reach the index unchanged (``unicode61`` would re-fold them by its own rules);
``tokenchars '_'`` makes the ``GAP`` marker a token, which stops phrases across list values.
Phrases are native (FTS5 keeps positions).

Durability and threads: as the SQLite data store — WAL, ``synchronous=FULL`` (a commit
returns once fsynced), ``BEGIN IMMEDIATE`` for writes with a busy timeout so writers in
several processes queue; one connection per process on a one-thread executor. The file may
be the same one a sqlite data store uses: the table names differ.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stalwart_mp.store import fts_text
from stalwart_mp.store.backends.sqlcommon import ExecutorMixin
from stalwart_mp.store.data import StoreError
from stalwart_mp.store.fts import (
    FIELDS,
    MAX_ID,
    FtsStore,
    Query,
    check_ids,
    check_query,
    evaluate,
    resolve_language,
    tokenize,
)

BUSY_TIMEOUT_MS = 30_000
_COLUMNS = [f"f_{f}" for f in FIELDS]


def _rowid(account_id: int, document_id: int) -> int:
    return account_id << 32 | document_id


class _Matcher:
    def __init__(self, conn: sqlite3.Connection, account_id: int) -> None:
        self._conn = conn
        self._range = (_rowid(account_id, 0), _rowid(account_id, MAX_ID))

    def all(self) -> set[int]:
        rows = self._conn.execute(
            "SELECT document_id FROM fts WHERE rowid BETWEEN ? AND ?", self._range
        )
        return {r[0] for r in rows}

    def match(self, fields: tuple[str, ...], tokens: tuple[str, ...]) -> set[int]:
        # Tokens are letters/digits only, so a double-quoted FTS5 string holds them verbatim.
        expr = "{" + " ".join(f"f_{f}" for f in fields) + '} : "' + " ".join(tokens) + '"'
        rows = self._conn.execute(
            "SELECT document_id FROM fts WHERE fts MATCH ? AND rowid BETWEEN ? AND ?",
            (expr, *self._range),
        )
        return {r[0] for r in rows}


class SqliteFts(ExecutorMixin, FtsStore):
    def __init__(self, name: str, path: str | os.PathLike[str], *, language: str = "english"):
        self.name = name
        self.path = Path(path)
        self.language = fts_text.language_name(language)
        self._start_executor(1, "sqlite-fts")
        try:
            self._conn = self._executor.submit(self._connect).result()
        except (OSError, sqlite3.Error) as exc:
            self._executor.shutdown()
            raise StoreError(f'store "{name}": cannot open SQLite at {self.path}: {exc}') from exc

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5("
                "account_id UNINDEXED, document_id UNINDEXED, " + ", ".join(_COLUMNS) + ", "
                "tokenize = \"ascii tokenchars '_'\")"
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, fn: Any, *args: object) -> Any:
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise StoreError(f'store "{self.name}": SQLite at {self.path}: {exc}') from exc

    def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                conn.execute(sql, args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        await self._in_thread(self._run, self._transaction, statements)

    async def index(
        self,
        account_id: int,
        document_id: int,
        fields: Mapping[str, str | Sequence[str]],
        language: str | None = None,
    ) -> None:
        check_ids(account_id, document_id)
        tokens = await tokenize(fields, resolve_language(self, language))
        rowid = _rowid(account_id, document_id)
        marks = ", ".join("?" * (3 + len(FIELDS)))
        await self._write([
            ("DELETE FROM fts WHERE rowid = ?", (rowid,)),
            (
                f"INSERT INTO fts (rowid, account_id, document_id, {', '.join(_COLUMNS)}) "
                + f"VALUES ({marks})",
                (rowid, account_id, document_id, *(" ".join(tokens[f]) for f in FIELDS)),
            ),
        ])

    async def unindex(self, account_id: int, document_id: int) -> None:
        check_ids(account_id, document_id)
        await self._write([("DELETE FROM fts WHERE rowid = ?", (_rowid(account_id, document_id),))])

    async def unindex_account(self, account_id: int) -> None:
        check_ids(account_id)
        await self._write([(
            "DELETE FROM fts WHERE rowid BETWEEN ? AND ?",
            (_rowid(account_id, 0), _rowid(account_id, MAX_ID)),
        )])

    async def query(self, account_id: int, q: Query, language: str | None = None) -> set[int]:
        check_ids(account_id)
        check_query(q)
        language = resolve_language(self, language)
        return await self._in_thread(self._run, self._query, account_id, q, language)

    def _query(self, account_id: int, q: Query, language: str) -> set[int]:
        # One read transaction: every leaf of the query sees the same snapshot.
        self._conn.execute("BEGIN")
        try:
            return evaluate(q, _Matcher(self._conn, account_id), language)
        finally:
            self._conn.execute("COMMIT")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)
