"""Ordering search results: RFC 5256 SORT (with RFC 5957 DISPLAYFROM/DISPLAYTO) and
RFC 8621 §4.4.2 Email/query comparators, over records already loaded by ``search``."""
from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stalwart_mp.mail import search_filters as f
from stalwart_mp.mail.records import Email
from stalwart_mp.mail.search_filters import SearchError, Sort, SortKey

# Keys that need the parsed-message record (the rest come from the email record).
META_KEYS = frozenset({SortKey.DATE, SortKey.FROM, SortKey.DISPLAY_FROM, SortKey.TO,
                       SortKey.DISPLAY_TO, SortKey.CC, SortKey.SUBJECT})


def collate(text: str, collation: str) -> str | bytes:
    """A value whose natural order is ``collation``'s order (RFC 4790 §9).

    i;unicode-casemap (RFC 5051): case-folded, compatibility-decomposed, compared by code
    point; i;ascii-casemap (RFC 4790 §9.2): ASCII letters folded, octets compared; i;octet:
    the UTF-8 octets."""
    if collation == "i;unicode-casemap":
        return unicodedata.normalize("NFKD", text.casefold())
    data = text.encode("utf-8", "surrogateescape")
    return data.lower() if collation == "i;ascii-casemap" else data


def needs_meta(sorts: Sequence[Sort]) -> bool:
    return any(s.key in META_KEYS for s in sorts)


def check(sorts: Sequence[Sort], mailbox: int | None) -> None:
    for s in sorts:
        if s.key is SortKey.UID and mailbox is None:
            raise SearchError("sort by uid needs a mailbox to query")


def sort_ids(ids: list[int], sorts: Sequence[Sort], emails: Mapping[int, Email],
             metas: Mapping[int, dict], uid_of: Mapping[int, int] | None) -> list[int]:
    """``ids`` ordered by ``sorts``, the first criterion the most significant. Ties are
    broken by UID in the queried mailbox, else by email id, always ascending
    (RFC 5256 §3: "in ascending order by the order in which they appear in the mailbox")."""
    if uid_of is not None:
        out = sorted(ids, key=uid_of.__getitem__)
    else:
        out = sorted(ids)
    # Stable sorts from the least significant key up (Python keeps stability with
    # reverse=True, so ties stay in UID order whichever way a key runs).
    for s in reversed(sorts):
        out.sort(key=_key_fn(s, emails, metas, uid_of), reverse=s.reverse)
    return out


def _key_fn(s: Sort, emails: Mapping[int, Email], metas: Mapping[int, dict],
            uid_of: Mapping[int, int] | None) -> Callable[[int], Any]:
    key, coll = s.key, s.collation
    if key is SortKey.ARRIVAL:
        return lambda e: emails[e].received_at
    if key is SortKey.SIZE:
        return lambda e: emails[e].size
    if key is SortKey.ID:
        return lambda e: e
    if key is SortKey.UID:
        assert uid_of is not None
        return uid_of.__getitem__
    if key is SortKey.KEYWORD:
        kw = s.keyword
        return lambda e: kw in emails[e].keywords  # RFC 8621 §4.4.2: false < true
    if key is SortKey.DATE:
        # RFC 5256 §3 DATE: an absent or unparseable Date header sorts by INTERNALDATE.
        def date(e: int) -> float:
            sent = f.sent_at(metas[e])
            return emails[e].received_at if sent is None else sent
        return date
    if key is SortKey.SUBJECT:
        return lambda e: collate(f.base_subject(metas[e]), coll)
    field, display = {
        SortKey.FROM: ("from", False), SortKey.DISPLAY_FROM: ("from", True),
        SortKey.TO: ("to", False), SortKey.DISPLAY_TO: ("to", True),
        SortKey.CC: ("cc", False),
    }[key]
    return lambda e: collate(_first_address(metas[e], field, display), coll)


def _first_address(meta: dict, field: str, display: bool) -> str:
    """RFC 5256 §3: the addr-mailbox of the first address ("" if none); RFC 5957 §3 (and
    RFC 8621 "from"/"to"): its display name, or the addr-spec when it has none."""
    found = f.addresses(meta, field)
    if not found:
        return ""
    first = found[0]
    if display:
        return first.name or first.email
    return first.mailbox
