"""FETCH (RFC 9051 §6.4.5, §7.5.2) from the stored records: FLAGS, INTERNALDATE, sizes and
ids from the email record; ENVELOPE, BODYSTRUCTURE and PREVIEW (RFC 8970) from the parsed
metadata made at ingest; BODY[section]<partial> and BINARY[] (RFC 3516) sliced byte-exact
from the blob at the part offsets the metadata keeps. CHANGEDSINCE and MODSEQ (RFC 7162),
EMAILID/THREADID (RFC 8474), SAVEDATE (RFC 8514).
"""
from __future__ import annotations

import asyncio
import operator

import msgpack

from stalwart_mp.imap import flags as fl
from stalwart_mp.imap.protocol import commands as c
from stalwart_mp.imap.protocol import writer as w
from stalwart_mp.imap.session import No
from stalwart_mp.mail import keys
from stalwart_mp.mail.ingest import bodystructure_tree, envelope_tree, from_record
from stalwart_mp.mail.ingest.transfer import decode_body
from stalwart_mp.mail.records import SEEN

_CHUNK = 256
_META_ITEMS = {"ENVELOPE", "BODYSTRUCTURE", "PREVIEW"}
_BLOB_ITEMS = {"RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY", "BINARY.PEEK",
               "BINARY.SIZE"}
_SETS_SEEN = {"RFC822", "RFC822.TEXT", "BINARY"}
_KNOWN_ENCODINGS = {"7bit", "8bit", "binary", "base64", "quoted-printable"}


async def cmd_fetch(session, cmd: c.Fetch):
    sel = session.selected
    targets = sel.resolve(session, cmd.uid, cmd.sequence)
    items = list(cmd.items)
    if cmd.uid and not any(i.name == "UID" for i in items):
        items.insert(0, c.FetchAtt("UID"))  # RFC 9051 §6.4.9: UID FETCH always has UID
    if cmd.changed_since is not None:
        session.enabled.add("CONDSTORE")  # RFC 7162 §3.1: a CONDSTORE-enabling command
        if not any(i.name == "MODSEQ" for i in items):
            items.append(c.FetchAtt("MODSEQ"))
    if cmd.vanished:  # RFC 7162 §3.2.6
        if not (cmd.uid and session.qresync and cmd.changed_since is not None):
            raise No("VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC enabled",
                     status="BAD")
        present = set(sel.uids)
        gone = [u for u in cmd.sequence.resolve(sel.uidnext - 1) if u not in present]
        if gone:
            session.out(w.untagged("VANISHED (EARLIER) " + w.sequence_set(gone)))
    await fetch_messages(session, sel, targets, items, changed_since=cmd.changed_since,
                         mark_seen=not sel.readonly)
    return "FETCH completed"


def _sets_seen(item: c.FetchAtt) -> bool:
    return item.name in _SETS_SEEN or (item.name == "BODY" and item.section is not None)


def _needs_meta(item: c.FetchAtt) -> bool:
    if item.name in _META_ITEMS or (item.name == "BODY" and item.section is None):
        return True
    if item.name.startswith("BINARY") or item.name == "RFC822.TEXT":
        return True
    return item.section is not None and bool(item.section.part or item.section.text)


def _needs_blob(item: c.FetchAtt) -> bool:
    return item.name in _BLOB_ITEMS or item.section is not None


async def fetch_messages(session, sel, targets: list[tuple[int, int, int]],
                         items: list[c.FetchAtt], *, changed_since: int | None = None,
                         mark_seen: bool = True) -> None:
    mail = session.services.mail
    acct = sel.acct
    need_meta = any(_needs_meta(i) for i in items)
    need_blob = any(_needs_blob(i) for i in items)
    sets_seen = mark_seen and any(_sets_seen(i) for i in items)
    simple = _simple_renderer(items)
    for start in range(0, len(targets), _CHUNK):
        chunk = targets[start:start + _CHUNK]
        eids = [e for _, _, e in chunk]
        emails = await sel.emails(session, eids)
        if changed_since is not None:
            keep = [(t, e) for t, e in zip(chunk, emails, strict=True)
                    if e is not None and e.modseq > changed_since]
        else:
            keep = [(t, e) for t, e in zip(chunk, emails, strict=True) if e is not None]
        if not keep:
            continue
        metas: list[dict | None] = [None] * len(keep)
        if need_meta:
            raws = await mail.data.get_many([keys.metadata(acct, e.id) for _, e in keep])
            metas = [msgpack.unpackb(r, strict_map_key=False) if r else None for r in raws]
        blobs: list[bytes | None] = [None] * len(keep)
        if need_blob:
            blobs = await _read_blobs(session, [e.blob_id for _, e in keep])
        seen_now: set[int] = set()
        if sets_seen:
            unseen = [e.id for _, e in keep if SEEN not in e.keywords]
            if unseen:
                await mail.set_keywords(acct, unseen, add=[SEEN])
                fresh = {e.id: e for e in await mail.emails(acct, unseen) if e is not None}
                sel.remember(fresh.values())
                keep = [(t, fresh.get(e.id, e)) for t, e in keep]
                seen_now = set(fresh)
                for eid, e in fresh.items():
                    sel.own[eid] = e.modseq
        if simple is not None and not seen_now:
            session.out(b"".join(simple(seq, uid, email) for (seq, uid, _), email in keep))
            await session.flush()
            continue
        for ((seq, uid, _), email), meta, raw in zip(keep, metas, blobs, strict=True):
            values = _render(session, sel, uid, email, meta, raw, items)
            if email.id in seen_now and not any(i.name == "FLAGS" for i in items):
                values.append(("FLAGS", fl.flags_wire(email.keywords)))  # RFC 9051 §6.4.5
            session.out(w.fetch(seq, values, session.utf8))
        await session.flush()


_FAST_FORMATS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "RFC822.SIZE": b"RFC822.SIZE %d",
                 "MODSEQ": b"MODSEQ (%d)"}
_FAST_INDEX = {"UID": 0, "FLAGS": 1, "RFC822.SIZE": 2, "MODSEQ": 3}


def _simple_renderer(items: list[c.FetchAtt]):
    """For FETCHes of email-record items only (the FLAGS UID RFC822.SIZE of a client's
    resync), a function writing a whole response line with no generic encoding; else None."""
    from stalwart_mp.imap.selected import internal_date

    names = [i.name for i in items]
    if names and set(names) <= set(_FAST_FORMATS):
        # one %-template and an itemgetter: no per-item call for the common resync FETCH
        template = b"* %d FETCH (" + b" ".join(_FAST_FORMATS[n] for n in names) + b")\r\n"
        pick = operator.itemgetter(*(_FAST_INDEX[n] for n in names))
        single = len(names) == 1
        flags_wire = fl.flags_wire

        def render_fast(seq: int, uid: int, email) -> bytes:
            values = pick((uid, flags_wire(email.keywords), email.size, email.modseq))
            return template % ((seq, values) if single else (seq, *values))

        return render_fast
    parts = []
    for item in items:
        if item.name == "UID":
            parts.append(lambda uid, e: b"UID %d" % uid)
        elif item.name == "FLAGS":
            parts.append(lambda uid, e: b"FLAGS " + fl.flags_wire(e.keywords))
        elif item.name == "RFC822.SIZE":
            parts.append(lambda uid, e: b"RFC822.SIZE %d" % e.size)
        elif item.name == "MODSEQ":
            parts.append(lambda uid, e: b"MODSEQ (%d)" % e.modseq)
        elif item.name == "INTERNALDATE":
            parts.append(lambda uid, e: b'INTERNALDATE "' +
                         internal_date(e.received_at).encode() + b'"')
        else:
            return None

    def render(seq: int, uid: int, email) -> bytes:
        return b"* %d FETCH (" % seq + b" ".join(p(uid, email) for p in parts) + b")\r\n"

    return render


async def _read_blobs(session, blob_ids: list[str]) -> list[bytes | None]:
    blobs = session.services.blobs
    sem = asyncio.Semaphore(16)

    async def one(blob_id: str) -> bytes | None:
        async with sem:
            return await blobs.get(blob_id)

    return list(await asyncio.gather(*(one(b) for b in blob_ids)))


def _render(session, sel, uid: int, email, meta: dict | None, raw: bytes | None,
            items: list[c.FetchAtt]) -> list[tuple[str, object]]:
    from stalwart_mp.imap.selected import internal_date

    stored = from_record(meta) if meta is not None else None
    out: list[tuple[str, object]] = []
    for item in items:
        name = item.name
        if name == "UID":
            out.append(("UID", uid))
        elif name == "FLAGS":
            out.append(("FLAGS", fl.flags_wire(email.keywords)))
        elif name == "INTERNALDATE":
            out.append(("INTERNALDATE", internal_date(email.received_at)))
        elif name == "RFC822.SIZE":
            out.append(("RFC822.SIZE", email.size))
        elif name == "MODSEQ":
            out.append(("MODSEQ", [email.modseq]))
        elif name == "EMAILID":
            out.append(("EMAILID", [w.Atom(f"M{email.id}")]))
        elif name == "THREADID":
            out.append(("THREADID", [w.Atom(f"T{email.thread_id}")]))
        elif name == "SAVEDATE":
            saved = email.saved_at.get(sel.mid)
            out.append(("SAVEDATE", internal_date(saved) if saved else None))
        elif stored is None and (name in ("ENVELOPE", "BODYSTRUCTURE", "PREVIEW") or
                                 (name == "BODY" and item.section is None)):
            out.append((name, None))
        elif name == "ENVELOPE":
            out.append(("ENVELOPE", envelope_tree(stored.envelope)))
        elif name == "BODYSTRUCTURE":
            out.append(("BODYSTRUCTURE", bodystructure_tree(stored.root, True)))
        elif name == "BODY" and item.section is None:
            out.append(("BODY", bodystructure_tree(stored.root, False)))
        elif name == "PREVIEW":
            out.append(("PREVIEW", stored.preview or None))
        elif raw is None:
            out.append((_response_name(item), None))
        elif name == "RFC822":
            out.append(("RFC822", raw))
        elif name == "RFC822.HEADER":
            end = stored.root.body_start if stored else raw.find(b"\r\n\r\n") + 4
            out.append(("RFC822.HEADER", raw[:end]))
        elif name == "RFC822.TEXT":
            out.append(("RFC822.TEXT", raw[stored.root.body_start:] if stored else b""))
        elif name.startswith("BINARY"):
            out.append(_binary(item, stored, raw))
        else:
            data = section_bytes(stored, raw, item.section)
            if item.partial is not None:
                offset, length = item.partial
                data = data[offset:offset + length]
            out.append((_response_name(item), data))
    return out


def _response_name(item: c.FetchAtt) -> str:
    if item.name in ("BODY", "BODY.PEEK"):
        name = f"BODY[{item.section.spec()}]"
        if item.partial is not None:
            name += f"<{item.partial[0]}>"
        return name
    if item.name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        part = ".".join(str(p) for p in item.section.part)
        prefix = "BINARY.SIZE" if item.name == "BINARY.SIZE" else "BINARY"
        name = f"{prefix}[{part}]"
        if item.partial is not None:
            name += f"<{item.partial[0]}>"
        return name
    return item.name


def _binary(item: c.FetchAtt, stored, raw: bytes) -> tuple[str, object]:
    """RFC 3516 §4.2: the part with its transfer encoding removed."""
    part_path = ".".join(str(p) for p in item.section.part)
    part = stored.root.section(part_path) if stored else None
    if part is None:
        data = raw if not part_path else b""
    elif part.is_multipart:
        raise No("BINARY of a multipart is not defined", status="BAD")
    else:
        if part.encoding not in _KNOWN_ENCODINGS:
            raise No(f"Unknown Content-Transfer-Encoding {part.encoding}", "UNKNOWN-CTE")
        data = decode_body(raw, part) if part_path or not stored.root.children else raw
    if item.name == "BINARY.SIZE":
        return _response_name(item), len(data)
    if item.partial is not None:
        data = data[item.partial[0]:item.partial[0] + item.partial[1]]
    return _response_name(item), (w.Literal8(data) if b"\x00" in data else data)


def section_bytes(stored, raw: bytes, section: c.Section) -> bytes:
    """The octets of a body section (RFC 9051 §6.4.5): HEADER, HEADER.FIELDS[.NOT], TEXT
    of the message or of an encapsulated message/rfc822 part, MIME headers of a part, or a
    part's body."""
    if not section.part and section.text is None:
        return raw
    if stored is None:
        return b""
    root = stored.root
    path = ".".join(str(p) for p in section.part)
    part = root.section(path) if path else root
    if part is None:
        return b""
    text = section.text
    if text is None:
        return raw[part.body_start:part.end]
    if text == "MIME":
        return raw[part.header_start:part.body_start]
    msg = part
    if section.part:  # HEADER/TEXT of a part: the part must be message/rfc822
        if not part.is_message or not part.children:
            return b""
        msg = part.children[0]
    if text == "TEXT":
        return raw[msg.body_start:msg.end]
    header = raw[msg.header_start:msg.body_start]
    if text == "HEADER":
        return header
    return header_fields(header, section.fields, exclude=text == "HEADER.FIELDS.NOT")


def header_fields(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The fields named (or, with ``exclude``, all others) as written, in order, with the
    empty line that ends a header (RFC 9051 §6.4.5)."""
    wanted = {n.lower() for n in names}
    out: list[bytes] = []
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        keep = (name in wanted) != exclude
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"
