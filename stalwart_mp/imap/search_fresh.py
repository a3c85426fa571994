"""SEARCH TEXT/BODY over messages the full-text index has not taken in yet.

The queue process indexes new mail in the background, so for a moment after delivery or
APPEND a message is unknown to the full-text store. IMAP clients search right after they
sync, so each full-text leaf is widened here: ``Text(...)`` becomes ``Or(Text(...),
IdSet(matches among the pending messages))``, the pending ones (``0x4F`` marks, at most
``_MAX_PENDING``) being searched directly in their stored bytes — case-insensitive
substring, RFC 9051 §6.4.4's own definition of BODY and TEXT.
"""
from __future__ import annotations

import msgpack

from stalwart_mp.mail import keys
from stalwart_mp.mail import search as s
from stalwart_mp.mail.ingest import from_record
from stalwart_mp.mail.ingest.transfer import decoded_text

_MAX_PENDING = 500
_FIELD_HEADERS = {"from": ("from",), "to": ("to",), "cc": ("cc",), "bcc": ("bcc",),
                  "subject": ("subject",)}


def has_text(node: s.Filter) -> bool:
    if isinstance(node, (s.And, s.Or)):
        return any(has_text(i) for i in node.items)
    if isinstance(node, s.Not):
        return has_text(node.item)
    return isinstance(node, s.Text)


async def widen(services, acct: int, node: s.Filter) -> s.Filter:
    """``node`` with every full-text leaf also matching unindexed messages."""
    if not has_text(node):
        return node
    prefix = bytes([keys.FTS_PENDING]) + keys.u32(acct)
    rows = await services.mail.data.range(prefix, keys.end_of(prefix), limit=_MAX_PENDING)
    pending = [keys.tail_u32(k) for k, v in rows if v == b"i"]
    if not pending:
        return node
    texts = await _texts(services, acct, pending)
    return _rewrite(node, texts)


def _rewrite(node: s.Filter, texts: dict[int, tuple[str, str]]) -> s.Filter:
    if isinstance(node, s.And):
        return s.And(*(_rewrite(i, texts) for i in node.items))
    if isinstance(node, s.Or):
        return s.Or(*(_rewrite(i, texts) for i in node.items))
    if isinstance(node, s.Not):
        return s.Not(_rewrite(node.item, texts))
    if isinstance(node, s.Text):
        needle = node.text.casefold()
        hits = []
        for eid, (header, body) in texts.items():
            if node.field == "body":
                haystack = body
            elif node.field is None:
                haystack = header + "\n" + body
            else:
                haystack = _field(header, node.field)
            if needle in haystack:
                hits.append(eid)
        return s.Or(node, s.IdSet(hits)) if hits else node
    return node


def _field(header: str, field: str) -> str:
    names = _FIELD_HEADERS.get(field, ())
    out = []
    for line in header.split("\n"):
        name, _, value = line.partition(":")
        if name.strip() in names:
            out.append(value)
    return "\n".join(out)


async def _texts(services, acct: int, eids: list[int]) -> dict[int, tuple[str, str]]:
    """email id -> (header, body text), case-folded, of the messages still stored."""
    emails = await services.mail.emails(acct, eids)
    raws = await services.mail.data.get_many([keys.metadata(acct, e) for e in eids])
    out = {}
    for email, meta in zip(emails, raws, strict=True):
        if email is None or meta is None:
            continue
        raw = await services.blobs.get(email.blob_id)
        if raw is None:
            continue
        stored = from_record(msgpack.unpackb(meta, strict_map_key=False))
        root = stored.root
        header = raw[:root.body_start].decode("utf-8", "replace").replace("\r\n", "\n")
        header = header.replace("\n ", " ").replace("\n\t", " ")  # unfold
        body = "\n".join(decoded_text(raw, p) for p in root.walk()
                         if not p.is_multipart and p.content_type == "text")
        out[email.id] = (header.casefold(), body.casefold())
    return out
