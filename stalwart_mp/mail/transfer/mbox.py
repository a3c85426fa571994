"""mboxrd: reading and writing, byte-exact except for the format's own escaping.

Format (the "mboxrd" variant, https://www.loc.gov/preservation/digital/formats/fdd/fdd000385):
each message starts with a ``From <sender> <asctime date>`` line; inside a message, every
line matching ``^>*From `` gets one more ``>`` when written and loses one when read, so any
number of levels round-trips (mboxo, which only escapes ``From ``, cannot tell ``>From``
written by a person from an escaped one). A writer ends every message with a line end and
one empty line, which the reader removes again.

A separator is a ``From `` line at the start of the file or after an empty line: mboxrd
escapes every other ``From `` line, and the empty-line rule also reads the unescaped
mboxo files some programs write without splitting messages at a "From " in a paragraph.

Flags. Mail programs keep flags in ``Status:`` (``R`` read, ``O`` old — not recent, no
keyword), ``X-Status:`` (``A`` answered, ``F`` flagged, ``T`` draft, ``D`` deleted) and
``X-Keywords:`` headers. Import reads them and leaves the message as it is (those fields
stay in the stored bytes: the message is byte-exact but for the escaping). Export writes
the stored bytes unchanged unless asked for flags (``--mbox-flags``), which replaces any
such fields in the header with the message's current flags.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from stalwart_mp.mail.ingest.dates import parse_date
from stalwart_mp.mail.records import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

_ESCAPED = re.compile(rb">+From ")
_TO_ESCAPE = re.compile(rb"(?m)^(>*From )")
_X_STATUS = {"A": ANSWERED, "F": FLAGGED, "T": DRAFT, "D": DELETED}
_X_STATUS_OF = {kw: letter for letter, kw in _X_STATUS.items()}
FLAG_HEADERS = (b"status", b"x-status", b"x-keywords")
UNKNOWN_SENDER = "MAILER-DAEMON"  # what Dovecot writes when the envelope sender is unknown


@dataclass(slots=True)
class MboxMessage:
    offset: int                  # byte offset of the From_ line: the message's id in the file
    end: int                     # offset just after the message (the next From_ line)
    sender: str
    received_at: float | None    # from the From_ line, None if it has no readable date
    raw: bytes                   # the message, unescaped

    def keywords(self) -> list[str]:
        return flag_keywords(self.raw)


def _is_blank(line: bytes) -> bool:
    return line in (b"\n", b"\r\n")


def _parse_from_line(line: bytes) -> tuple[str, float | None]:
    text = line[5:].decode("latin-1").strip()
    sender, _, date = text.partition(" ")
    return sender or UNKNOWN_SENDER, parse_date(date) if date else None


def read(path: Path, start: int = 0) -> Iterator[MboxMessage]:
    """Messages of an mbox from byte ``start`` (0, or the offset of a From_ line)."""
    with open(path, "rb") as f:
        f.seek(start)
        yield from _read(f, start)


def _read(f: BinaryIO, pos: int) -> Iterator[MboxMessage]:
    current: tuple[int, str, float | None] | None = None
    lines: list[bytes] = []
    previous_blank = True
    for line in f:
        if line.startswith(b"From ") and previous_blank:
            if current is not None:
                yield _finish(current, lines, pos)
            sender, date = _parse_from_line(line)
            current, lines = (pos, sender, date), []
        elif current is not None:
            lines.append(line[1:] if line[:1] == b">" and _ESCAPED.match(line) else line)
        previous_blank = _is_blank(line)
        pos += len(line)
    if current is not None:
        yield _finish(current, lines, pos)


def _finish(current: tuple[int, str, float | None], lines: list[bytes], end: int
            ) -> MboxMessage:
    if lines and _is_blank(lines[-1]):
        lines.pop()  # the empty line the writer adds after each message
    offset, sender, date = current
    return MboxMessage(offset, end, sender, date, b"".join(lines))


def count(path: Path, start: int = 0) -> int:
    """About how many messages follow ``start`` (for a progress bar): From_ lines after
    empty lines, found without splitting the file into lines."""
    total, tail = 0, b"\n\n"
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(1 << 20):
            data = tail + chunk
            total += data.count(b"\n\nFrom ") + data.count(b"\n\r\nFrom ")
            tail = data[-8:]
            total -= tail.count(b"\n\nFrom ") + tail.count(b"\n\r\nFrom ")  # counted again next
        total += tail.count(b"\n\nFrom ") + tail.count(b"\n\r\nFrom ")
    return total


# --- flags in headers -------------------------------------------------------------------


def _header_fields(raw: bytes) -> tuple[list[bytes], int]:
    """The header fields (each with its continuation lines and line ends) and the offset
    of the empty line ending the header (or of the end)."""
    fields: list[bytes] = []
    pos = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        end = len(raw) if nl < 0 else nl + 1
        line = raw[pos:end]
        if _is_blank(line):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
        pos = end
    return fields, pos


def flag_keywords(raw: bytes) -> list[str]:
    """Keywords from Status, X-Status and X-Keywords header fields."""
    found: set[str] = set()
    for field in _header_fields(raw)[0]:
        name, _, value = field.partition(b":")
        name_l = name.strip().lower()
        text = value.decode("utf-8", "replace").strip()
        if name_l == b"status" and "R" in text:
            found.add(SEEN)
        elif name_l == b"x-status":
            found.update(_X_STATUS[c] for c in text if c in _X_STATUS)
        elif name_l == b"x-keywords":
            found.update(k.lower() for k in re.split(r"[\s,]+", text) if k)
    return sorted(found)


def with_flag_headers(raw: bytes, keywords: Iterable[str]) -> bytes:
    """The message with its Status/X-Status/X-Keywords fields replaced by ``keywords``."""
    keywords = set(keywords)
    fields, end = _header_fields(raw)
    eol = b"\r\n" if fields and fields[0].endswith(b"\r\n") else b"\n"
    kept = [f for f in fields if f.partition(b":")[0].strip().lower() not in FLAG_HEADERS]
    status = b"RO" if SEEN in keywords else b"O"
    x_status = "".join(sorted(_X_STATUS_OF[k] for k in keywords if k in _X_STATUS_OF))
    custom = sorted(k for k in keywords if k != SEEN and k not in _X_STATUS_OF)
    added = [b"Status: " + status + eol]
    if x_status:
        added.append(b"X-Status: " + x_status.encode() + eol)
    if custom:
        added.append(b"X-Keywords: " + " ".join(custom).encode() + eol)
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += eol
    return b"".join(kept) + b"".join(added) + raw[end:]


# --- writing ------------------------------------------------------------------------------


def from_line(received_at: float, sender: str = UNKNOWN_SENDER) -> bytes:
    """``From sender asctime`` in UTC (as Python's mailbox module and Dovecot write it)."""
    return f"From {sender} {time.asctime(time.gmtime(received_at))}\n".encode()


def escape(raw: bytes) -> bytes:
    return _TO_ESCAPE.sub(rb">\1", raw)


def entry(raw: bytes, received_at: float, sender: str = UNKNOWN_SENDER) -> bytes:
    """One message as written to an mbox: From_ line, escaped message, line end, empty line."""
    body = escape(raw)
    if body and not body.endswith(b"\n"):
        body += b"\n"  # mbox cannot keep a message without a final line end: one is added
    return from_line(received_at, sender) + body + b"\n"
