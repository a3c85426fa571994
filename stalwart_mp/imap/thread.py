"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3) over the search engine's
result, from the parsed metadata stored at ingest (message ids, references, sent date and
base subject): no message is parsed again."""
from __future__ import annotations

import msgpack

from stalwart_mp.imap.protocol import commands as c
from stalwart_mp.imap.protocol import writer as w
from stalwart_mp.imap.session import No
from stalwart_mp.mail import keys
from stalwart_mp.mail import search as s
from stalwart_mp.mail.ingest import normalize_id
from stalwart_mp.mail.search_filters import base_subject, sent_at

Node = tuple[int | None, list]  # (message number or None for a placeholder, children)


class _Msg:
    __slots__ = ("base", "date", "id", "number", "parents")

    def __init__(self, number: int, meta: dict, received: float):
        self.number = number
        self.date = sent_at(meta) or received     # RFC 5256 §2.2 sent date
        self.base = base_subject(meta).casefold()
        self.id = normalize_id(meta.get("m") or "") or f"<unique-{number}>"
        refs = [normalize_id(r) for r in meta.get("r", [])]
        if not refs:  # §3 (A): In-Reply-To when there are no References
            refs = [normalize_id(r) for r in meta.get("i", [])[:1]]
        self.parents = [r for r in refs if r]


async def cmd_thread(session, cmd: c.Search):
    from stalwart_mp.imap.search import _CHARSETS, _Builder

    if cmd.algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise No(f"Unknown threading algorithm {cmd.algorithm}", status="BAD")
    if cmd.charset not in _CHARSETS:
        raise No(f"Charset {cmd.charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")
    sel = session.selected
    services = session.services
    from stalwart_mp.imap.search_fresh import widen

    builder = _Builder(session, sel)
    await builder.prepare(cmd.key)
    filt = await widen(services, sel.acct, builder.build(cmd.key))
    try:
        ids = await s.query(services.mail, sel.acct, filt,
                            fts=session.server.fts(), mailbox=sel.mid,
                            blob_reader=services.blobs.get)
    except s.SearchError as exc:
        raise No(str(exc), "CANNOT") from None
    ids = [e for e in ids if e in sel.uid_of]
    raws = await services.mail.data.get_many([keys.metadata(sel.acct, e) for e in ids])
    emails = await services.mail.emails(sel.acct, ids)
    msgs = []
    for eid, raw, email in zip(ids, raws, emails, strict=True):
        if raw is None or email is None:
            continue
        uid = sel.uid_of[eid]
        msgs.append(_Msg(uid if cmd.uid else sel.seq(uid),
                         msgpack.unpackb(raw, strict_map_key=False), email.received_at))
    roots = ordered_subject(msgs) if cmd.algorithm == "ORDEREDSUBJECT" else references(msgs)
    session.out(w.untagged("THREAD " + "".join(f"({_fmt(r)})" for r in roots)).rstrip(b" \r\n")
                + b"\r\n")
    return "THREAD completed"


def ordered_subject(msgs: list[_Msg]) -> list[Node]:
    """RFC 5256 §3 ORDEREDSUBJECT: sorted by base subject then date; each subject is a
    thread whose first message is the parent of all the others."""
    groups: dict[str, list[_Msg]] = {}
    for m in sorted(msgs, key=lambda m: (m.base, m.date, m.number)):
        groups.setdefault(m.base, []).append(m)
    roots = [(g[0].number, [(m.number, []) for m in g[1:]], g[0].date) for g in groups.values()]
    roots.sort(key=lambda r: (r[2], r[0]))
    return [(n, kids) for n, kids, _ in roots]


def references(msgs: list[_Msg]) -> list[Node]:
    """RFC 5256 §3 REFERENCES, steps 1-4: link by References/In-Reply-To, prune empty
    containers (promoting their children), sort siblings by date; then step 5 merges
    root threads that share a base subject."""
    containers: dict[str, dict] = {}

    def container(mid: str) -> dict:
        if mid not in containers:
            containers[mid] = {"msg": None, "parent": None, "children": []}
        return containers[mid]

    def ancestor(a: dict, b: dict) -> bool:
        while b is not None:
            if b is a:
                return True
            b = b["parent"]
        return False

    def link(parent: dict, child: dict) -> None:
        if child["parent"] is parent or ancestor(child, parent):
            return
        if child["parent"] is not None:
            child["parent"]["children"].remove(child)
        child["parent"] = parent
        parent["children"].append(child)

    for m in msgs:
        this = container(m.id)
        if this["msg"] is not None:  # duplicate Message-ID: its own container (§3 1A)
            this = container(f"<dup-{m.number}>")
        this["msg"] = m
        prev = None
        for ref in m.parents:
            cur = container(ref)
            if prev is not None and cur["parent"] is None:
                link(prev, cur)
            prev = cur
        if prev is not None and prev is not this:
            link(prev, this)
    roots = [ct for ct in containers.values() if ct["parent"] is None]

    def prune(ct: dict) -> list[dict]:
        kids = []
        for child in ct["children"]:
            kids += prune(child)
        ct["children"] = kids
        for k in kids:
            k["parent"] = ct
        if ct["msg"] is None:
            if not kids:
                return []
            if len(kids) == 1 or ct["parent"] is not None:
                return kids
        return [ct]

    pruned: list[dict] = []
    for r in roots:
        for ct in prune(r):
            ct["parent"] = None
            pruned.append(ct)

    def date(ct: dict) -> float:
        if ct["msg"] is not None:
            return ct["msg"].date
        return min((date(k) for k in ct["children"]), default=0.0)

    def to_node(ct: dict) -> Node:
        kids = sorted(ct["children"], key=lambda k: (date(k), _first(k)))
        return (ct["msg"].number if ct["msg"] else None, [to_node(k) for k in kids])

    def _first(ct: dict) -> int:
        return ct["msg"].number if ct["msg"] else min((_first(k) for k in ct["children"]),
                                                       default=0)

    # step 5: root threads with the same base subject are gathered
    by_subject: dict[str, dict] = {}
    merged: list[dict] = []
    for ct in sorted(pruned, key=lambda k: (date(k), _first(k))):
        subject = (ct["msg"] or _first_msg(ct)).base if (ct["msg"] or _first_msg(ct)) else ""
        other = by_subject.get(subject) if subject else None
        if other is None:
            if subject:
                by_subject[subject] = ct
            merged.append(ct)
            continue
        if other["msg"] is None:
            other["children"].append(ct)
        else:
            holder = {"msg": None, "parent": None, "children": [other, ct]}
            merged[merged.index(other)] = holder
            by_subject[subject] = holder
    return [to_node(ct) for ct in sorted(merged, key=lambda k: (date(k), _first(k)))]


def _first_msg(ct: dict):
    if ct["msg"] is not None:
        return ct["msg"]
    for k in ct["children"]:
        m = _first_msg(k)
        if m is not None:
            return m
    return None


def _fmt(node: Node) -> str:
    """RFC 5256 §4 thread-list: "a b c" for a chain, "a (b)(c)" for siblings."""
    number, kids = node
    parts = [] if number is None else [str(number)]
    while len(kids) == 1 and number is not None:
        number, kids = kids[0]
        if number is None:
            break
        parts.append(str(number))
    if number is None and not parts:
        return "".join(f"({_fmt(k)})" for k in kids)
    text = " ".join(parts)
    if kids:
        text += " " + "".join(f"({_fmt(k)})" for k in kids)
    return text
