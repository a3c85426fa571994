"""Address lists (RFC 5322 §3.4), including groups and the obsolete syntax of §4.4
(routes, missing commas, empty list elements, "Name" comments after a bare address).

An :class:`Address` follows the IMAP address structure (RFC 9051 §7.5.2, "address"): a group
starts with ``Address(None, group_name, None)`` and ends with ``Address(None, None, None)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from stalwart_mp.mail.ingest import rfc2047

_SPECIALS = frozenset('()<>:;@,"[\\')


@dataclass(slots=True)
class Address:
    name: str | None  # display name, RFC 2047-decoded
    mailbox: str | None  # local part (group name for a group start)
    host: str | None  # domain; "" when the address had none; None only for group markers
    route: str | None = None  # obsolete source route (RFC 5322 §4.4 obs-route), e.g. "@a,@b"
    raw_name: str | None = None  # display name as written (encoded-words intact) when different

    @property
    def is_group_start(self) -> bool:
        return self.host is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.host is None and self.mailbox is None

    @property
    def email(self) -> str:
        if self.host is None:
            return ""
        return f"{self.mailbox}@{self.host}" if self.host else (self.mailbox or "")

    def display(self) -> str:
        """``Name <mailbox@host>`` (or the bare address) for search indexes and logs."""
        if self.is_group_start:
            return f"{self.mailbox}:"
        if self.is_group_end:
            return ";"
        return f"{self.name} <{self.email}>" if self.name else self.email


# token kinds
_ATOM, _QUOTED, _COMMENT, _SPACE, _LITERAL = "a", "q", "c", " ", "l"


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            tokens.append((_SPACE, " "))
            i = j
        elif ch == '"':  # RFC 5322 §3.2.4 quoted-string
            buf: list[str] = []
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            tokens.append((_QUOTED, "".join(buf)))
            i += 1
        elif ch == "(":  # RFC 5322 §3.2.2 comment, nested
            depth, j = 1, i + 1
            buf = []
            while j < n and depth:
                c = text[j]
                if c == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                depth += (c == "(") - (c == ")")
                if depth:
                    buf.append(c)
                j += 1
            tokens.append((_COMMENT, "".join(buf)))
            i = j
        elif ch == "[":  # RFC 5322 §3.4.1 domain-literal
            j = text.find("]", i)
            j = n if j < 0 else j + 1
            tokens.append((_LITERAL, text[i:j]))
            i = j
        elif ch in _SPECIALS:
            tokens.append((ch, ch))
            i += 1
        else:
            j = i + 1
            while j < n and text[j] not in _SPECIALS and text[j] not in " \t\r\n":
                j += 1
            tokens.append((_ATOM, text[i:j]))
            i = j
    return tokens


def _phrase(tokens: list[tuple[str, str]]) -> str:
    """Join display-name words with single spaces (RFC 5322 §3.2.5 phrase, obs-phrase)."""
    out: list[str] = []
    space = False
    for kind, text in tokens:
        if kind == _SPACE:
            space = True
            continue
        if kind == _COMMENT:
            continue
        if out and space:
            out.append(" ")
        out.append(text)
        space = False
    return "".join(out).strip()


def _addr_spec(tokens: list[tuple[str, str]]) -> tuple[str, str]:
    """``local@domain`` from tokens (whitespace and comments dropped, RFC 5322 §4.4)."""
    words = [text for kind, text in tokens if kind not in (_SPACE, _COMMENT)]
    spec = "".join(words)
    local, at, domain = spec.rpartition("@")
    if not at:
        return spec, ""
    return local, domain


def _make(
    name_tokens: list[tuple[str, str]], angle: list[tuple[str, str]] | None
) -> Address | None:
    comments = [text.strip() for kind, text in name_tokens if kind == _COMMENT]
    if angle is not None:
        route = None
        colon = next((i for i, (k, _) in enumerate(angle) if k == ":"), -1)
        if colon >= 0 and angle[0][0] == "@":  # RFC 5322 §4.4 obs-route
            route = "".join(t for k, t in angle[:colon] if k not in (_SPACE, _COMMENT))
            angle = angle[colon + 1 :]
        mailbox, host = _addr_spec(angle)
        raw = _phrase(name_tokens) or None
    else:
        if not any(kind not in (_SPACE, _COMMENT) for kind, _ in name_tokens):
            return None
        words = [t for t in name_tokens if t[0] != _COMMENT]
        if any(k == "@" for k, _ in words):
            mailbox, host = _addr_spec(words)
        else:  # no address at all: keep the words as the mailbox
            mailbox, host = _phrase(words), ""
        route = None
        tail = [t for t in name_tokens if t[0] != _SPACE]
        # "a@b (Name)": a trailing comment is the display name (RFC 5322 §3.4 legacy form)
        raw = comments[-1] if tail[-1][0] == _COMMENT and comments[-1] else None
    name = rfc2047.decode_words(raw) if raw else None
    return Address(name, mailbox, host, route, raw if raw != name else None)


def parse_address_list(text: str) -> list[Address]:
    """Parse an address-list (RFC 5322 §3.4) from unfolded, charset-decoded header text."""
    result: list[Address] = []
    tokens = _tokenize(text)
    current: list[tuple[str, str]] = []
    angle: list[tuple[str, str]] | None = None
    in_group = False
    i, n = 0, len(tokens)

    def flush() -> None:
        nonlocal current, angle
        address = _make(current, angle)
        if address is not None:
            result.append(address)
        current, angle = [], None

    while i < n:
        kind, text_ = tokens[i]
        if kind == "<":
            j = i + 1
            while j < n and tokens[j][0] != ">":
                j += 1
            if angle is not None:  # a second <...> without a comma: obsolete, split here
                flush()
            angle = tokens[i + 1 : j]
            i = j + 1
            continue
        if kind == ">":
            i += 1
            continue
        if kind == ":" and angle is None and not in_group:  # RFC 5322 §3.4 group
            result.append(Address(None, rfc2047.decode_words(_phrase(current)), None))
            current = []
            in_group = True
        elif kind == ",":
            flush()
        elif kind == ";":
            flush()
            if in_group:
                result.append(Address(None, None, None))
                in_group = False
        elif angle is not None and kind not in (_SPACE, _COMMENT):
            flush()  # text after "<...>" without a comma: a new address (obsolete syntax)
            current.append((kind, text_))
        else:
            current.append((kind, text_))
        i += 1
    flush()
    if in_group:
        result.append(Address(None, None, None))
    return result
