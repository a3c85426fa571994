"""Plain text of message bodies: HTML stripped, whitespace collapsed, and the JMAP preview
(RFC 8621 §4.1.4 "preview": up to 256 characters of the text body)."""

from __future__ import annotations

import html
import re

PREVIEW_CHARS = 256

# Elements whose content is not text, and comments; found by str.find so that unclosed ones
# cost one scan, not one per occurrence.
_OPAQUE_START = re.compile(r"<(script|style|head|title)\b|<!--|<!\[CDATA\[", re.IGNORECASE)
# [^<>] (not [^>]) keeps each attempt short: linear time even on "<<<<..." without ">".
_BLOCK = re.compile(
    r"<\s*/?\s*(?:br|p|div|tr|td|th|li|ul|ol|h[1-6]|table|blockquote|hr|pre|section)\b[^<>]*>",
    re.IGNORECASE,
)
_TAG = re.compile(r"<[^<>]*>")


def _drop_opaque(markup: str) -> str:
    lower: str | None = None
    out: list[str] = []
    pos = 0
    while True:
        match = _OPAQUE_START.search(markup, pos)
        if match is None:
            out.append(markup[pos:])
            break
        out.append(markup[pos : match.start()])
        out.append(" ")
        if lower is None:
            lower = markup.lower()
        element = match.group(1)
        if element:
            closer = "</" + element.lower()
        else:
            closer = "-->" if match.group(0) == "<!--" else "]]>"
        close = lower.find(closer, match.end())
        if close < 0:  # never closed: the rest is not text
            break
        end = lower.find(">", close)
        pos = len(markup) if end < 0 else end + 1
    return "".join(out)


def html_to_text(markup: str) -> str:
    """Text content of an HTML body: scripts, styles and comments removed, block elements
    turned into line breaks, tags dropped, character references decoded."""
    text = _drop_opaque(markup)
    text = _BLOCK.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


def collapse(text: str) -> str:
    # str.split() splits on exactly what re's \s matches (str.isspace), 4x faster
    return " ".join(text.split())


def make_preview(text: str) -> str:
    """At most 256 characters, whitespace collapsed (RFC 8621 §4.1.4).

    Only a head of the text is collapsed, grown until it gives enough characters: the
    collapse of a prefix is a prefix of the collapse of the whole, so the start size changes
    the cost, never the result."""
    size = PREVIEW_CHARS * 2
    head = collapse(text[:size])
    while len(head) < PREVIEW_CHARS and size < len(text):  # mostly whitespace so far
        size *= 4
        head = collapse(text[:size])
    if len(head) <= PREVIEW_CHARS:
        return head
    return head[:PREVIEW_CHARS].rstrip()
