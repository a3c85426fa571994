"""A compact, msgpack-friendly record of a parsed message (short keys, defaults omitted),
stored with the email so FETCH, SEARCH, SORT, THREAD, POP3 and JMAP never parse again.

The record keeps the envelope, the MIME tree (BODYSTRUCTURE data and byte offsets), the
preview, the thread keys, the attachment names and an index of the top-level header fields
(lower-case name, start, end) for BODY[HEADER.FIELDS]. It does not keep header values or the
search text: those are sliced from the blob, or were handed to the full-text store at delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stalwart_mp.mail.ingest.addresses import Address
from stalwart_mp.mail.ingest.envelope import Envelope
from stalwart_mp.mail.ingest.headers import header_fields
from stalwart_mp.mail.ingest.message import ParsedMessage
from stalwart_mp.mail.ingest.mime import Part

FORMAT = 1  # bump when the record layout changes

_ADDRESS_KEYS = (("f", "from_"), ("to", "to"), ("cc", "cc"), ("bc", "bcc"))


@dataclass(slots=True)
class StoredMessage:
    """What :func:`from_record` gives back: the same fields as :class:`ParsedMessage` that
    FETCH and JMAP need, without the parse-only ones (header values, search text)."""

    size: int
    root: Part
    envelope: Envelope
    sent_at: float | None = None
    subject: str = ""
    base_subject: str = ""
    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    preview: str = ""
    attachments: list[str] = field(default_factory=list)
    has_attachment: bool = False
    header_index: list[tuple[str, int, int]] = field(default_factory=list)

    def header_fields(self, raw: bytes, names: list[str], *, exclude: bool = False) -> bytes:
        return header_fields(raw, self.header_index, names, exclude=exclude)


def to_record(parsed: ParsedMessage | StoredMessage) -> dict[str, Any]:
    rec: dict[str, Any] = {"v": FORMAT, "z": parsed.size, "x": _part(parsed.root)}
    env = _envelope(parsed.envelope)
    if env:
        rec["e"] = env
    flat: list[Any] = []
    for lname, start, end in parsed.header_index:
        flat += (lname, start, end)
    if flat:
        rec["h"] = flat
    if parsed.sent_at is not None:  # whole seconds (RFC 5322 §3.3 has no fractions)
        sent = parsed.sent_at
        rec["t"] = int(sent) if sent == int(sent) else sent
    optional = {
        "s": parsed.subject if parsed.subject != (parsed.envelope.subject or "") else "",
        "m": parsed.message_id,
        "i": parsed.in_reply_to,
        "r": parsed.references,
        "p": parsed.preview,
        "a": parsed.attachments,
        "A": parsed.has_attachment,
    }
    rec.update((k, v) for k, v in optional.items() if v)
    if parsed.base_subject != parsed.subject:
        rec["b"] = parsed.base_subject
    return rec


def from_record(rec: dict[str, Any]) -> StoredMessage:
    flat = rec.get("h", [])
    envelope = _unenvelope(rec.get("e", {}))
    subject = rec.get("s", envelope.subject or "")
    return StoredMessage(
        size=rec["z"],
        root=_unpart(rec["x"]),
        envelope=envelope,
        sent_at=float(rec["t"]) if "t" in rec else None,
        subject=subject,
        base_subject=rec.get("b", subject),
        message_id=rec.get("m"),
        in_reply_to=list(rec.get("i", [])),
        references=list(rec.get("r", [])),
        preview=rec.get("p", ""),
        attachments=list(rec.get("a", [])),
        has_attachment=bool(rec.get("A", False)),
        header_index=[(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)],
    )


def _part(part: Part) -> dict[str, Any]:
    rec: dict[str, Any] = {"o": [part.header_start, part.body_start, part.end]}
    if (part.content_type, part.subtype) != ("text", "plain"):
        rec["t"] = part.mime_type
    optional = {
        "p": part.params,
        "i": part.id,
        "d": part.description,
        "D": part.disposition,
        "P": part.disposition_params,
        "l": part.language,
        "L": part.location,
        "5": part.md5,
        "n": part.lines,
    }
    rec.update((k, v) for k, v in optional.items() if v)
    if part.encoding != "7bit":
        rec["c"] = part.encoding
    if part.children:
        rec["k"] = [_part(child) for child in part.children]
    if part.envelope is not None:
        rec["e"] = _envelope(part.envelope)
    return rec


def _unpart(rec: dict[str, Any]) -> Part:
    ctype, _, subtype = rec.get("t", "text/plain").partition("/")
    header_start, body_start, end = rec["o"]
    language = rec.get("l")
    return Part(
        content_type=ctype,
        subtype=subtype,
        params=dict(rec.get("p", {})),
        id=rec.get("i"),
        description=rec.get("d"),
        encoding=rec.get("c", "7bit"),
        disposition=rec.get("D"),
        disposition_params=dict(rec.get("P", {})),
        language=list(language) if language else None,
        location=rec.get("L"),
        md5=rec.get("5"),
        header_start=header_start,
        body_start=body_start,
        end=end,
        lines=rec.get("n", 0),
        children=[_unpart(child) for child in rec.get("k", [])],
        envelope=_unenvelope(rec["e"]) if "e" in rec else None,
    )


def _address(a: Address) -> list[Any]:
    rec = [a.name, a.mailbox, a.host, a.route, a.raw_name]
    while len(rec) > 3 and rec[-1] is None:
        rec.pop()
    return rec


def _unaddress(rec: list[Any]) -> Address:
    return Address(*rec)


def _envelope(env: Envelope) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    if env.date is not None:
        rec["d"] = env.date
    if env.subject_raw is not None:
        rec["S"] = env.subject_raw
        if env.subject is not None and env.subject != env.subject_raw.decode("utf-8", "replace"):
            rec["s"] = env.subject
    for key, attr in _ADDRESS_KEYS:
        addresses = getattr(env, attr)
        if addresses:
            rec[key] = [_address(a) for a in addresses]
    # RFC 9051 §7.5.2: Sender and Reply-To default to From; store them only when they differ
    if env.sender != env.from_:
        rec["se"] = [_address(a) for a in env.sender]
    if env.reply_to != env.from_:
        rec["rt"] = [_address(a) for a in env.reply_to]
    if env.in_reply_to is not None:
        rec["ir"] = env.in_reply_to
    if env.message_id is not None:
        rec["mi"] = env.message_id
    return rec


def _unenvelope(rec: dict[str, Any]) -> Envelope:
    env = Envelope(date=rec.get("d"), in_reply_to=rec.get("ir"), message_id=rec.get("mi"))
    raw_subject = rec.get("S")
    if raw_subject is not None:
        env.subject_raw = bytes(raw_subject)
        env.subject = rec.get("s", env.subject_raw.decode("utf-8", "replace"))
    for key, attr in _ADDRESS_KEYS:
        setattr(env, attr, [_unaddress(a) for a in rec.get(key, [])])
    env.sender = [_unaddress(a) for a in rec["se"]] if "se" in rec else list(env.from_)
    env.reply_to = [_unaddress(a) for a in rec["rt"]] if "rt" in rec else list(env.from_)
    return env
