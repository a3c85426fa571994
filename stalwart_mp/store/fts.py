"""The full-text store role: index the searchable text of messages, answer queries.

Used by IMAP SEARCH and JMAP Email/query. One store holds every account's index; accounts are
isolated (a query only ever returns document ids of its own account).

Backends (``[store."NAME"] type``): whoosh (embedded default), sqlite (FTS5), postgresql
(tsvector + GIN), mysql (InnoDB FULLTEXT). They never tokenize text themselves: text is
normalised, tokenized and stemmed once, in ``fts_text``, and each engine indexes those tokens
as opaque words. Boolean logic (And/Or/Not) is evaluated here, as set operations over the
document ids each leaf matches, so nesting and negation mean exactly the same on every
backend; a backend only answers "which documents of this account contain these tokens,
adjacent and in order, in one of these fields" (``Matcher``).

Ids: account and document ids are 32-bit unsigned (as in Stalwart), checked on the way in.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stalwart_mp.store import fts_text
from stalwart_mp.store.data import StoreError

FIELDS = ("from", "to", "cc", "bcc", "subject", "body", "attachments")
MAX_ID = (1 << 32) - 1


# --- the query AST ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """Words, all of which must occur (stemmed, in any order) in ``field``, or in any field
    when ``field`` is None (each word possibly in a different field). Words joined by
    punctuation ("alice@example.com", "e-mail") must be adjacent. No words: every document."""

    field: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Phrase:
    """Words adjacent and in order within one field (``field``, or any when None)."""

    field: str | None
    text: str


@dataclass(frozen=True, slots=True, init=False)
class And:
    """Every item matches. ``And()`` matches every document of the account."""

    items: tuple[Query, ...]

    def __init__(self, *items: Query) -> None:
        object.__setattr__(self, "items", items)


@dataclass(frozen=True, slots=True, init=False)
class Or:
    """Some item matches. ``Or()`` matches nothing."""

    items: tuple[Query, ...]

    def __init__(self, *items: Query) -> None:
        object.__setattr__(self, "items", items)


@dataclass(frozen=True, slots=True)
class Not:
    """Every document of the account that ``item`` does not match."""

    item: Query


Query = Term | Phrase | And | Or | Not


# --- what a backend implements -------------------------------------------------------------


class Matcher(Protocol):
    """One query's view of one account, used from the backend's thread."""

    def all(self) -> set[int]:
        """Every indexed document id of the account."""

    def match(self, fields: tuple[str, ...], tokens: tuple[str, ...]) -> set[int]:
        """Documents where one of ``fields`` holds ``tokens`` adjacent and in order."""


class FtsStore(abc.ABC):
    """Async full-text index. Open it in the process that uses it (after fork)."""

    name: str
    language: str  # default stemmer of documents and queries (a fts_text.LANGUAGES name)

    @abc.abstractmethod
    async def index(
        self,
        account_id: int,
        document_id: int,
        fields: Mapping[str, str | Sequence[str]],
        language: str | None = None,
    ) -> None:
        """Index a document, replacing any earlier version of it.

        ``fields``: any of FIELDS; a list value (To addresses, attachment names) is several
        values, and a phrase never spans two of them. ``language``: stemmer of this
        document (a name or an ISO 639-1 code), default the store's ``language``.
        """

    async def index_many(
        self, documents: Sequence[tuple[int, int, Mapping[str, str | Sequence[str]], str | None]]
    ) -> None:
        """Index several (account_id, document_id, fields, language) documents. Backends
        whose commits are costly (whoosh writes a segment per commit) commit them together."""
        for account_id, document_id, fields, language in documents:
            await self.index(account_id, document_id, fields, language)

    @abc.abstractmethod
    async def unindex(self, account_id: int, document_id: int) -> None:
        """Remove a document (no error if it is not indexed)."""

    async def unindex_many(self, documents: Sequence[tuple[int, int]]) -> None:
        """Remove several (account_id, document_id) documents; one commit where commits
        are costly (whoosh), as ``index_many``."""
        for account_id, document_id in documents:
            await self.unindex(account_id, document_id)

    @abc.abstractmethod
    async def unindex_account(self, account_id: int) -> None:
        """Remove every document of an account."""

    @abc.abstractmethod
    async def query(self, account_id: int, q: Query, language: str | None = None) -> set[int]:
        """Document ids of ``account_id`` matching ``q``; words are stemmed in ``language``
        (default the store's), which should be the language the documents were indexed in."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release files, connections and threads; the store cannot be used afterwards."""


# --- helpers shared by the backends ------------------------------------------------------


def check_ids(account_id: int, document_id: int | None = None) -> None:
    for what, value in (("account id", account_id), ("document id", document_id)):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
            raise ValueError(f"{what} {value!r}: expected an integer from 0 to {MAX_ID}")


def resolve_language(store: FtsStore, language: str | None) -> str:
    return store.language if language is None else fts_text.language_name(language)


def document_tokens(
    fields: Mapping[str, str | Sequence[str]], language: str
) -> dict[str, list[str]]:
    """The tokens of every field (missing fields: no tokens), validating field names."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(
            f"unknown full-text field(s) {', '.join(sorted(unknown))}; expected "
            + ", ".join(FIELDS)
        )
    out = {}
    for name in FIELDS:
        value = fields.get(name, ())
        values = [value] if isinstance(value, str) else list(value)
        out[name] = fts_text.index_tokens(values, language)
    return out


async def tokenize(
    fields: Mapping[str, str | Sequence[str]], language: str
) -> dict[str, list[str]]:
    """``document_tokens`` on the event loop's default thread pool: a large body takes tens
    of milliseconds to normalise and stem, which must not stall the loop, nor occupy the
    backend's own (often single) thread."""
    return await asyncio.get_running_loop().run_in_executor(
        None, document_tokens, dict(fields), language
    )


def _scope(field: str | None) -> tuple[str, ...]:
    if field is None:
        return FIELDS
    if field not in FIELDS:
        raise ValueError(f"unknown full-text field {field!r}; expected one of {', '.join(FIELDS)}")
    return (field,)


def check_query(q: Query) -> None:
    """Reject malformed queries before any backend work: ValueError for an unknown field,
    TypeError for something that is not a query node."""
    if isinstance(q, (Term, Phrase)):
        _scope(q.field)
        if not isinstance(q.text, str):
            raise TypeError(f"{type(q).__name__} text {q.text!r}: expected a string")
    elif isinstance(q, (And, Or)):
        for item in q.items:
            check_query(item)
    elif isinstance(q, Not):
        check_query(q.item)
    else:
        raise TypeError(f"{q!r}: expected a Term, Phrase, And, Or or Not")


def evaluate(q: Query, matcher: Matcher, language: str) -> set[int]:
    """Evaluate ``q`` over ``matcher`` (run in the backend's thread: it blocks)."""
    universe: list[set[int]] = []

    def everything() -> set[int]:
        if not universe:
            universe.append(matcher.all())
        return universe[0]

    def run(node: Query) -> set[int]:
        if isinstance(node, Term):
            scope = _scope(node.field)
            result: set[int] | None = None
            for group in fts_text.query_groups(node.text, language):
                found = matcher.match(scope, group)
                result = found if result is None else result & found
                if not result:
                    return set()
            return set(everything()) if result is None else result
        if isinstance(node, Phrase):
            words = tuple(t for g in fts_text.query_groups(node.text, language) for t in g)
            return matcher.match(_scope(node.field), words) if words else set(everything())
        if isinstance(node, Or):
            out: set[int] = set()
            for item in node.items:
                out |= run(item)
            return out
        if isinstance(node, Not):
            return everything() - run(node.item)
        # And: intersect the positive items, then subtract the negated ones, so that
        # "a AND NOT b" never needs the account's whole document list.
        positives = [i for i in node.items if not isinstance(i, Not)]
        negatives = [i.item for i in node.items if isinstance(i, Not)]
        acc = run(positives[0]) if positives else set(everything())
        for item in positives[1:]:
            if not acc:
                return acc
            acc &= run(item)
        for item in negatives:
            if not acc:
                return acc
            acc -= run(item)
        return acc

    return run(q)


# --- opening a store by name --------------------------------------------------------------


def open_fts_store(name: str, settings: Mapping[str, Any]) -> FtsStore:
    """Open the full-text store ``name`` from its ``[store."NAME"]`` settings.

    Raises StoreError naming the store and the problem. Call it in the process that uses the
    store (after fork): drivers and Whoosh are imported here, lazily.
    """
    from stalwart_mp.store import fts_settings  # noqa: F401 - declares "language"
    from stalwart_mp.store.registry import _network, parse_store_options
    from stalwart_mp.store.types import store_kind

    kind = store_kind(name, settings, "fts")
    o = parse_store_options(name, kind, settings)
    language = o["language"]
    try:
        if kind == "whoosh":
            from stalwart_mp.store.backends.whoosh_fts import WhooshFts

            return WhooshFts(name, o["path"], language=language)
        if kind == "sqlite":
            from stalwart_mp.store.backends.sqlite_fts import SqliteFts

            return SqliteFts(name, o["path"], language=language)
        if kind == "postgresql":
            from stalwart_mp.store.backends.postgres_fts import PostgresFts

            return PostgresFts(name, language=language, **_network(name, kind, o))
        from stalwart_mp.store.backends.mysql_fts import MysqlFts

        return MysqlFts(name, language=language, **_network(name, kind, o))
    except ImportError as exc:
        raise StoreError(
            f'store "{name}": the {kind} full-text backend needs the Python package '
            f'"{exc.name}"; install stalwart-mp[backends]'
        ) from exc
