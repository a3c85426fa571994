"""``parse_message``: everything IMAP, POP3 and JMAP need from a message, parsed once at
delivery (docs/architecture.md, "Layers": one mailbox model)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stalwart_mp.mail.ingest import charsets
from stalwart_mp.mail.ingest.addresses import Address
from stalwart_mp.mail.ingest.bodyparts import BodyParts, classify
from stalwart_mp.mail.ingest.dates import parse_date
from stalwart_mp.mail.ingest.envelope import Envelope, build_envelope, first_header
from stalwart_mp.mail.ingest.headers import Header, header_fields
from stalwart_mp.mail.ingest.mime import Part, parse_tree
from stalwart_mp.mail.ingest.preview import PREVIEW_CHARS, collapse, html_to_text, make_preview
from stalwart_mp.mail.ingest.thread import base_subject, id_list, normalize_id
from stalwart_mp.mail.ingest.transfer import decode_body, decoded_text

ATTACHMENT_TEXT_LIMIT = 1 << 20  # raw bytes of a text attachment read for the search index


@dataclass(slots=True)
class ParsedMessage:
    size: int
    headers: list[Header]
    root: Part
    envelope: Envelope
    sent_at: float | None
    subject: str
    base_subject: str
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    preview: str
    attachments: list[str]
    has_attachment: bool
    text_for_search: dict[str, str | list[str]] = field(default_factory=dict)

    def header_values(self, name: str) -> list[str]:
        """Decoded (unfolded, RFC 2047) values of every top-level field called ``name``."""
        lname = name.lower()
        return [h.decoded() for h in self.headers if h.lname == lname]

    @property
    def header_index(self) -> list[tuple[str, int, int]]:
        """(lower-case name, start, end) of each top-level field: ``raw[start:end]`` is the
        field with its line end, for BODY[HEADER.FIELDS (...)] (RFC 9051 §6.4.5)."""
        return [(h.lname, h.start, h.end) for h in self.headers]

    def header_fields(self, raw: bytes, names: list[str], *, exclude: bool = False) -> bytes:
        return header_fields(raw, self.header_index, names, exclude=exclude)


def header_envelope(raw: bytes, max_header_bytes: int = 1 << 20) -> Envelope:
    """The ENVELOPE of ``raw`` from its top-level header block alone, without the MIME walk
    (the MX's DMARC check needs only the From domain; delivery parses the whole message)."""
    from stalwart_mp.mail.ingest.headers import split_headers

    return build_envelope(split_headers(raw, 0, len(raw), max_header_bytes).headers)


def parse_message(
    raw: bytes,
    *,
    max_parts: int = 10_000,
    max_depth: int = 50,
    max_header_bytes: int = 1 << 20,
    search_text: bool = True,
) -> ParsedMessage:
    """Parse ``raw`` once. Never raises on malformed input; limits bound the work.

    ``search_text=False`` leaves ``text_for_search`` empty: callers that only store the
    record (``to_record`` does not keep it) skip decoding every text part and attachment;
    the full-text indexer parses with it."""
    root = parse_tree(
        raw, max_parts=max_parts, max_depth=max_depth, max_header_bytes=max_header_bytes
    )
    headers = root.headers
    envelope = build_envelope(headers)
    subject = envelope.subject or ""
    in_reply_to = first_header(headers, "in-reply-to")
    references = first_header(headers, "references")
    bodies = classify(root)
    texts = _Texts(raw)
    preview_part = next(
        (p for p in bodies.text_body + bodies.html_body if p.content_type == "text"), None
    )
    preview = _preview(texts, preview_part) if preview_part is not None else ""
    names = [p.filename for p in bodies.attachments if p.filename is not None]
    parsed = ParsedMessage(
        size=len(raw),
        headers=headers,
        root=root,
        envelope=envelope,
        sent_at=parse_date(envelope.date) if envelope.date else None,
        subject=subject,
        base_subject=base_subject(subject),
        message_id=normalize_id(envelope.message_id) if envelope.message_id else None,
        in_reply_to=id_list(in_reply_to.text()) if in_reply_to else [],
        references=id_list(references.text()) if references else [],
        preview=preview,
        attachments=names,
        has_attachment=any(_is_real_attachment(p) for p in bodies.attachments),
    )
    if search_text:
        parsed.text_for_search = _search_fields(envelope, subject, bodies, texts, names)
    return parsed


# A long text/plain part is decoded from this many raw bytes for its preview (see _preview).
PREVIEW_HEAD_BYTES = 4096
_NOT_LINE_SAFE = ("utf-16", "utf_16", "utf-32", "utf_32")   # a LF byte may be half a unit


def _preview(texts: _Texts, part: Part) -> str:
    """The preview (RFC 8621 §4.1.4) of the chosen body part.

    A long text/plain part is decoded from a head of whole lines only, which is a prefix of
    the whole text; once a prefix of that collapses to more than the preview's length, its
    first characters are the whole text's (make_preview's own argument), so decoding the
    rest of a large body would change nothing. HTML is always decoded whole (a tag may span
    the cut)."""
    if part.subtype != "html" and part.end - part.body_start > PREVIEW_HEAD_BYTES:
        head = texts.head(part, PREVIEW_HEAD_BYTES)
        size = 2 * PREVIEW_CHARS
        while head:
            collapsed = collapse(head[:size])
            if len(collapsed) > PREVIEW_CHARS:
                return collapsed[:PREVIEW_CHARS].rstrip()   # as make_preview ends
            if size >= len(head):
                break   # mostly whitespace: decode it all
            size *= 4
    return make_preview(texts.of(part))


def _is_real_attachment(part: Part) -> bool:
    """Inline images referenced by Content-ID (multipart/related) do not count for JMAP
    hasAttachment (RFC 8621 §4.1.4 leaves the choice to the server)."""
    inline_media = part.content_type in ("image", "audio", "video")
    return not (inline_media and part.id and part.disposition != "attachment")


class _Texts:
    """Decoded text of body parts, each computed once."""

    __slots__ = ("cache", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.cache: dict[int, str] = {}

    def of(self, part: Part, limit: int | None = None) -> str:
        key = id(part)
        if key not in self.cache:
            text = decoded_text(self.raw, part, limit)
            self.cache[key] = html_to_text(text) if part.subtype == "html" else text
        return self.cache[key]

    def head(self, part: Part, limit: int) -> str | None:
        """The decoded text of the whole lines within the part's first ``limit`` raw bytes
        (transfer-decoded: base64 and quoted-printable prefixes decode to a prefix), or
        None where lines cannot be cut safely."""
        codec = charsets.lookup_codec(part.charset)
        if codec is not None and codec.lower().startswith(_NOT_LINE_SAFE):
            return None
        data = decode_body(self.raw, part, limit)
        cut = data.rfind(b"\n")
        if cut < 0:
            return None
        return charsets.decode(data[: cut + 1], part.charset)


def _addresses(addresses: list[Address]) -> list[str]:
    return [a.display() for a in addresses if a.host is not None]


def _search_fields(
    envelope: Envelope, subject: str, bodies: BodyParts, texts: _Texts, names: list[str]
) -> dict[str, str | list[str]]:
    """The full-text store's fields (stalwart_mp.store.fts.FIELDS)."""
    body = "\n".join(texts.of(p) for p in bodies.text_body if p.content_type == "text")
    attachment_text: list[str] = list(names)
    for part in bodies.attachments:
        if part.content_type == "text":
            attachment_text.append(texts.of(part, ATTACHMENT_TEXT_LIMIT))
    fields: dict[str, str | list[str]] = {
        "from": _addresses(envelope.from_),
        "to": _addresses(envelope.to),
        "cc": _addresses(envelope.cc),
        "bcc": _addresses(envelope.bcc),
        "subject": subject,
        "body": body,
        "attachments": attachment_text,
    }
    return fields

