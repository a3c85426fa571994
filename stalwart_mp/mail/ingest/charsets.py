"""Decoding bytes in a declared charset, with fallbacks; never raises.

Order (RFC 2045 §5.1 declares the charset; mail in the wild often lies about it):
declared charset (through an alias table) → UTF-8 → the declared charset with replacement
characters → windows-1252 → Latin-1 (which maps every byte).
"""

from __future__ import annotations

import codecs
from functools import lru_cache

# Names seen in mail that Python does not know, or knows as a narrower charset than senders use
# (WHATWG Encoding Standard labels: ISO-8859-1 and US-ASCII are decoded as windows-1252 in
# practice; GB2312/GBK as GB18030; KS C 5601 as windows-949).
_ALIASES: dict[str, str | None] = {
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "ansi_x3.4-1968": "utf-8",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "windows-1252": "cp1252",
    "x-user-defined": "cp1252",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601-1989": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "chinese": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "shift-jis": "cp932",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "macintosh": "mac_roman",
    "x-mac-roman": "mac_roman",
    "unicode-1-1-utf-7": "utf-7",
    "unknown-8bit": None,
    "x-unknown": None,
    "unknown": None,
    "default": None,
    "charset": None,
}

# Python codecs that are text codecs but must never be applied to mail content.
_FORBIDDEN = ("escape", "idna", "punycode", "undefined", "mbcs", "oem", "code_page", "rot")


def _normalise(charset: str) -> str:
    name = charset.strip().strip("\"'").strip().lower()
    # RFC 2231 §5: a language may follow the charset after "*" in encoded-words.
    return name.split("*", 1)[0]


@lru_cache(maxsize=256)
def lookup_codec(charset: str | None) -> str | None:
    """The Python codec name for a MIME charset label, or None when unknown or unusable."""
    if not charset:
        return None
    name = _normalise(charset)
    if name in _ALIASES:
        return _ALIASES[name]
    try:
        info = codecs.lookup(name)
    except LookupError:
        name = name.replace("_", "-")
        if name in _ALIASES:
            return _ALIASES[name]
        try:
            info = codecs.lookup(name)
        except LookupError:
            return None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib, hex...: bytes codecs
        return None
    if any(word in info.name for word in _FORBIDDEN):
        return None
    return info.name


def decode(data: bytes, charset: str | None = None) -> str:
    """Decode ``data`` declared as ``charset`` (may be None or unknown). Never raises."""
    codec = lookup_codec(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError, ValueError):
            pass
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec is not None and codec not in ("utf-8", "cp1252"):
        try:
            return data.decode(codec, errors="replace")
        except (LookupError, ValueError):
            pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_header_bytes(data: bytes) -> str:
    """Decode raw header bytes: ASCII, else UTF-8 (RFC 6532 §3), else windows-1252/Latin-1."""
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")
