"""The event-hub wire format, without sockets."""

from __future__ import annotations

import msgpack
import pytest

from stalwart_mp.events import frames
from stalwart_mp.events.frames import (
    FrameDecoder,
    FrameError,
    Ping,
    Pong,
    Publish,
    Subscribe,
    Unsubscribe,
    encode,
    parse,
    topic_keys,
)

MESSAGES: list[frames.Message] = [
    Subscribe(("mail.1", "account.")),
    Unsubscribe(("mail.1",)),
    Publish("mail.1", {"modseq": 42, "mailboxes": [1, 2], "blob": b"\x00\xff", 7: None}),
    Publish("t", None),
    Ping(3),
    Pong(3),
]


def raw_frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return frames.HEADER.pack(len(body)) + body


def decode_all(decoder: FrameDecoder) -> list[frames.Message]:
    return [parse(body) for body in decoder.bodies()]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: frames.Message) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(message))
    assert decode_all(decoder) == [message]
    assert decoder.buffered == 0


def test_header_is_big_endian_length_of_a_msgpack_map() -> None:
    frame = encode(Publish("a", 1))
    body = frame[4:]
    assert int.from_bytes(frame[:4], "big") == len(body)
    assert msgpack.unpackb(body) == {"op": "pub", "topic": "a", "data": 1}


def test_feed_one_byte_at_a_time() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    decoder = FrameDecoder()
    decoded: list[frames.Message] = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        decoded.extend(decode_all(decoder))
    assert decoded == MESSAGES
    assert decoder.buffered == 0


def test_many_frames_in_one_chunk_and_a_partial_tail() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    tail = encode(Publish("later", "x"))
    decoder = FrameDecoder()
    decoder.feed(stream + tail[:6])
    assert decode_all(decoder) == MESSAGES
    assert decoder.next_body() is None
    decoder.feed(tail[6:])
    assert decode_all(decoder) == [Publish("later", "x")]


def test_oversized_length_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_frame=100)
    decoder.feed(frames.HEADER.pack(101))
    with pytest.raises(FrameError, match="101"):
        decoder.next_body()


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    frame = encode(Publish("t", "x" * 50))
    decoder = FrameDecoder(max_frame=len(frame) - 4)
    decoder.feed(frame)
    assert decode_all(decoder) == [Publish("t", "x" * 50)]


def test_zero_length_frame_is_refused() -> None:
    decoder = FrameDecoder()
    decoder.feed(frames.HEADER.pack(0))
    with pytest.raises(FrameError):
        decoder.next_body()


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # array announced with 2 items, 1 present
        msgpack.packb([1, 2]),
        msgpack.packb({"op": "dance"}),
        msgpack.packb({"topic": "t"}),
        msgpack.packb({"op": "pub", "topic": 5}),
        msgpack.packb({"op": "pub", "topic": ""}),
        msgpack.packb({"op": "pub", "topic": "x" * (frames.MAX_TOPIC_LENGTH + 1)}),
        msgpack.packb({"op": "sub", "topics": "mail.1"}),
        msgpack.packb({"op": "sub", "topics": ["ok", 3]}),
        msgpack.packb({"op": "ping", "id": "one"}),
        msgpack.packb({"op": "ping", "id": True}),
    ],
)
def test_malformed_bodies_raise_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        parse(body)


def test_unknown_keys_are_ignored() -> None:
    decoder = FrameDecoder()
    decoder.feed(raw_frame({"op": "pub", "topic": "t", "data": 1, "extra": [1]}))
    assert decode_all(decoder) == [Publish("t", 1)]


def test_unencodable_data_raises_type_error() -> None:
    with pytest.raises(TypeError, match="msgpack"):
        encode(Publish("t", object()))


@pytest.mark.parametrize(
    ("topic", "keys"),
    [
        ("mail", ["mail"]),
        ("account.42", ["account.", "account.42"]),
        ("account.42.inbox", ["account.", "account.42.", "account.42.inbox"]),
        ("account.", ["account."]),
        (".x", [".", ".x"]),
    ],
)
def test_topic_keys(topic: str, keys: list[str]) -> None:
    assert list(topic_keys(topic)) == keys


def test_prefix_rule_does_not_match_without_the_dot() -> None:
    assert "account." not in list(topic_keys("accounts"))
    assert "account." not in list(topic_keys("account"))
