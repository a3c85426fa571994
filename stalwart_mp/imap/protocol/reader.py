"""Incremental IMAP command reader (sans-I/O, the shape of Stalwart's receiver).

``feed(bytes)`` only buffers; ``next()`` returns one of

* ``NEED_DATA`` — wait for more bytes;
* ``Continue(size)`` — a synchronizing literal ``{n}`` was announced and accepted: the session
  sends ``+ Ready`` (RFC 9051 §4.3: the client waits for it before sending the octets);
* ``Complete(data)`` — one whole command, literals inline, without the final CRLF, for
  ``parser.parse_command``;
* ``TooBig(tag, size, limit, sync)`` — a literal over the limit, refused BEFORE reading it.
  For ``{n}`` no continuation was sent, so the client sends nothing (RFC 9051 §7.1.6); the
  octets of a non-synchronizing ``{n+}`` literal (RFC 7888 §4) and the rest of that command
  line are discarded as they arrive, never buffered;
* ``LineTooLong(tag)`` — a command line over ``max_line``; the rest of the line is discarded.

APPEND literals may be as large as ``max_append`` (the message size limit, RFC 7889
APPENDLIMIT); every other literal is limited to ``max_literal``. The command name is read
from the first line, so the right limit is known when the literal is announced.
``next_line()`` reads one raw line instead (AUTHENTICATE responses, IDLE's DONE).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_LITERAL = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\r?\n\Z")
_HEAD = re.compile(rb"\A(\S+) +(?:UID +)?(\S+)", re.IGNORECASE)


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(slots=True, frozen=True)
class Continue:
    size: int
    append: bool = False       # the literal of an APPEND/REPLACE (the session may check quota)


@dataclass(slots=True, frozen=True)
class Complete:
    data: bytes


@dataclass(slots=True, frozen=True)
class TooBig:
    tag: str
    size: int
    limit: int
    sync: bool
    append: bool


@dataclass(slots=True, frozen=True)
class LineTooLong:
    tag: str


Event = _NeedData | Continue | Complete | TooBig | LineTooLong


class CommandReader:
    def __init__(self, max_line: int = 65536, max_literal: int = 65536,
                 max_append: int = 50 * 1024 * 1024):
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_append = max_append
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._literal_left = 0     # octets of an accepted literal still to read
        self._discard = 0          # octets of a refused literal still to drop
        self._skip_line = False    # drop everything up to the next LF (after a refusal)

    def feed(self, data: bytes) -> None:
        if self._discard and not self._buf:  # a refused literal: never buffered
            n = min(self._discard, len(data))
            self._discard -= n
            data = data[n:]
            if not self._discard:
                self._skip_line = True
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Everything not read yet (dropped at STARTTLS, handed over at COMPRESS)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def next_line(self) -> bytes | _NeedData:
        """One raw line (CRLF removed), for AUTHENTICATE and IDLE."""
        idx = self._buf.find(b"\n")
        if idx < 0:
            if len(self._buf) > self.max_line:
                self._buf.clear()
                return b"\x00too-long"
            return NEED_DATA
        line = bytes(self._buf[:idx + 1])
        del self._buf[:idx + 1]
        return line.rstrip(b"\r\n")

    def next(self) -> Event:
        while True:
            if self._discard:
                n = min(self._discard, len(self._buf))
                del self._buf[:n]
                self._discard -= n
                if self._discard:
                    return NEED_DATA
                self._skip_line = True
            if self._literal_left:
                n = min(self._literal_left, len(self._buf))
                self._parts.append(bytes(self._buf[:n]))
                del self._buf[:n]
                self._literal_left -= n
                if self._literal_left:
                    return NEED_DATA
            idx = self._buf.find(b"\n")
            if self._skip_line:
                if idx < 0:
                    self._buf.clear()
                    return NEED_DATA
                line = bytes(self._buf[:idx + 1])
                del self._buf[:idx + 1]
                m = _LITERAL.search(line)
                if m and m.group(3):   # another non-synchronizing literal: drop it too
                    self._discard = int(m.group(2))
                    continue
                self._skip_line = False
                continue
            if idx < 0:
                if len(self._buf) > self.max_line:
                    tag = self._tag()
                    self._buf.clear()
                    self._reset()
                    self._skip_line = True
                    return LineTooLong(tag)
                return NEED_DATA
            if idx + 1 > self.max_line:
                tag = self._tag()
                del self._buf[:idx + 1]
                self._reset()
                return LineTooLong(tag)
            line = bytes(self._buf[:idx + 1])
            del self._buf[:idx + 1]
            self._parts.append(line)
            m = _LITERAL.search(line)
            if m is None:
                data = b"".join(self._parts)
                self._reset()
                return Complete(data[:-2] if data.endswith(b"\r\n") else data[:-1])
            size = int(m.group(2))
            sync = not m.group(3)
            append = self._is_append()
            limit = self.max_append if append else self.max_literal
            if size > limit:
                tag = self._tag()
                self._reset()
                if not sync:
                    self._discard = size
                    if not size:
                        self._skip_line = True
                return TooBig(tag, size, limit, sync, append)
            self._literal_left = size
            if sync:
                return Continue(size, append)

    def first_line(self) -> bytes:
        """The first line of the command being read (to look at before a continuation)."""
        return self._parts[0] if self._parts else b""

    def abandon(self) -> str:
        """Drop the command being read instead of sending a continuation (the client sends
        no literal then, RFC 9051 §7.5); returns its tag for the tagged answer."""
        tag = self._tag()
        self._reset()
        return tag

    def _is_append(self) -> bool:
        head = _HEAD.match(self._parts[0]) if self._parts else None
        return head is not None and head.group(2).upper() in (b"APPEND", b"REPLACE")

    def _tag(self) -> str:
        first = self._parts[0] if self._parts else bytes(self._buf[:256])
        tag = first.split(b" ", 1)[0].strip()
        return tag.decode("ascii", "replace") if tag and len(tag) < 64 else "*"

    def _reset(self) -> None:
        self._parts = []
        self._literal_left = 0
