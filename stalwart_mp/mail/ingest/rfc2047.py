"""RFC 2047 encoded-words in header text: ``=?charset[*lang]?B|Q?text?=``.

Lenient where real mail needs it: encoded-words glued to each other or to text without the
whitespace RFC 2047 §5 requires are still decoded; adjacent words in the same charset are joined
at the byte level before decoding (senders split multi-byte characters across words); bad
base64 is repaired or, failing that, the word is kept as written; unknown charsets fall back
through :func:`charsets.decode`.
"""

from __future__ import annotations

import binascii
import re

from stalwart_mp.mail.ingest import charsets

# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_WORD = re.compile(r"=\?([^?\s]{1,75}?)\?([bBqQ])\?([^?]*?)\?=")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def decode_q(text: str) -> bytes:
    """RFC 2047 §4.2: "_" is a space, "=XX" a byte; other bytes literal."""
    data = text.replace("_", " ").encode("utf-8", errors="surrogateescape")
    return _QP_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), data)


def decode_b(text: str) -> bytes | None:
    """RFC 2047 §4.1 base64, repaired: junk dropped, padding fixed. None if hopeless."""
    data = _B64_JUNK.sub(b"", text.encode("ascii", errors="ignore"))
    rem = len(data) % 4
    if rem == 1:
        data = data[:-1]
    elif rem:
        data += b"=" * (4 - rem)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return None


def decode_words(value: str) -> str:
    """Decode every encoded-word in ``value``; text between adjacent words that is only
    whitespace is dropped (RFC 2047 §6.2)."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[bytes] = []  # bytes of consecutive words in pending_charset
    pending_charset = ""
    pos = 0
    last_was_word = False

    def flush() -> None:
        nonlocal pending_charset
        if pending:
            out.append(charsets.decode(b"".join(pending), pending_charset))
            pending.clear()
        pending_charset = ""

    for match in _WORD.finditer(value):
        gap = value[pos : match.start()]
        charset, enc, text = match.group(1), match.group(2), match.group(3)
        data = decode_q(text) if enc in "qQ" else decode_b(text)
        if data is None:  # undecodable: keep the word as written
            flush()
            out.append(gap)
            out.append(match.group(0))
            last_was_word = False
            pos = match.end()
            continue
        if gap and not (last_was_word and gap.isspace()):
            flush()
            out.append(gap)
        charset = charset.split("*", 1)[0].lower()  # RFC 2231 §5 language suffix
        if pending and charset != pending_charset:
            flush()
        pending_charset = charset
        pending.append(data)
        last_was_word = True
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)
