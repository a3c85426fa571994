"""MIME parameterised header values: Content-Type (RFC 2045 §5.1), Content-Disposition
(RFC 2183), with RFC 2231 continuations, charsets and languages.

Lenient: comments (RFC 2045 §5.1, RFC 5322 §3.2.2) are dropped, unterminated quotes run to the
end, unquoted values with spaces are taken up to the next ";", keys are lower-cased, the first
occurrence of a repeated key wins, and encoded-words inside values (not allowed by RFC 2047 §5,
common for file names) are decoded.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from stalwart_mp.mail.ingest import charsets, rfc2047


def _strip_comments(text: str) -> str:
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
            if depth == 0:
                out.append(ch)
            continue
        if quoted:
            if ch == '"':
                quoted = False
            out.append(ch)
        elif ch == '"' and depth == 0:
            quoted = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _split_params(text: str) -> list[str]:
    """Split on ";" outside quoted strings."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            buf.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == ";" and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def _unquote(value: str) -> tuple[str, bool]:
    value = value.strip()
    if not value.startswith('"'):
        return value, False
    body = value[1:]
    end = body.rfind('"')
    if end >= 0:
        body = body[:end]
    return re.sub(r"\\(.)", r"\1", body), True


def _rfc2231_key(key: str) -> tuple[str, int, bool] | None:
    """RFC 2231 §3/§4 keys: ``name*`` (extended), ``name*N`` (continuation), ``name*N*``
    (both) → (name, N, extended); None for a plain key."""
    extended = key.endswith("*")
    if extended:
        key = key[:-1]
    name, star, index = key.rpartition("*")
    if star and index.isdigit() and name:
        return name, int(index), extended
    if extended and key:
        return key, 0, True
    return None


def parse_value(text: str) -> tuple[str, dict[str, str]]:
    """``'text/plain; charset="utf-8"'`` → ``("text/plain", {"charset": "utf-8"})``.

    The main value is lower-cased; parameter values are decoded (RFC 2231, RFC 2047)."""
    items = _split_params(_strip_comments(text))
    main = items[0].strip().lower()
    plain: dict[str, str] = {}
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for item in items[1:]:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            continue
        section = _rfc2231_key(key)
        if section is not None:
            name, index, extended = section
            raw_value, _ = _unquote(value)
            sections.setdefault(name, []).append((index, extended, raw_value))
            continue
        unquoted, _ = _unquote(value)
        if key not in plain:
            plain[key] = rfc2047.decode_words(unquoted)
    params: dict[str, str] = {}
    for name, pieces in sections.items():
        params[name] = _join_rfc2231(pieces)
    for key, value in plain.items():
        params.setdefault(key, value)  # RFC 2231 §4: the extended form wins
    return main, params


def _join_rfc2231(pieces: list[tuple[int, bool, str]]) -> str:
    """RFC 2231 §3 (continuations) and §4 (charset'language'%XX) joined and decoded."""
    pieces.sort(key=lambda p: p[0])
    charset: str | None = None
    data = bytearray()
    seen: set[int] = set()
    for position, (index, extended, value) in enumerate(pieces):
        if index in seen:
            continue
        seen.add(index)
        if extended:
            if position == 0 and value.count("'") >= 2:
                charset, _lang, value = value.split("'", 2)
            data += unquote_to_bytes(value)
        else:
            data += value.encode("utf-8")
    return charsets.decode(bytes(data), charset or "utf-8")
