"""PostgreSQL full-text store: table ``<table>_fts`` with a tsvector and a GIN index.

Schema: ``(account_id, document_id) PRIMARY KEY, terms TSVECTOR, f_from TEXT, ...``.

``terms`` is built with ``array_to_tsvector`` from lexemes ``<account>:<field code><token>``
(tokens from ``fts_text``): no text search configuration, parser, dictionary or stopword
list of the server is involved, so results do not depend on ``default_text_search_config``
or the database locale, and a lexeme names its account and field — a GIN lookup only ever
finds the documents of one account, and one index serves every field. Queries are built as
tsquery text of quoted lexemes (``'7:sbudget' | '7:xbudget'``), which PostgreSQL takes
verbatim.

Phrases: the ``f_*`` columns hold each field's tokens (space-joined, ``GAP`` between list
values). The GIN index finds the documents holding every word of the phrase in a scoped
field; adjacency is then checked in Python on those columns. This is exact at any length,
where tsvector positions stop at 16383 and keep 256 positions per lexeme.

Connections: the pool, thread pool, reconnect and error handling of the PostgreSQL data
store (``PostgresStore``), reused by subclassing it with this table's DDL; none of its
key-value methods are used. A query runs in one REPEATABLE READ READ ONLY transaction so all
its leaves see one snapshot; a write is one autocommitted upsert or delete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from stalwart_mp.store import fts_text
from stalwart_mp.store.backends.postgres_store import PostgresStore, lock_id
from stalwart_mp.store.backends.sql_fts_base import SqlFts, phrase_hits
from stalwart_mp.store.fts import (
    FIELDS,
    check_ids,
    resolve_language,
    tokenize,
)

T = TypeVar("T")
FIELD_CODES = {"from": "f", "to": "t", "cc": "c", "bcc": "b", "subject": "s", "body": "x",
               "attachments": "a"}
_COLUMNS = [f"f_{f}" for f in FIELDS]
MAX_TABLE = 53  # "<table>_fts_terms" (the index) must fit PostgreSQL's 63-byte identifiers


def lexeme(account_id: int, field: str, token: str) -> str:
    return f"{account_id}:{FIELD_CODES[field]}{token}"


def _quote(lex: str) -> str:
    return "'" + lex.replace("\\", "\\\\").replace("'", "''") + "'"


class _Connections(PostgresStore):
    """The PostgreSQL data store's connection handling, creating the fts table instead."""

    def _create_table(self, cur: Any) -> None:
        table = f'"{self.table}_fts"'
        cur.execute("BEGIN")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(self.table + "_fts", b""),))
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (account_id BIGINT NOT NULL, "
            "document_id BIGINT NOT NULL, terms TSVECTOR NOT NULL, "
            + "".join(f"{c} TEXT NOT NULL, " for c in _COLUMNS)
            + "PRIMARY KEY (account_id, document_id))"
        )
        cur.execute(
            f'CREATE INDEX IF NOT EXISTS "{self.table}_fts_terms" ON {table} USING GIN (terms)'
        )
        cur.execute("COMMIT")


class _Matcher:
    def __init__(self, cur: Any, table: str, account_id: int) -> None:
        self._cur = cur
        self._table = table
        self._account = account_id

    def all(self) -> set[int]:
        self._cur.execute(
            f"SELECT document_id FROM {self._table} WHERE account_id = %s", (self._account,)
        )
        return {r[0] for r in self._cur.fetchall()}

    def match(self, fields: tuple[str, ...], tokens: tuple[str, ...]) -> set[int]:
        tsquery = " & ".join(
            "(" + " | ".join(_quote(lexeme(self._account, f, t)) for f in fields) + ")"
            for t in dict.fromkeys(tokens)
        )
        columns = "".join(f", f_{f}" for f in fields) if len(tokens) > 1 else ""
        self._cur.execute(
            f"SELECT document_id{columns} FROM {self._table} "
            "WHERE account_id = %s AND terms @@ %s::tsquery",
            (self._account, tsquery),
        )
        return phrase_hits(self._cur.fetchall(), tokens)


class PostgresFts(SqlFts):
    MAX_TABLE = MAX_TABLE
    _SNAPSHOT = 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY'

    def _connections(self, name: str, **settings: Any) -> Any:
        return _Connections(name, **settings)

    def _quote(self, identifier: str) -> str:
        return f'"{identifier}"'

    def _matcher(self, cur: Any, account_id: int) -> Any:
        return _Matcher(cur, self._table, account_id)

    async def index(
        self,
        account_id: int,
        document_id: int,
        fields: Mapping[str, str | Sequence[str]],
        language: str | None = None,
    ) -> None:
        check_ids(account_id, document_id)
        tokens = await tokenize(fields, resolve_language(self, language))
        lexemes = sorted({
            lexeme(account_id, f, t) for f in FIELDS for t in tokens[f] if t != fts_text.GAP
        })
        texts = [" ".join(tokens[f]) for f in FIELDS]
        sql = (
            f"INSERT INTO {self._table} (account_id, document_id, terms, {', '.join(_COLUMNS)}) "
            f"VALUES (%s, %s, array_to_tsvector(%s::text[]){', %s' * len(FIELDS)}) "
            "ON CONFLICT (account_id, document_id) DO UPDATE SET terms = EXCLUDED.terms"
            + "".join(f", {c} = EXCLUDED.{c}" for c in _COLUMNS)
        )
        args = (account_id, document_id, lexemes, *texts)
        await self._run(lambda cur: cur.execute(sql, args))

