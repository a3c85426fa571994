"""What the PostgreSQL and MySQL full-text stores share: the connection handling (through
their data-store class, reused), deletes, and query evaluation inside one read snapshot.

A subclass gives ``_connections`` (its data-store class with the full-text table's DDL),
``_quote`` (identifier quoting), ``_SNAPSHOT`` (the statement opening a read-only snapshot),
``_matcher`` (how a term or phrase becomes SQL) and ``index``.
"""
from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from stalwart_mp.store import fts_text
from stalwart_mp.store.data import StoreError
from stalwart_mp.store.fts import (
    FtsStore,
    Query,
    check_ids,
    check_query,
    evaluate,
    resolve_language,
)

T = TypeVar("T")


def phrase_hits(rows: list, tokens: tuple[str, ...]) -> set[int]:
    """Document ids of rows ``(document_id, field text...)`` found by the index: every row
    for one word; for a phrase, the rows where a field holds the words in order (the
    engines match the words, the adjacency is checked here)."""
    if len(tokens) == 1:
        return {r[0] for r in rows}
    return {r[0] for r in rows if any(fts_text.has_sequence(t, tokens) for t in r[1:])}


class SqlFts(FtsStore):
    _SNAPSHOT: ClassVar[str]
    MAX_TABLE: ClassVar[int]  # the table and index names add a suffix to ``table``

    def __init__(self, name: str, *, table: str = "kv", language: str = "english",
                 **connection: Any) -> None:
        self.name = name
        self.language = fts_text.language_name(language)
        if len(table) > self.MAX_TABLE:
            raise StoreError(
                f'store "{name}": table = {table!r}: at most {self.MAX_TABLE} characters for a '
                "full-text store (its table and index names add a suffix)"
            )
        self._db = self._connections(name, table=table, **connection)
        self._table = self._quote(f"{self._db.table}_fts")

    @abc.abstractmethod
    def _connections(self, name: str, **settings: Any) -> Any:
        """The data-store object (pool + thread pool) this full-text table lives beside."""

    @abc.abstractmethod
    def _quote(self, identifier: str) -> str: ...

    @abc.abstractmethod
    def _matcher(self, cur: Any, account_id: int) -> Any:
        """Answers the query's terms and phrases with SQL on ``cur``."""

    async def _run(self, fn: Callable[[Any], T]) -> T:
        # Every statement here is idempotent (upsert, delete, reads): a call that met a broken
        # connection can be retried on a fresh one.
        return await self._db._in_thread(functools.partial(self._db._with_conn, fn, retry=True))

    async def _delete(self, where: str, args: tuple[int, ...]) -> None:
        sql = f"DELETE FROM {self._table} WHERE {where}"
        await self._run(lambda cur: cur.execute(sql, args))

    async def unindex(self, account_id: int, document_id: int) -> None:
        check_ids(account_id, document_id)
        await self._delete("account_id = %s AND document_id = %s", (account_id, document_id))

    async def unindex_account(self, account_id: int) -> None:
        check_ids(account_id)
        await self._delete("account_id = %s", (account_id,))

    def _query(self, cur: Any, account_id: int, q: Query, language: str) -> set[int]:
        cur.execute(self._SNAPSHOT)  # one consistent snapshot for every leaf of the query
        result = evaluate(q, self._matcher(cur, account_id), language)
        cur.execute("COMMIT")
        return result

    async def query(self, account_id: int, q: Query, language: str | None = None) -> set[int]:
        check_ids(account_id)
        check_query(q)
        language = resolve_language(self, language)
        return await self._run(lambda cur: self._query(cur, account_id, q, language))

    async def close(self) -> None:
        await self._db.close()
