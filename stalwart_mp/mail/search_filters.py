"""The search language shared by IMAP SEARCH/SORT and JMAP Email/query.

Protocol layers translate their syntax into these nodes (RFC 9051 §6.4.4 search keys,
RFC 5256 sort criteria, RFC 8621 §4.4.1 FilterCondition and §4.4.2 Comparator);
``search.query`` evaluates them. Dates are seconds since the epoch (UTC); the protocol turns
IMAP's day-granular dates into the start of that day before building a node.

Comparisons follow the RFC that needs them most, so every protocol can say exactly what it
means:

- ``Before(t)``: received_at < t (IMAP BEFORE, JMAP ``before``);
  ``After(t)``: received_at >= t (IMAP SINCE, JMAP ``after``); ON d = And(After(d),
  Before(d + 1 day)).
- ``Larger(n)``: size > n (IMAP LARGER); ``Smaller(n)``: size < n (IMAP SMALLER, JMAP
  ``maxSize``); JMAP ``minSize`` n = Not(Smaller(n)).
- ``ModSeqAtLeast(n)``: modseq >= n (RFC 7162 §3.1.5 SEARCH MODSEQ).
"""
from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from pyroaring import FrozenBitMap

from stalwart_mp.mail.store import MailError
from stalwart_mp.store.fts import FIELDS


class SearchError(MailError):
    """A search the engine cannot run as asked (IMAP: NO/BAD; JMAP: unsupportedFilter,
    unsupportedSort or invalidArguments). The message names the node and the problem."""


# --- leaves answered from indexes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class All:
    """Every message (IMAP ALL; an empty JMAP filter)."""


@dataclass(frozen=True, slots=True)
class InMailbox:
    """In mailbox ``mailbox_id`` (JMAP ``inMailbox``)."""

    mailbox_id: int


@dataclass(frozen=True, slots=True)
class UidSet:
    """Messages whose UID in the queried mailbox is in ``uids`` (IMAP UID and message
    sequence sets, which the session maps to UIDs). Needs ``query(mailbox=...)``."""

    uids: FrozenBitMap

    def __init__(self, uids: Iterable[int]) -> None:
        object.__setattr__(self, "uids", FrozenBitMap(uids))


@dataclass(frozen=True, slots=True)
class IdSet:
    """Messages whose email id is in ``ids`` (JMAP ids, IMAP SEARCH $ / saved results)."""

    ids: FrozenBitMap

    def __init__(self, ids: Iterable[int]) -> None:
        object.__setattr__(self, "ids", FrozenBitMap(ids))


@dataclass(frozen=True, slots=True)
class Text:
    """Full-text search (RFC 9051 §6.4.4 TEXT/BODY, RFC 8621 §4.4.1 text/from/to/cc/bcc/
    subject/body) through the full-text store. ``field``: one of ``fts.FIELDS``, or None for
    any. ``phrase``: the words must be adjacent and in order."""

    field: str | None
    text: str
    phrase: bool = False

    def __post_init__(self) -> None:
        if self.field is not None and self.field not in FIELDS:
            raise SearchError(f"full-text field {self.field!r} is not searchable; expected "
                              f"one of {', '.join(FIELDS)} or None")


# --- leaves answered from the email record -------------------------------------------------


@dataclass(frozen=True, slots=True)
class InMailboxOtherThan:
    """In at least one mailbox not in ``mailbox_ids`` (RFC 8621 §4.4.1
    ``inMailboxOtherThan``)."""

    mailbox_ids: frozenset[int]

    def __init__(self, mailbox_ids: Iterable[int]) -> None:
        object.__setattr__(self, "mailbox_ids", frozenset(mailbox_ids))


@dataclass(frozen=True, slots=True)
class HasKeyword:
    """Has ``keyword`` (IMAP flags map to keywords: \\Seen = "$seen", RFC 8621 §4.1.1)."""

    keyword: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyword", self.keyword.lower())


@dataclass(frozen=True, slots=True)
class NotKeyword:
    """Lacks ``keyword`` (IMAP UNSEEN, UNKEYWORD...; JMAP ``notKeyword``)."""

    keyword: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyword", self.keyword.lower())


@dataclass(frozen=True, slots=True)
class Before:
    """received_at < ``when`` (IMAP BEFORE, JMAP ``before``)."""

    when: float


@dataclass(frozen=True, slots=True)
class After:
    """received_at >= ``when`` (IMAP SINCE, JMAP ``after``)."""

    when: float


@dataclass(frozen=True, slots=True)
class SavedBefore:
    """Saved into the queried mailbox before ``when`` (RFC 8514 SAVEDBEFORE)."""

    when: float


@dataclass(frozen=True, slots=True)
class SavedSince:
    """Saved into the queried mailbox at or after ``when`` (RFC 8514 SAVEDSINCE)."""

    when: float


@dataclass(frozen=True, slots=True)
class Larger:
    """size > ``size`` octets (RFC 9051 §6.4.4 LARGER)."""

    size: int


@dataclass(frozen=True, slots=True)
class Smaller:
    """size < ``size`` octets (RFC 9051 §6.4.4 SMALLER, JMAP ``maxSize``)."""

    size: int


@dataclass(frozen=True, slots=True)
class ModSeqAtLeast:
    """modseq >= ``modseq`` (RFC 7162 §3.1.5: "equal to or greater than")."""

    modseq: int


# --- leaves answered from the parsed message -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SentBefore:
    """Date header < ``when`` (IMAP SENTBEFORE). A message without a valid Date: no match."""

    when: float


@dataclass(frozen=True, slots=True)
class SentSince:
    """Date header >= ``when`` (IMAP SENTSINCE)."""

    when: float


@dataclass(frozen=True, slots=True)
class Header:
    """A header field ``name`` whose value contains ``contains`` (case-insensitive substring,
    RFC 9051 §6.4.4 HEADER / FROM / TO / CC / BCC / SUBJECT, RFC 8621 §4.4.1 ``header``).
    ``contains`` None or "": the field is present. From/To/Cc/Bcc/Subject are matched against
    the envelope (``Name <address>`` of each address, the decoded subject); other fields
    are read from the message itself (``query(blob_reader=...)``)."""

    name: str
    contains: str | None = None

    def __post_init__(self) -> None:
        name = self.name.strip()
        if not name or ":" in name:
            raise SearchError(f"header name {self.name!r}: expected a field name without ':'")
        object.__setattr__(self, "name", name.lower())


@dataclass(frozen=True, slots=True)
class HasAttachment:
    """Has at least one attachment (RFC 8621 §4.4.1 ``hasAttachment``)."""


# --- boolean logic -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, init=False)
class And:
    """Every item matches (RFC 9051 §6.4.4: juxtaposed keys). ``And()`` matches all."""

    items: tuple[Filter, ...]

    def __init__(self, *items: Filter) -> None:
        object.__setattr__(self, "items", items)


@dataclass(frozen=True, slots=True, init=False)
class Or:
    """Some item matches (IMAP OR; JMAP operator "OR"). ``Or()`` matches nothing."""

    items: tuple[Filter, ...]

    def __init__(self, *items: Filter) -> None:
        object.__setattr__(self, "items", items)


@dataclass(frozen=True, slots=True)
class Not:
    """``item`` does not match (IMAP NOT; JMAP "NOT" is Not(Or(...)))."""

    item: Filter


Filter = (All | InMailbox | UidSet | IdSet | Text | InMailboxOtherThan | HasKeyword
          | NotKeyword | Before | After | SavedBefore | SavedSince | Larger | Smaller
          | ModSeqAtLeast | SentBefore | SentSince | Header | HasAttachment | And | Or | Not)


# --- sorting -------------------------------------------------------------------------------


class SortKey(enum.Enum):
    """Sort criteria (RFC 5256 §3 SORT, RFC 5957 DISPLAYFROM/DISPLAYTO, RFC 8621 §4.4.2)."""

    ARRIVAL = "arrival"            # INTERNALDATE / receivedAt
    DATE = "date"                  # Date header, else INTERNALDATE (RFC 5256) / sentAt
    SIZE = "size"
    FROM = "from"                  # addr-mailbox of the first From address (RFC 5256)
    DISPLAY_FROM = "displayfrom"   # display name, else addr-spec (RFC 5957; JMAP "from")
    TO = "to"
    DISPLAY_TO = "displayto"       # RFC 5957; JMAP "to"
    CC = "cc"
    SUBJECT = "subject"            # base subject (RFC 5256 §2.1)
    UID = "uid"                    # UID in the queried mailbox (IMAP default order)
    ID = "id"                      # email id (JMAP default order: creation)
    KEYWORD = "keyword"            # has ``keyword`` first (JMAP "hasKeyword")


COLLATIONS = ("i;unicode-casemap", "i;ascii-casemap", "i;octet")


@dataclass(frozen=True, slots=True)
class Sort:
    """One sort criterion; ``reverse`` = IMAP REVERSE / JMAP ``isAscending: false``.
    ``collation`` (RFC 4790 names, RFC 5051 i;unicode-casemap the default) applies to
    string keys."""

    key: SortKey
    reverse: bool = False
    keyword: str | None = None
    collation: str = "i;unicode-casemap"

    def __post_init__(self) -> None:
        if (self.key is SortKey.KEYWORD) != (self.keyword is not None):
            raise SearchError(f"sort by {self.key.value}: a keyword is needed exactly when "
                              "sorting by keyword")
        if self.keyword is not None:
            object.__setattr__(self, "keyword", self.keyword.lower())
        if self.collation not in COLLATIONS:
            raise SearchError(f"collation {self.collation!r} is not supported; expected one "
                              f"of {', '.join(COLLATIONS)}")


# --- the stored message record, read in one place ------------------------------------------
# The parsed-message record is ``ingest.serialize.to_record`` (compact keys, defaults left
# out), stored at append and read back in bulk by ``search``. Search reads it only through
# these functions; ``from_record`` would rebuild the whole MIME tree, which a search over
# thousands of messages must not pay for.

ENVELOPE_ADDRESS_FIELDS = {"from": "f", "to": "to", "cc": "cc", "bcc": "bc"}
_ENVELOPE_TEXT = {"date": "d", "message-id": "mi", "in-reply-to": "ir"}
ENVELOPE_HEADERS = frozenset({*ENVELOPE_ADDRESS_FIELDS, *_ENVELOPE_TEXT, "subject"})


@dataclass(frozen=True, slots=True)
class Addr:
    name: str      # display name, RFC 2047-decoded ("" when none)
    mailbox: str   # local part (RFC 5256 addr-mailbox)
    email: str     # addr-spec, mailbox@host

    def display(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


def addresses(meta: dict, field: str) -> list[Addr]:
    """The addresses of envelope ``field`` (from/to/cc/bcc), group markers left out."""
    out = []
    for item in meta.get("e", {}).get(ENVELOPE_ADDRESS_FIELDS[field], ()):
        name, mailbox, host = item[0], item[1], item[2]
        if host is None:  # RFC 9051 §7.5.2 group start/end marker
            continue
        mailbox = mailbox or ""
        out.append(Addr(name or "", mailbox, f"{mailbox}@{host}" if host else mailbox))
    return out


def subject(meta: dict) -> str | None:
    """The decoded Subject, None when the message has no Subject field."""
    env = meta.get("e", {})
    if "S" not in env:
        return None
    return env.get("s") or bytes(env["S"]).decode("utf-8", "replace")


def base_subject(meta: dict) -> str:
    """RFC 5256 §2.1 base subject, as computed at ingest (case kept)."""
    if "b" in meta:
        return meta["b"]
    return meta.get("s") or subject(meta) or ""


def envelope_text(meta: dict, name: str) -> str | None:
    """Date, Message-ID or In-Reply-To as written, None when absent."""
    return meta.get("e", {}).get(_ENVELOPE_TEXT[name])


def sent_at(meta: dict) -> float | None:
    """The Date header as seconds since the epoch, None if missing or unparseable."""
    return meta.get("t")


def attachment_names(meta: dict) -> list[str]:
    return list(meta.get("a", ()))


def has_attachment(meta: dict) -> bool:
    return bool(meta.get("A", False))


def header_ranges(meta: dict, lname: str) -> list[tuple[int, int]]:
    """(start, end) in the message of each top-level field named ``lname`` (lower case)."""
    flat = meta.get("h", ())
    return [(flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3) if flat[i] == lname]
