"""SMTP envelope paths and xtext (pure functions).

RFC 5321 §4.1.2 (Path, Mailbox, Local-part, Domain, address-literal), §4.1.1.3 ("<Postmaster>"
without a domain), §4.5.3.1.1-3 (64 / 255 / 256 octet limits); RFC 6531 §3.3 (UTF-8 in
local parts and domains when SMTPUTF8 is in use); RFC 3461 §4 (xtext).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3 (including "<" ">" and separators)

# RFC 5321 §4.1.2 atext (RFC 5322 §3.2.3); RFC 6531 §3.3 adds UTF8-non-ascii (any char >= 0x80).
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING_ASCII = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*\Z")
# Quoted-string: qtextSMTP = %d32-33 / %d35-91 / %d93-126, quoted-pairSMTP = "\" %d32-126.
_QUOTED_ASCII = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"\Z')
# sub-domain = Let-dig [Ldh-str]; RFC 6531 §3.3 allows U-labels.
_LABEL_ASCII = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_LABEL_UTF8 = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN_ASCII = re.compile(rf"{_LABEL_ASCII}(?:\.{_LABEL_ASCII})*\Z")
_DOMAIN_UTF8 = re.compile(rf"{_LABEL_UTF8}(?:\.{_LABEL_UTF8})*\Z")
# address-literal: IPv4, "IPv6:" and General-address-literal (Standardized-tag ":" dcontent).
_IPV4 = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}"
_ADDRESS_LITERAL = re.compile(
    rf"\[(?:{_IPV4}|[Ii][Pp][Vv]6:[0-9A-Fa-f:.]+|[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+)\]\Z")
# A-d-l (source route) = At-domain *( "," At-domain ) ":" — RFC 5321 §4.1.2; ignored (§C).
_SOURCE_ROUTE = re.compile(r"@[^,:]+(?:,@[^,:]+)*:")


class AddressError(ValueError):
    """The path is malformed; ``non_ascii`` says it is only wrong because SMTPUTF8 is off."""

    def __init__(self, message: str, *, non_ascii: bool = False, too_long: bool = False):
        super().__init__(message)
        self.non_ascii = non_ascii
        self.too_long = too_long


@dataclass(slots=True, frozen=True)
class Path:
    """A parsed reverse-path or forward-path: ``address`` is "local@domain" as sent (quoted
    local parts keep their quotes), "" for the null reverse-path "<>", and "postmaster" alone
    for the special RCPT TO:<Postmaster> (RFC 5321 §4.1.1.3)."""

    address: str
    local: str
    domain: str


def split_path(text: str) -> tuple[str, str]:
    """Split "<path> params" into the bracketed path and the rest. The path ends at the first
    ">" outside a quoted string (quoted local parts may contain ">" and spaces)."""
    if not text.startswith("<"):
        raise AddressError("path must be enclosed in <>")
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return text[: i + 1], text[i + 1:]
    raise AddressError("path is missing its closing >")


def parse_path(path: str, *, utf8: bool, allow_null: bool,
               allow_postmaster: bool) -> Path:
    """Parse "<...>" per RFC 5321 §4.1.2. ``utf8``: SMTPUTF8 is in effect (RFC 6531 §3.3)."""
    if len(path.encode("utf-8")) > MAX_PATH:
        raise AddressError(f"path is longer than {MAX_PATH} octets", too_long=True)
    if len(path) < 2 or path[0] != "<" or path[-1] != ">":
        raise AddressError("path must be enclosed in <>")
    inner = path[1:-1]
    if inner == "":
        if allow_null:
            return Path("", "", "")
        raise AddressError("null path <> is only allowed as the reverse-path")
    if inner.startswith("@"):
        route = _SOURCE_ROUTE.match(inner)
        if route is None:
            raise AddressError("malformed source route")
        inner = inner[route.end():]  # RFC 5321 §4.1.2 / Appendix C: MUST ignore the route
    if allow_postmaster and inner.lower() == "postmaster":
        return Path("postmaster", "postmaster", "")
    at = inner.rfind("@")
    if at <= 0:
        raise AddressError("mailbox must be local-part@domain")
    local, domain = inner[:at], inner[at + 1:]
    non_ascii = not inner.isascii()
    if non_ascii and not utf8:
        if _valid(local, domain, utf8=True):
            raise AddressError("non-ASCII address without SMTPUTF8", non_ascii=True)
        raise AddressError("invalid mailbox syntax")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError(f"local part is longer than {MAX_LOCAL_PART} octets", too_long=True)
    if len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError(f"domain is longer than {MAX_DOMAIN} octets", too_long=True)
    if not _valid(local, domain, utf8=utf8):
        raise AddressError("invalid mailbox syntax")
    return Path(inner, local, domain)


def _valid(local: str, domain: str, *, utf8: bool) -> bool:
    dot, quoted, dom = ((_DOT_STRING_UTF8, _QUOTED_UTF8, _DOMAIN_UTF8) if utf8
                        else (_DOT_STRING_ASCII, _QUOTED_ASCII, _DOMAIN_ASCII))
    if not (dot.match(local) or quoted.match(local)):
        return False
    return bool(dom.match(domain) or _ADDRESS_LITERAL.match(domain))


def is_domain_or_literal(name: str) -> bool:
    """RFC 5321 §4.1.1.1: the EHLO/HELO argument is a Domain or an address-literal."""
    return bool(_DOMAIN_UTF8.match(name) or _ADDRESS_LITERAL.match(name))


def decode_xtext(value: str) -> str:
    """RFC 3461 §4: xtext = *( xchar / hexchar ); xchar is "!".."~" except "+" and "=";
    hexchar = "+" 2HEXDIG (upper case)."""
    out = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "+":
            hexpair = value[i + 1: i + 3]
            if len(hexpair) != 2 or any(c not in "0123456789ABCDEF" for c in hexpair):
                raise ValueError(f"bad xtext escape at offset {i} in {value!r}")
            out.append(int(hexpair, 16))
            i += 3
            continue
        if not ("!" <= ch <= "~") or ch == "=":
            raise ValueError(f"character {ch!r} is not allowed in xtext")
        out.append(ord(ch))
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("xtext does not decode to UTF-8") from exc
