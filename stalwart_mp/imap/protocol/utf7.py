"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3), for IMAP4rev1 clients that did not
enable UTF-8 (RFC 9051 §5.1: IMAP4rev2 and UTF8=ACCEPT clients get UTF-8 as it is)."""
from __future__ import annotations

import base64


class Utf7Error(ValueError):
    """A name that is not valid modified UTF-7."""


def encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7E:
                raise Utf7Error(f"{name!r}: 8-bit character in a modified UTF-7 name")
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise Utf7Error(f"{name!r}: unterminated '&' shift")
        chunk = name[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise Utf7Error(f"{name!r}: bad modified base64 {chunk!r}") from exc
        i = end + 1
    return "".join(out)
