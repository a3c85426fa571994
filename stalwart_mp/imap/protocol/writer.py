"""IMAP response writer (RFC 9051 §7, §4.3): Python values to exact wire bytes.

``encode(value)`` serializes nested data the mail model produces (ENVELOPE,
BODYSTRUCTURE trees): ``None`` → NIL, ``int`` → number, ``str`` → quoted string when it is
short and safe, else a literal (RFC 9051 §4.3: CR, LF, NUL or 8-bit text need a literal
unless UTF-8 was enabled, when 8-bit text may be quoted, RFC 9051 §4.3.1), ``bytes`` → always
a literal, ``list`` → parenthesized list, ``Atom`` → as is. Mailbox names go through
``mailbox_name`` (modified UTF-7 for IMAP4rev1 clients, RFC 3501 §5.1.3).
"""
from __future__ import annotations

import re

from stalwart_mp.imap.protocol import utf7

_MAX_QUOTED = 1000


class Atom(str):
    """Written as is (flags, keywords, NIL-free atoms, response codes)."""

    __slots__ = ()


class Raw(bytes):
    """Already in wire form (pre-encoded values such as a cached flag list)."""

    __slots__ = ()


class Literal8(bytes):
    """A binary literal ``~{n}`` (RFC 3516 §4.2, BINARY content with NUL)."""

    __slots__ = ()


def quoted_ok(data: bytes, utf8: bool) -> bool:
    if len(data) > _MAX_QUOTED:
        return False
    for b in data:
        if b in (0, 10, 13) or (b > 0x7F and not utf8):
            return False
    return True


def string(value: str | bytes, utf8: bool = False) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if isinstance(value, str) and quoted_ok(raw, utf8):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(raw)


_ATOM_SAFE = re.compile(r"[!#$&'+-\[^-~]+\Z")  # ATOM-CHARs (no specials, no "]" "%" "*")


def astring(value: str, utf8: bool = False) -> Raw | Atom:
    """An astring as an atom when it can be one (``alice``), else a string (RFC 9051 §9);
    some clients read identifiers in ACL responses only as atoms."""
    if value and _ATOM_SAFE.match(value) and value.upper() != "NIL":
        return Atom(value)
    return Raw(string(value, utf8))


def literal(raw: bytes) -> bytes:
    return b"{%d}\r\n" % len(raw) + raw


def encode(value: object, utf8: bool = False) -> bytes:
    if value is None:
        return b"NIL"
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, Atom):
        return value.encode("utf-8")
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, Literal8):
        return b"~{%d}\r\n" % len(value) + bytes(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return literal(bytes(value))
    if isinstance(value, str):
        return string(value, utf8)
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(encode(v, utf8) for v in value) + b")"
    raise TypeError(f"cannot write {type(value).__name__} in an IMAP response")


def mailbox_name(name: str, utf8: bool) -> bytes:
    """A mailbox name as a string: UTF-8 when enabled (RFC 9051 §5.1), else modified UTF-7
    (RFC 3501 §5.1.3). "INBOX" is always written in capitals."""
    return string(name if utf8 else utf7.encode(name), utf8)


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    """``tag OK|NO|BAD [code] text`` (RFC 9051 §7.1)."""
    return _status(tag, status, text, code)


def untagged(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return b"* " + raw + b"\r\n"


def status(status: str, text: str, code: str | None = None) -> bytes:
    return _status("*", status, text, code)


def continuation(text: str | bytes = "Ready") -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return b"+ " + raw + b"\r\n"


def _status(tag: str, status: str, text: str, code: str | None) -> bytes:
    text = text.replace("\r", " ").replace("\n", " ") or status
    head = f"{tag} {status} "
    if code:
        head += f"[{code}] "
    return (head + text).encode("utf-8") + b"\r\n"


def fetch(seq: int, items: list[tuple[str, object]], utf8: bool = False) -> bytes:
    """``* n FETCH (name value ...)`` (RFC 9051 §7.5.2)."""
    body = b" ".join(name.encode() + b" " + encode(value, utf8) for name, value in items)
    return b"* %d FETCH (" % seq + body + b")\r\n"


def sequence_set(numbers: list[int]) -> str:
    """Ascending numbers as a compact sequence set ("1:3,5")."""
    out: list[str] = []
    start = prev = None
    for n in sorted(set(numbers)):
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            out.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = n
    if start is not None:
        out.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(out)
