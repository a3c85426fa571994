"""Whoosh full-text store: one index directory (``path``) holding every account.

Schema: ``key`` ("account:document", unique: ``update_document`` replaces a re-indexed
document), ``account`` (for isolation and "every document of the account"), ``doc`` (stored
document id), and one positional text field per searchable field. The text handed to Whoosh
is already normalised by ``fts_text``: documents are given to Whoosh as token lists, which
it indexes as they are (``whoosh.formats.tokens`` -> ``entoken``), with no analyzer pass: no
lower-casing, stopwords or stemming of its own, and no regex over the text again (the
fields' space-splitting analyzer, kept in the schema of existing indexes, made the same
postings from the tokens joined by spaces at about twice the cost). The ``GAP`` token between list
values is indexed like a word; no query produces it, so phrases never span two values.

Processes: a Whoosh index takes one writer at a time, across processes (a lock file). A
write waits for the lock up to ``LOCK_TIMEOUT`` seconds (``SegmentWriter`` retries), then
fails with StoreError. The deployment routes index writes through one process (the queue
child) so writers never contend in practice; every worker reads. Readers keep a searcher
and replace it when the index changed, so a query sees every commit made by any process.

Threads: Whoosh blocks (disk, CPU), so every call runs on a one-thread executor per store;
the event loop never waits on it. Open the store after fork.

Durability: Whoosh writes new segment files and then swaps its table of contents, so a
crash leaves the previous generation intact; it does not fsync, so the last commits can be
lost on power failure — the index can be rebuilt from the data store.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from whoosh import index as whoosh_index
from whoosh import query as wq
from whoosh.analysis import SpaceSeparatedTokenizer
from whoosh.fields import ID, STORED, TEXT, Schema
from whoosh.index import LockError

from stalwart_mp.store import fts_text
from stalwart_mp.store.backends.sqlcommon import ExecutorMixin
from stalwart_mp.store.data import StoreError
from stalwart_mp.store.fts import (
    FIELDS,
    FtsStore,
    Query,
    check_ids,
    check_query,
    evaluate,
    resolve_language,
    tokenize,
)

LOCK_TIMEOUT = 30.0
INDEX_NAME = "stalwart"


def _schema() -> Schema:
    text = {
        f"f_{name}": TEXT(analyzer=SpaceSeparatedTokenizer(), phrase=True) for name in FIELDS
    }
    return Schema(key=ID(unique=True), account=ID(), doc=STORED(), **text)


def _key(account_id: int, document_id: int) -> str:
    return f"{account_id}:{document_id}"


class _Matcher:
    def __init__(self, searcher: Any, account_id: int) -> None:
        self._searcher = searcher
        self._account = wq.Term("account", str(account_id))

    def _ids(self, q: Any) -> set[int]:
        s = self._searcher
        return {s.stored_fields(n)["doc"] for n in s.docs_for_query(q)}

    def all(self) -> set[int]:
        return self._ids(self._account)

    def match(self, fields: tuple[str, ...], tokens: tuple[str, ...]) -> set[int]:
        if len(tokens) == 1:
            parts = [wq.Term(f"f_{f}", tokens[0]) for f in fields]
        else:
            parts = [wq.Phrase(f"f_{f}", list(tokens)) for f in fields]
        return self._ids(wq.And([self._account, parts[0] if len(parts) == 1 else wq.Or(parts)]))


class WhooshFts(ExecutorMixin, FtsStore):
    def __init__(self, name: str, path: str | os.PathLike[str], *, language: str = "english"):
        self.name = name
        self.path = Path(path)
        self.language = fts_text.language_name(language)
        self._start_executor(1, "whoosh")
        try:
            self._ix = self._executor.submit(self._open).result()
        except (OSError, whoosh_index.IndexError) as exc:
            self._executor.shutdown()
            raise StoreError(
                f'store "{name}": cannot open the Whoosh index at {self.path}: {exc}'
            ) from exc
        self._searcher: Any = None

    def _open(self) -> Any:
        self.path.mkdir(parents=True, exist_ok=True)
        # Two processes starting at once must not both create (and clobber) the index.
        with open(self.path / "open.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if whoosh_index.exists_in(self.path, INDEX_NAME):
                return whoosh_index.open_dir(self.path, indexname=INDEX_NAME)
            return whoosh_index.create_in(self.path, _schema(), indexname=INDEX_NAME)

    # --- writes ---------------------------------------------------------------------------

    def _write(self, change: Any) -> None:
        try:
            writer = self._ix.writer(timeout=LOCK_TIMEOUT, delay=0.05)
        except LockError as exc:
            raise StoreError(
                f'store "{self.name}": the Whoosh index at {self.path} stayed locked by another '
                f"writer for {LOCK_TIMEOUT:.0f} s"
            ) from exc
        try:
            change(writer)
        except BaseException:
            writer.cancel()
            raise
        writer.commit()

    async def index(
        self,
        account_id: int,
        document_id: int,
        fields: Mapping[str, str | Sequence[str]],
        language: str | None = None,
    ) -> None:
        check_ids(account_id, document_id)
        tokens = await tokenize(fields, resolve_language(self, language))
        doc = {f"f_{name}": words for name, words in tokens.items() if words}

        def change(writer: Any) -> None:
            writer.update_document(
                key=_key(account_id, document_id),
                account=str(account_id),
                doc=document_id,
                **doc,
            )

        await self._in_thread(self._write, change)

    async def index_many(
        self, documents: Sequence[tuple[int, int, Mapping[str, str | Sequence[str]], str | None]]
    ) -> None:
        """All documents in one writer and one commit (one new segment, not one each)."""
        latest = {}  # update_document inside one writer does not replace its own additions
        for account_id, document_id, fields, language in documents:
            check_ids(account_id, document_id)
            latest[(account_id, document_id)] = (fields, language)
        prepared = []
        for (account_id, document_id), (fields, language) in latest.items():
            tokens = await tokenize(fields, resolve_language(self, language))
            prepared.append((account_id, document_id,
                             {f"f_{n}": w for n, w in tokens.items() if w}))

        def change(writer: Any) -> None:
            for account_id, document_id, doc in prepared:
                writer.update_document(key=_key(account_id, document_id),
                                       account=str(account_id), doc=document_id, **doc)

        if prepared:
            await self._in_thread(self._write, change)

    async def unindex(self, account_id: int, document_id: int) -> None:
        check_ids(account_id, document_id)
        key = _key(account_id, document_id)
        await self._in_thread(self._write, lambda w: w.delete_by_term("key", key))

    async def unindex_many(self, documents: Sequence[tuple[int, int]]) -> None:
        keys = []
        for account_id, document_id in documents:
            check_ids(account_id, document_id)
            keys.append(_key(account_id, document_id))

        def change(writer: Any) -> None:
            for key in keys:
                writer.delete_by_term("key", key)

        if keys:
            await self._in_thread(self._write, change)

    async def unindex_account(self, account_id: int) -> None:
        check_ids(account_id)
        await self._in_thread(
            self._write, lambda w: w.delete_by_term("account", str(account_id))
        )

    # --- reads ----------------------------------------------------------------------------

    def _query(self, account_id: int, q: Query, language: str) -> set[int]:
        # A new searcher whenever any process committed. Not ``Searcher.refresh()``: it reuses
        # the readers of unchanged segments, and a segment that only gained deletions counts
        # as unchanged, so unindexed documents would still be found.
        if self._searcher is not None and not self._searcher.up_to_date():
            self._searcher.close()
            self._searcher = None
        if self._searcher is None:
            self._searcher = self._ix.searcher()
        return evaluate(q, _Matcher(self._searcher, account_id), language)

    async def query(self, account_id: int, q: Query, language: str | None = None) -> set[int]:
        check_ids(account_id)
        check_query(q)
        return await self._in_thread(self._query, account_id, q, resolve_language(self, language))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._searcher is not None:
                self._searcher.close()
            self._ix.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)
