"""The MIME tree (RFC 2045, RFC 2046) of a message, with exact byte offsets.

Every part records ``header_start``, ``body_start`` and ``end`` in the raw message, so the IMAP
FETCH sections (RFC 9051 §6.4.5) are slices of the stored blob: ``BODY[n.MIME]`` is
``raw[header_start:body_start]`` and ``BODY[n]`` is ``raw[body_start:end]``. The CRLF before a
boundary delimiter belongs to the delimiter (RFC 2046 §5.1.1), not to the part.

Boundaries are found with ``bytes.find`` over the parent's body, parent first, so a child that
lacks its closing delimiter cannot swallow its siblings. A multipart or message/rfc822 part that
cannot be split (no boundary parameter, no delimiter found, or the ``max_depth`` / ``max_parts``
limits reached) gets one opaque text/plain child covering its whole body: every tree stays a
valid BODYSTRUCTURE and no byte of content is lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stalwart_mp.mail.ingest.envelope import Envelope, build_envelope, first_header
from stalwart_mp.mail.ingest.headers import Header, split_headers
from stalwart_mp.mail.ingest.params import parse_value

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 2045 §5.1 token (ASCII subset)
_ENCAPSULATING = ("rfc822", "global")  # message/global: RFC 6532 §3.7


@dataclass(slots=True)
class Part:
    content_type: str = "text"
    subtype: str = "plain"
    params: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    description: str | None = None
    encoding: str = "7bit"
    disposition: str | None = None
    disposition_params: dict[str, str] = field(default_factory=dict)
    language: list[str] | None = None
    location: str | None = None
    md5: str | None = None
    header_start: int = 0
    body_start: int = 0
    end: int = 0
    lines: int = 0
    children: list[Part] = field(default_factory=list)
    envelope: Envelope | None = None
    headers: list[Header] = field(default_factory=list)  # this part's fields (parse only)

    @property
    def mime_type(self) -> str:
        return f"{self.content_type}/{self.subtype}"

    @property
    def size(self) -> int:
        """Body size in octets (RFC 9051 §7.5.2 body-fld-octets)."""
        return self.end - self.body_start

    @property
    def is_multipart(self) -> bool:
        return self.content_type == "multipart"

    @property
    def is_message(self) -> bool:
        return self.content_type == "message" and self.subtype in _ENCAPSULATING

    @property
    def charset(self) -> str | None:
        return self.params.get("charset")

    @property
    def filename(self) -> str | None:
        """RFC 2183 §2.3 filename, else the Content-Type "name" parameter."""
        return self.disposition_params.get("filename") or self.params.get("name") or None

    def walk(self) -> list[Part]:
        """This part and all below it, in document order."""
        out: list[Part] = []
        stack = [self]
        while stack:
            part = stack.pop()
            out.append(part)
            stack.extend(reversed(part.children))
        return out

    def numbered_children(self) -> list[Part]:
        """The parts numbered 1, 2... below this one (RFC 9051 §6.4.5): a multipart's
        children; for message/rfc822, the encapsulated message's parts (its root's children
        when that root is multipart, else the root itself)."""
        if self.is_multipart:
            return self.children
        if self.is_message and self.children:
            inner = self.children[0]
            return inner.children if inner.is_multipart else [inner]
        return []

    def section(self, path: str) -> Part | None:
        """The part for an IMAP section number such as ``"1.2.3"`` when this part is a
        message's root (RFC 9051 §6.4.5: a non-multipart message's body is part 1).
        ``""`` is the root itself. Unknown numbers give None."""
        if not path:
            return self
        candidates = self.children if self.is_multipart else [self]
        part: Part | None = None
        for number in path.split("."):
            if not number.isdigit() or number.startswith("0"):
                return None
            index = int(number) - 1
            if index >= len(candidates):
                return None
            part = candidates[index]
            candidates = part.numbered_children()
        return part


@dataclass(slots=True)
class _Context:
    raw: bytes
    max_parts: int
    max_depth: int
    max_header_bytes: int
    count: int = 0


def parse_tree(
    raw: bytes, *, max_parts: int, max_depth: int, max_header_bytes: int
) -> Part:
    """The MIME tree of ``raw`` (a whole message)."""
    ctx = _Context(raw, max(1, max_parts), max(0, min(max_depth, 200)), max(0, max_header_bytes))
    return _parse_part(ctx, 0, len(raw), 0, digest=False)


def _parse_part(ctx: _Context, start: int, end: int, depth: int, *, digest: bool) -> Part:
    ctx.count += 1
    block = split_headers(ctx.raw, start, end, ctx.max_header_bytes)
    part = _describe(block.headers, digest)
    part.header_start, part.body_start, part.end = start, block.body_start, end
    part.headers = block.headers
    if part.is_multipart:
        boundary = part.params.get("boundary", "")
        can_split = boundary and depth < ctx.max_depth and ctx.count < ctx.max_parts
        if not (can_split and _split_multipart(ctx, part, boundary, depth)):
            part.children = [_opaque(ctx.raw, part)]
    elif part.is_message:
        if depth < ctx.max_depth and ctx.count < ctx.max_parts:
            inner = _parse_part(ctx, part.body_start, end, depth + 1, digest=False)
            part.children = [inner]
            part.envelope = build_envelope(inner.headers)
        else:
            part.children = [_opaque(ctx.raw, part)]
            part.envelope = Envelope()
    if part.content_type in ("text", "message"):
        part.lines = count_lines(ctx.raw, part.body_start, end)
    return part


def count_lines(raw: bytes, start: int, end: int) -> int:
    """Body lines (RFC 9051 §7.5.2 body-fld-lines): line ends, plus an unterminated last line."""
    if end <= start:
        return 0
    lines = raw.count(b"\n", start, end)
    return lines if raw[end - 1] == 0x0A else lines + 1


def _opaque(raw: bytes, parent: Part) -> Part:
    """A header-less text/plain part covering ``parent``'s whole body."""
    start, end = parent.body_start, parent.end
    return Part(header_start=start, body_start=start, end=end, lines=count_lines(raw, start, end))


def _split_multipart(ctx: _Context, part: Part, boundary: str, depth: int) -> bool:
    """RFC 2046 §5.1.1: split ``part``'s body on its boundary. False if no delimiter."""
    raw = ctx.raw
    allowed = max(1, ctx.max_parts - ctx.count)
    segments = _segments(raw, part.body_start, part.end, boundary.encode("utf-8"), allowed + 1)
    if not segments:
        return False
    if len(segments) > allowed:  # max_parts: the rest stays in the last part's body
        segments = segments[:allowed]
        segments[-1] = (segments[-1][0], part.end)
    digest = part.subtype == "digest"  # RFC 2046 §5.1.5: parts default to message/rfc822
    part.children = [
        _parse_part(ctx, seg_start, seg_end, depth + 1, digest=digest)
        for seg_start, seg_end in segments
    ]
    return True


def _segments(
    raw: bytes, start: int, end: int, boundary: bytes, cap: int
) -> list[tuple[int, int]]:
    """(start, end) of each body part between delimiter lines; at most ``cap``."""
    delim = b"--" + boundary
    dlen = len(delim)
    # positions of delimiter lines: (line_start, line_after, is_close)
    lines: list[tuple[int, int, bool]] = []
    line_start = start if raw.startswith(delim, start) else -1
    search_from = start
    while True:
        if line_start < 0:
            found = raw.find(b"\n" + delim, search_from, end)
            if found < 0:
                break
            line_start = found + 1
        tail = line_start + dlen
        if tail > end:
            break
        close = raw.startswith(b"--", tail) and tail + 2 <= end
        after = tail + 2 if close else tail
        eol = raw.find(b"\n", after, min(end, after + 1000))
        rest_end = eol if eol >= 0 else min(end, after + 1000)
        # RFC 2046 §5.1.1: only transport padding (LWSP) may follow the delimiter
        if not raw[after:rest_end].strip(b" \t\r") and (eol >= 0 or rest_end == end):
            line_after = eol + 1 if eol >= 0 else end
            lines.append((line_start, line_after, close))
            if close or len(lines) > cap:
                break
            search_from = line_after - 1 if eol >= 0 else end
        else:
            search_from = tail
        line_start = -1
    segments: list[tuple[int, int]] = []
    for i, (_, line_after, close) in enumerate(lines):
        if close:
            break
        if i + 1 < len(lines):
            seg_end = lines[i + 1][0] - 1  # the LF before the next delimiter...
            if seg_end > line_after and raw[seg_end - 1] == 0x0D:
                seg_end -= 1  # ...and its CR belong to the delimiter
            seg_end = max(seg_end, line_after)
        else:
            seg_end = end  # no closing delimiter: the part runs to the end
        segments.append((line_after, seg_end))
        if len(segments) >= cap:
            break
    return segments


def _describe(headers: list[Header], digest: bool) -> Part:
    """A Part's MIME fields from its header block (RFC 2045 §5-§8, RFC 2183, RFC 3282,
    RFC 2557, RFC 1864)."""
    part = Part()
    if digest:
        part.content_type, part.subtype = "message", "rfc822"
    header = first_header(headers, "content-type")
    if header is not None:
        value, params = parse_value(header.text())
        ctype, slash, subtype = value.partition("/")
        ctype, subtype = ctype.strip(), subtype.strip()
        part.params = params
        # RFC 2045 §5.2: an invalid Content-Type means text/plain (message/rfc822 in digest)
        if slash and _TOKEN.fullmatch(ctype) and _TOKEN.fullmatch(subtype):
            part.content_type, part.subtype = ctype, subtype
    for header in headers:
        lname = header.lname
        if not lname.startswith("content-"):
            continue
        if lname == "content-transfer-encoding" and part.encoding == "7bit":
            value = parse_value(header.text())[0]
            part.encoding = value or "7bit"
        elif lname == "content-disposition" and part.disposition is None:
            value, params = parse_value(header.text())
            part.disposition, part.disposition_params = value or None, params
        elif lname == "content-id" and part.id is None:
            part.id = header.text()
        elif lname == "content-description" and part.description is None:
            part.description = header.text()
        elif lname == "content-language" and part.language is None:
            langs = [lang.strip() for lang in parse_value(header.text())[0].split(",")]
            part.language = [lang for lang in langs if lang] or None
        elif lname == "content-location" and part.location is None:
            part.location = header.text()
        elif lname == "content-md5" and part.md5 is None:
            part.md5 = header.text()
    return part
