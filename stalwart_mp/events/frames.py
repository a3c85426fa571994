"""Wire format of the local event hub (sans-I/O: bytes in, messages out).

A frame is a 4-byte big-endian unsigned length followed by that many bytes of one msgpack map.
Maps carry an ``op`` key:

==========  =====================================  ===========================================
op          other keys                             meaning
==========  =====================================  ===========================================
``sub``     ``topics``: list of str                client -> hub: add subscriptions
``unsub``   ``topics``: list of str                client -> hub: remove subscriptions
``pub``     ``topic``: str, ``data``: any value    client -> hub -> subscribers: an event
``ping``    ``id``: int                            client -> hub: barrier request
``pong``    ``id``: int                            hub -> client: every earlier frame is applied
==========  =====================================  ===========================================

Unknown keys are ignored. The hub forwards a ``pub`` frame to subscribers byte for byte.

Topic matching: a subscription matches a topic when it is equal to it, or when the
subscription ends with ``"."`` and the topic starts with it (``"account."`` receives
``"account.42"`` and ``"account.42.mailbox"``, but not ``"account"`` or ``"accounts"``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1 << 20
MAX_TOPIC_LENGTH = 1024
PREFIX_MARK = "."


class FrameError(ValueError):
    """A frame that breaks the wire format; the connection that sent it must be dropped."""


@dataclass(slots=True, frozen=True)
class Subscribe:
    topics: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class Unsubscribe:
    topics: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class Publish:
    topic: str
    data: Any


@dataclass(slots=True, frozen=True)
class Ping:
    id: int


@dataclass(slots=True, frozen=True)
class Pong:
    id: int


Message = Subscribe | Unsubscribe | Publish | Ping | Pong


def topic_keys(topic: str) -> Iterator[str]:
    """Every subscription string that matches ``topic``: each dotted prefix, then the topic."""
    start = 0
    while (dot := topic.find(PREFIX_MARK, start)) != -1:
        key = topic[: dot + 1]
        if key != topic:
            yield key
        start = dot + 1
    yield topic


def check_topic(topic: object, *, what: str = "topic") -> str:
    """Return ``topic`` if it is a usable topic string, else raise :class:`FrameError`."""
    if not isinstance(topic, str):
        raise FrameError(f"{what} must be a string, got {type(topic).__name__}")
    if not topic or len(topic) > MAX_TOPIC_LENGTH:
        raise FrameError(
            f"{what} {topic[:64]!r} must be 1 to {MAX_TOPIC_LENGTH} characters, got {len(topic)}"
        )
    return topic


def _body(message: Message) -> dict[str, Any]:
    match message:
        case Subscribe(topics):
            return {"op": "sub", "topics": list(topics)}
        case Unsubscribe(topics):
            return {"op": "unsub", "topics": list(topics)}
        case Publish(topic, data):
            return {"op": "pub", "topic": topic, "data": data}
        case Ping(id_):
            return {"op": "ping", "id": id_}
        case Pong(id_):
            return {"op": "pong", "id": id_}
    raise TypeError(f"not an event-bus message: {message!r}")


def encode(message: Message) -> bytes:
    """One complete frame (header + body) for ``message``."""
    try:
        body = msgpack.packb(_body(message), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"event data cannot be encoded as msgpack: {exc}") from exc
    return HEADER.pack(len(body)) + body


def _topics(body: dict[Any, Any]) -> tuple[str, ...]:
    topics = body.get("topics")
    if not isinstance(topics, list):
        raise FrameError(f"'topics' must be a list of strings, got {type(topics).__name__}")
    return tuple(check_topic(t, what="subscription") for t in topics)


def _message_id(body: dict[Any, Any]) -> int:
    value = body.get("id")
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameError(f"'id' must be an integer, got {type(value).__name__}")
    return value


def parse(body: bytes) -> Message:
    """Decode one frame body into a message, or raise :class:`FrameError`."""
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise FrameError(f"frame body is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise FrameError(f"frame body must be a msgpack map, got {type(obj).__name__}")
    op = obj.get("op")
    match op:
        case "sub":
            return Subscribe(_topics(obj))
        case "unsub":
            return Unsubscribe(_topics(obj))
        case "pub":
            return Publish(check_topic(obj.get("topic")), obj.get("data"))
        case "ping":
            return Ping(_message_id(obj))
        case "pong":
            return Pong(_message_id(obj))
    raise FrameError(f"unknown op {op!r}; expected sub, unsub, pub, ping or pong")


class FrameDecoder:
    """Resumable splitter: ``feed`` bytes as they arrive, take complete frame bodies out.

    A length above ``max_frame`` is refused as soon as the header is complete, before the body
    is buffered.
    """

    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_body(self) -> bytes | None:
        """The next complete frame body, or ``None`` if more bytes are needed."""
        if len(self._buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buffer)
        if length == 0 or length > self._max_frame:
            raise FrameError(f"frame length {length} is outside 1..{self._max_frame} bytes")
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return body

    def bodies(self) -> Iterator[bytes]:
        """Every complete frame body buffered so far."""
        while (body := self.next_body()) is not None:
            yield body
