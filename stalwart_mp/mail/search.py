"""The one query engine behind IMAP SEARCH/SORT (RFC 9051 §6.4.4, RFC 5256) and JMAP
Email/query (RFC 8621 §4.4).

Evaluation works on sets of email ids (pyroaring bitmaps). The universe is the queried
mailbox (its UID index) or the whole account. Each node narrows a candidate set: index
leaves (mailboxes, UID and id sets) and full-text leaves (one full-text query per distinct
node) are set operations; the other leaves test email records, parsed-message records or
the message header, which are read in bulk only for the candidates still in play and cached
for the rest of the query. Inside an And the cheapest items run first, so the expensive
ones see the fewest messages.

    ids = await query(mail, acct, And(HasKeyword("$flagged"), Text(None, "invoice")),
                      sort=[Sort(SortKey.ARRIVAL, reverse=True)], fts=fts, mailbox=inbox)
    uids = await to_uids(mail, acct, inbox, ids)
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

import msgpack
from pyroaring import BitMap

from stalwart_mp.mail import keys
from stalwart_mp.mail import search_filters as f
from stalwart_mp.mail.ingest.headers import split_headers
from stalwart_mp.mail.records import Email
from stalwart_mp.mail.search_filters import (
    After,
    All,
    And,
    Before,
    Filter,
    HasAttachment,
    HasKeyword,
    Header,
    IdSet,
    InMailbox,
    InMailboxOtherThan,
    Larger,
    ModSeqAtLeast,
    Not,
    NotKeyword,
    Or,
    SavedBefore,
    SavedSince,
    SearchError,
    SentBefore,
    SentSince,
    Smaller,
    Sort,
    SortKey,
    Text,
    UidSet,
)
from stalwart_mp.mail.search_sort import check as check_sort
from stalwart_mp.mail.search_sort import needs_meta, sort_ids
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store import fts as fts_ast
from stalwart_mp.store.fts import FtsStore

__all__ = [
    "After", "All", "And", "Before", "BlobReader", "Filter", "HasAttachment", "HasKeyword",
    "Header", "IdSet", "InMailbox", "InMailboxOtherThan", "Larger", "ModSeqAtLeast", "Not",
    "NotKeyword", "Or", "SavedBefore", "SavedSince", "SearchError", "SentBefore", "SentSince",
    "Smaller", "Sort", "SortKey", "Text", "UidSet", "highest_modseq", "query", "to_uids",
]

# ``blob_reader(blob_id, start, end)``: bytes of the message (``BlobStore.get``), None if gone.
BlobReader = Callable[[str, int, int | None], Awaitable[bytes | None]]

# Header fields answered from the envelope in the parsed-message record; any other field is
# read from the message header itself.
_ENVELOPE_HEADERS = f.ENVELOPE_HEADERS
_BLOB_CONCURRENCY = 16

# Evaluation cost classes: an And evaluates its items cheapest first.
_INDEX, _FTS, _RECORD, _META, _BLOB = range(5)


async def query(mail: MailStore, acct: int, filter: Filter, *, sort: Sequence[Sort] = (),
                fts: FtsStore | None = None, mailbox: int | None = None,
                blob_reader: BlobReader | None = None) -> list[int]:
    """Email ids of account ``acct`` matching ``filter``, in ``sort`` order.

    ``mailbox``: search only that mailbox (an IMAP selected mailbox: UID sets and the UID
    sort need it; ties sort by UID). Without it, the whole account; ties sort by id.
    Raises SearchError for a search that cannot run as given (before any I/O where the
    filter alone says so)."""
    _check(filter, fts, mailbox, blob_reader)
    check_sort(sort, mailbox)
    run = _Run(mail, acct, mailbox, fts, blob_reader)
    universe = await run.universe()
    matched = await run.eval(filter, universe)
    if any(s.key not in (SortKey.ID, SortKey.UID) for s in sort):
        await run.load_emails(matched)
    if needs_meta(sort):
        await run.load_metas(matched)
    ids = list(matched - run.gone)  # a record gone meanwhile: the message was destroyed
    if not sort:
        return ids if mailbox is None else sorted(ids, key=run.uid_of.__getitem__)
    return sort_ids(ids, sort, run.emails, run.metas,
                    run.uid_of if mailbox is not None else None)


async def to_uids(mail: MailStore, acct: int, mailbox: int, ids: Iterable[int]) -> list[int]:
    """The UIDs in ``mailbox`` of ``ids``, in the same order (ids no longer there dropped)."""
    uid_of = {eid: uid for uid, eid in await mail.uid_index(acct, mailbox)}
    return [uid_of[e] for e in ids if e in uid_of]


async def highest_modseq(mail: MailStore, acct: int, ids: Iterable[int]) -> int:
    """The highest modseq of ``ids`` (RFC 7162 §3.1.5: the "(MODSEQ n)" a SEARCH with a
    MODSEQ criterion returns); 0 for none."""
    emails = await mail.emails(acct, list(ids))
    return max((e.modseq for e in emails if e is not None), default=0)


# --- checks before any I/O ------------------------------------------------------------------


def _check(node: Filter, fts: FtsStore | None, mailbox: int | None,
           blob_reader: BlobReader | None) -> None:
    if isinstance(node, (And, Or)):
        for item in node.items:
            _check(item, fts, mailbox, blob_reader)
    elif isinstance(node, Not):
        _check(node.item, fts, mailbox, blob_reader)
    elif isinstance(node, Text) and fts is None:
        raise SearchError("full-text search is not available: no full-text store is "
                          "configured")
    elif isinstance(node, (UidSet, SavedBefore, SavedSince)) and mailbox is None:
        raise SearchError(f"{type(node).__name__} needs a mailbox to query")
    elif isinstance(node, Header) and _reads_blob(node) and blob_reader is None:
        raise SearchError(f'searching header "{node.name}" needs the message store '
                          "(no blob reader given)")
    elif not isinstance(node, _LEAVES):
        raise SearchError(f"{node!r} is not a search filter")


_LEAVES = (All, InMailbox, UidSet, IdSet, Text, InMailboxOtherThan, HasKeyword, NotKeyword,
           Before, After, SavedBefore, SavedSince, Larger, Smaller, ModSeqAtLeast, SentBefore,
           SentSince, Header, HasAttachment)


def _cost(node: Filter) -> int:
    if isinstance(node, (And, Or)):
        return max((_cost(i) for i in node.items), default=_INDEX)
    if isinstance(node, Not):
        return _cost(node.item)
    if isinstance(node, (All, InMailbox, UidSet, IdSet)):
        return _INDEX
    if isinstance(node, Text):
        return _FTS
    if isinstance(node, (SentBefore, SentSince, HasAttachment)):
        return _META
    if isinstance(node, Header):
        return _BLOB if _reads_blob(node) else _META
    return _RECORD


def _reads_blob(node: Header) -> bool:
    """Only a value test on a field the envelope does not hold reads the message."""
    return bool(node.contains) and node.name not in _ENVELOPE_HEADERS


# --- one query's evaluation -----------------------------------------------------------------


class _Run:
    """State of one query: what has been read, so nothing is read twice."""

    def __init__(self, mail: MailStore, acct: int, mailbox: int | None,
                 fts: FtsStore | None, blob_reader: BlobReader | None) -> None:
        self.mail = mail
        self.acct = acct
        self.mailbox = mailbox
        self.fts = fts
        self.blob_reader = blob_reader
        self.uid_of: dict[int, int] = {}           # email id -> UID in ``mailbox``
        self.members: dict[int, BitMap] = {}       # mailbox id -> email ids
        self.emails: dict[int, Email] = {}
        self.metas: dict[int, dict] = {}
        self.gone = BitMap()                       # ids whose records vanished meanwhile
        self.fts_hits: dict[Text, BitMap] = {}

    async def universe(self) -> BitMap:
        if self.mailbox is None:
            return BitMap(await self.mail.all_email_ids(self.acct))
        index = await self.mail.uid_index(self.acct, self.mailbox)
        self.uid_of = {eid: uid for uid, eid in index}
        members = BitMap(self.uid_of)
        self.members[self.mailbox] = members
        return members

    async def eval(self, node: Filter, cand: BitMap) -> BitMap:
        """The members of ``cand`` that ``node`` matches."""
        if not cand:
            return BitMap()
        if isinstance(node, And):
            acc = cand
            for item in sorted(node.items, key=_cost):
                acc = await self.eval(item, acc)
                if not acc:
                    break
            return acc
        if isinstance(node, Or):
            found = BitMap()
            for item in sorted(node.items, key=_cost):
                rest = cand - found
                if not rest:
                    break
                found |= await self.eval(item, rest)
            return found
        if isinstance(node, Not):
            return cand - await self.eval(node.item, cand)
        if isinstance(node, All):
            return cand
        if isinstance(node, IdSet):
            return cand & BitMap(node.ids)
        if isinstance(node, UidSet):
            uids = node.uids
            return cand & BitMap([e for e, u in self.uid_of.items() if u in uids])
        if isinstance(node, InMailbox):
            return cand & await self._members(node.mailbox_id)
        if isinstance(node, Text):
            return cand & await self._fts(node)
        if isinstance(node, Header) and _reads_blob(node):
            return await self._blob_headers(node, cand)
        cost = _cost(node)
        await self.load_emails(cand)
        if cost == _META:
            await self.load_metas(cand)
            test_meta = _meta_test(node)
            return BitMap([e for e in cand if e in self.metas and test_meta(self.metas[e])])
        test = _record_test(node, self.mailbox)
        return BitMap([e for e in cand if e in self.emails and test(self.emails[e])])

    async def _members(self, mid: int) -> BitMap:
        if mid not in self.members:
            self.members[mid] = BitMap(e for _, e in await self.mail.uid_index(self.acct, mid))
        return self.members[mid]

    async def _fts(self, node: Text) -> BitMap:
        if node not in self.fts_hits:
            assert self.fts is not None
            leaf = (fts_ast.Phrase if node.phrase else fts_ast.Term)(node.field, node.text)
            try:
                hits = await self.fts.query(self.acct, leaf)
            except (ValueError, TypeError) as exc:
                raise SearchError(f"full-text search {node.text!r}: {exc}") from exc
            self.fts_hits[node] = BitMap(hits)
        return self.fts_hits[node]

    async def load_emails(self, ids: BitMap) -> None:
        missing = [e for e in ids if e not in self.emails and e not in self.gone]
        if not missing:
            return
        for eid, email in zip(missing, await self.mail.emails(self.acct, missing), strict=True):
            if email is None:
                self.gone.add(eid)
            else:
                self.emails[eid] = email

    async def load_metas(self, ids: BitMap) -> None:
        missing = [e for e in ids if e not in self.metas and e not in self.gone]
        if not missing:
            return
        raws = await self.mail.data.get_many([keys.metadata(self.acct, e) for e in missing])
        for eid, raw in zip(missing, raws, strict=True):
            if raw is None:
                self.gone.add(eid)
            else:
                self.metas[eid] = msgpack.unpackb(raw, strict_map_key=False)

    async def _blob_headers(self, node: Header, cand: BitMap) -> BitMap:
        """RFC 9051 §6.4.4 HEADER on a field the envelope does not hold. The header index
        of the parsed record says which messages have the field and where: only those
        bytes are read, and only when a value must be matched."""
        await self.load_emails(cand)
        await self.load_metas(cand)
        where = {e: f.header_ranges(self.metas[e], node.name)
                 for e in cand if e in self.emails and e in self.metas}
        where = {e: ranges for e, ranges in where.items() if ranges}
        sem = asyncio.Semaphore(_BLOB_CONCURRENCY)
        needle = _fold(node.contains or "")

        async def test(eid: int) -> bool:
            ranges = where[eid]
            start, end = min(s for s, _ in ranges), max(e for _, e in ranges)
            assert self.blob_reader is not None
            async with sem:
                raw = await self.blob_reader(self.emails[eid].blob_id, start, end)
            if raw is None:
                return False
            return any(needle in _fold(_field_value(raw[s - start:e - start]))
                       for s, e in ranges)

        todo = list(where)
        results = await asyncio.gather(*(test(e) for e in todo))
        return BitMap([e for e, ok in zip(todo, results, strict=True) if ok])


# --- leaf predicates --------------------------------------------------------------------------


def _record_test(node: Filter, mailbox: int | None) -> Callable[[Email], bool]:
    """A test of an email record for a leaf answered from it."""
    if isinstance(node, HasKeyword):
        kw = node.keyword
        return lambda e: kw in e.keywords
    if isinstance(node, NotKeyword):
        kw = node.keyword
        return lambda e: kw not in e.keywords
    if isinstance(node, Before):
        t = node.when
        return lambda e: e.received_at < t
    if isinstance(node, After):
        t = node.when
        return lambda e: e.received_at >= t
    if isinstance(node, Larger):
        n = node.size
        return lambda e: e.size > n
    if isinstance(node, Smaller):
        n = node.size
        return lambda e: e.size < n
    if isinstance(node, ModSeqAtLeast):
        n = node.modseq
        return lambda e: e.modseq >= n
    if isinstance(node, InMailboxOtherThan):
        excluded = node.mailbox_ids
        return lambda e: any(m not in excluded for m in e.mailboxes)
    if isinstance(node, SavedBefore):  # RFC 8514 §4: SAVEDATE, else INTERNALDATE
        t = node.when
        return lambda e: e.saved_at.get(mailbox, e.received_at) < t
    if isinstance(node, SavedSince):
        t = node.when
        return lambda e: e.saved_at.get(mailbox, e.received_at) >= t
    raise SearchError(f"{node!r} is not a search filter")


def _meta_test(node: Filter) -> Callable[[dict], bool]:
    """A test of a parsed-message record for a leaf answered from it."""
    if isinstance(node, SentBefore):
        t = node.when
        return lambda m: (s := f.sent_at(m)) is not None and s < t
    if isinstance(node, SentSince):
        t = node.when
        return lambda m: (s := f.sent_at(m)) is not None and s >= t
    if isinstance(node, HasAttachment):
        return f.has_attachment
    if isinstance(node, Header):
        return _envelope_test(node)
    raise SearchError(f"{node!r} is not a search filter")


def _envelope_test(node: Header) -> Callable[[dict], bool]:
    needle = _fold(node.contains or "")
    name = node.name
    if not needle:  # RFC 9051 §6.4.4 HEADER: an empty string matches any such field
        return lambda meta: bool(f.header_ranges(meta, name))
    if name in f.ENVELOPE_ADDRESS_FIELDS:
        def test_addresses(meta: dict) -> bool:
            found = f.addresses(meta, name)
            return bool(found) and any(needle in _fold(a.display()) for a in found)
        return test_addresses
    getter = f.subject if name == "subject" else (lambda m: f.envelope_text(m, name))

    def test_text(meta: dict) -> bool:
        value = getter(meta)
        return value is not None and needle in _fold(value)
    return test_text


def _field_value(field: bytes) -> str:
    """The decoded value of one raw header field (``Name: value CRLF``)."""
    found = split_headers(field, 0, len(field), len(field)).headers
    return found[0].decoded() if found else ""


def _fold(text: str) -> str:
    """RFC 9051 §6.4.4: string matching is case-insensitive; we fold all of Unicode."""
    return text.casefold()
