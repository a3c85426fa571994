"""Header blocks: splitting into fields with byte offsets, unfolding, decoding.

RFC 5322 §2.2: a field is ``name ":" value CRLF``; §2.2.3: folded lines continue with WSP;
§4.5 (obsolete syntax): whitespace may precede the colon. Bare LF line ends are accepted, as
are 8-bit bytes (RFC 6532 UTF-8, else a legacy charset). The block ends at the first empty
line, at the first line that is neither a field nor a continuation (the body began without
the empty line RFC 5322 §2.1 requires), or at the end of the part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stalwart_mp.mail.ingest import charsets, rfc2047

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_EOL = re.compile(rb"[\r\n]+")
_NAME_OK = re.compile(rb"[!-9;-~]+")  # RFC 5322 §3.6.8 ftext: printable ASCII except ":"


@dataclass(slots=True)
class Header:
    """One header field. ``value`` is the raw bytes after the colon, still folded, without
    the final line end; ``raw[start:end]`` is the whole field including its line end."""

    name: str
    value: bytes
    start: int
    end: int
    lname: str = field(init=False, repr=False, compare=False)  # compared many times per parse

    def __post_init__(self) -> None:
        self.lname = self.name.lower()

    def unfolded(self) -> bytes:
        return unfold(self.value)

    def text(self) -> str:
        """Unfolded, charset-decoded, stripped; encoded-words left as written."""
        return charsets.decode_header_bytes(unfold(self.value)).strip()

    def decoded(self) -> str:
        """:meth:`text` with RFC 2047 encoded-words decoded (unstructured fields)."""
        return rfc2047.decode_words(self.text())


def unfold(value: bytes) -> bytes:
    """RFC 5322 §2.2.3: remove each line end that is followed by WSP; stray ones become spaces."""
    if b"\n" in value:  # most fields are not folded: no regex pass for them
        value = _FOLD.sub(b"", value)
    if b"\n" in value or b"\r" in value:
        value = _EOL.sub(b" ", value)
    return value


@dataclass(slots=True)
class HeaderBlock:
    headers: list[Header]
    body_start: int  # first byte after the block (after the empty line, if there was one)


def split_headers(raw: bytes, start: int, end: int, max_bytes: int) -> HeaderBlock:
    """Split the header block of ``raw[start:end]``.

    Fields past ``max_bytes`` of the block are not indexed; the block still extends to the
    next empty line so the body offsets stay right.
    """
    headers: list[Header] = []
    pos = start
    limit = min(end, start + max_bytes)
    # the open field: [field_start, value_start, value_end, line_end) and its name
    open_name: str | None = None
    field_start = value_start = value_end = field_end = start
    body_start = end
    while pos < end:
        if pos >= limit:  # over the cap: skip to the empty line, index nothing more
            body_start = _skip_to_blank_line(raw, pos, end)
            open_name = None  # the cut field may be incomplete: drop it
            break
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        content_end = nl if nl >= 0 else end
        if content_end > pos and raw[content_end - 1] == 0x0D:
            content_end -= 1
        if content_end == pos:  # the empty line ends the block (RFC 5322 §2.1)
            body_start = line_end
            break
        first = raw[pos]
        if first in (0x20, 0x09) and open_name is not None:  # RFC 5322 §2.2.3 continuation
            value_end, field_end = content_end, line_end
            pos = line_end
            continue
        colon = raw.find(b":", pos, content_end)
        name = raw[pos:colon].rstrip(b" \t") if colon > 0 else b""
        if name and _NAME_OK.fullmatch(name):
            if open_name is not None:
                headers.append(
                    Header(open_name, raw[value_start:value_end], field_start, field_end)
                )
            open_name = name.decode("ascii")
            field_start, value_start, value_end, field_end = pos, colon + 1, content_end, line_end
        elif pos == start and start == 0 and raw.startswith(b"From ", pos):
            pass  # an mbox "From " separator line before the first field
        else:  # not a field: the body started without an empty line
            body_start = pos
            break
        pos = line_end
    if open_name is not None:
        headers.append(Header(open_name, raw[value_start:value_end], field_start, field_end))
    return HeaderBlock(headers, body_start)


def _skip_to_blank_line(raw: bytes, pos: int, end: int) -> int:
    best = end
    for sep in (b"\n\n", b"\n\r\n"):
        found = raw.find(sep, pos - 1 if pos > 0 else pos, end)
        if 0 <= found < best:
            best = found + len(sep)
    return best


def header_fields(
    raw: bytes, index: list[tuple[str, int, int]], names: list[str], *, exclude: bool = False
) -> bytes:
    """BODY[HEADER.FIELDS (names)] or, with ``exclude``, HEADER.FIELDS.NOT (RFC 9051 §6.4.5):
    the matching fields as written, in message order, sliced from ``raw`` by a header index of
    (lower-case name, start, end). The caller adds the empty line that ends the block."""
    wanted = {name.lower() for name in names}
    return b"".join(
        raw[start:end] for lname, start, end in index if (lname in wanted) != exclude
    )
