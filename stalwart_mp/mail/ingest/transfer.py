"""Content-Transfer-Encoding decoding (RFC 2045 §6) and charset decoding of part bodies.

base64 is decoded leniently (RFC 2045 §6.8: characters outside the alphabet are ignored; a
truncated final quantum is completed), quoted-printable per RFC 2045 §6.7 (invalid "="
sequences are kept as they are); 7bit, 8bit, binary and unknown encodings are passed through.
"""

from __future__ import annotations

import binascii
import re

from stalwart_mp.mail.ingest import charsets
from stalwart_mp.mail.ingest.mime import Part

_B64_KEEP = bytes(
    b for b in range(256) if not (chr(b).isascii() and (chr(b).isalnum() or chr(b) in "+/"))
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)


def decode_base64(data: bytes) -> bytes:
    data = data.translate(None, _B64_KEEP)
    rem = len(data) % 4
    if rem == 1:  # one stray character cannot carry a byte
        data = data[:-1]
    elif rem:
        data += b"=" * (4 - rem)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


def decode_body(raw: bytes, part: Part, limit: int | None = None) -> bytes:
    """The part's body with its transfer encoding removed (what IMAP BINARY[] returns,
    RFC 3516). ``limit`` caps how many raw body bytes are read (for previews)."""
    end = part.end if limit is None else min(part.end, part.body_start + limit)
    body = raw[part.body_start : end]
    encoding = part.encoding
    if encoding == "base64":
        return decode_base64(body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def html_charset(data: bytes) -> str | None:
    """A charset declared by an HTML <meta> element in the first 2 KiB (HTML §4.2.5.5)."""
    match = _META_CHARSET.search(data, 0, 2048)
    return match.group(1).decode("ascii") if match else None


def decoded_text(raw: bytes, part: Part, limit: int | None = None) -> str:
    """The part's body as text: transfer-decoded, then charset-decoded with fallbacks."""
    data = decode_body(raw, part, limit)
    charset = part.charset
    if charset is None and part.subtype == "html":
        charset = html_charset(data)
    text = charsets.decode(data, charset)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text
