"""MySQL / MariaDB full-text store: InnoDB table ``<table>_fts`` with a FULLTEXT index.

Schema: ``(account_id, document_id) PRIMARY KEY, terms MEDIUMTEXT, f_from MEDIUMTEXT, ...``,
``FULLTEXT (terms)``, searched ``IN BOOLEAN MODE``.

InnoDB FULLTEXT has its own word rules: words shorter than ``innodb_ft_min_token_size`` (3)
or longer than ``innodb_ft_max_token_size`` (84) are not indexed, a stopword list drops "the",
"be", "will"..., and word characters depend on the collation. All are server-wide (read-only
at run time), so instead of tuning the server, ``terms`` holds encoded lexemes that no rule
touches: ``<field code><account id, hex>x<token as UTF-8 hex>``, e.g. ``s7x627564676574``
for "budget" in account 7's subject. They are ASCII letters and digits only, at least
5 characters long, and shaped ``[ftcbsxa][0-9a-f]+[xz][0-9a-f]+``, which no stopword is; a
token whose encoding would pass 84 characters becomes ``<code><account>z<BLAKE2b-128 hex>``. The account in
every lexeme keeps a lookup inside one account, and one FULLTEXT index serves every field.

Phrases: as for PostgreSQL, FULLTEXT finds the documents holding every word of the phrase in
a scoped field, and adjacency is checked in Python on the ``f_*`` columns (``fts_text``
tokens, ``GAP`` between list values). InnoDB FULLTEXT keeps no usable positions in boolean
mode, so this is also the only exact way.

Maintenance: InnoDB marks deleted or replaced rows in the FULLTEXT index and purges them on
``OPTIMIZE TABLE`` (with ``innodb_optimize_fulltext_only = ON``); run it from time to time on
indexes with much churn. Connections: the pool, thread pool and error handling of the MySQL
data store (``MysqlStore``), reused by subclassing it with this table's DDL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from stalwart_mp.store import fts_text
from stalwart_mp.store.backends.mysql_store import MysqlStore
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
MAX_LEXEME = 84  # innodb_ft_max_token_size default (and maximum)
MAX_TABLE = 60  # "<table>_fts" must fit MySQL's 64-character identifiers
_COLUMNS = [f"f_{f}" for f in FIELDS]


def lexeme(account_id: int, field: str, token: str) -> str:
    head = f"{FIELD_CODES[field]}{account_id:x}"
    encoded = f"{head}x{token.encode().hex()}"
    if len(encoded) <= MAX_LEXEME:
        return encoded
    return f"{head}z{hashlib.blake2b(token.encode(), digest_size=16).hexdigest()}"


class _Connections(MysqlStore):
    """The MySQL data store's connection handling, creating the fts table instead."""

    def _setup(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS `{self.table}_fts` ("
                "account_id INT UNSIGNED NOT NULL, document_id INT UNSIGNED NOT NULL, "
                "terms MEDIUMTEXT NOT NULL, "
                + "".join(f"{c} MEDIUMTEXT NOT NULL, " for c in _COLUMNS)
                + "PRIMARY KEY (account_id, document_id), FULLTEXT KEY terms (terms)) "
                "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            )


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
        # Boolean mode: "+(a b)" = a or b required; one such group per distinct word.
        against = " ".join(
            "+(" + " ".join(lexeme(self._account, f, t) for f in fields) + ")"
            for t in dict.fromkeys(tokens)
        )
        columns = "".join(f", f_{f}" for f in fields) if len(tokens) > 1 else ""
        self._cur.execute(
            f"SELECT document_id{columns} FROM {self._table} "
            "WHERE account_id = %s AND MATCH (terms) AGAINST (%s IN BOOLEAN MODE)",
            (self._account, against),
        )
        return phrase_hits(self._cur.fetchall(), tokens)


class MysqlFts(SqlFts):
    MAX_TABLE = MAX_TABLE
    _SNAPSHOT = 'START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY'

    def _connections(self, name: str, **settings: Any) -> Any:
        return _Connections(name, **settings)

    def _quote(self, identifier: str) -> str:
        return f"`{identifier}`"

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
        terms = " ".join(sorted({
            lexeme(account_id, f, t) for f in FIELDS for t in tokens[f] if t != fts_text.GAP
        }))
        texts = [" ".join(tokens[f]) for f in FIELDS]
        sql = (
            f"INSERT INTO {self._table} (account_id, document_id, terms, {', '.join(_COLUMNS)}) "
            f"VALUES (%s, %s, %s{', %s' * len(FIELDS)}) ON DUPLICATE KEY UPDATE "
            "terms = VALUES(terms)" + "".join(f", {c} = VALUES({c})" for c in _COLUMNS)
        )
        args = (account_id, document_id, terms, *texts)
        await self._run(lambda cur: cur.execute(sql, args))

