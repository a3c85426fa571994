"""to_record / from_record: compact, msgpack-able, enough for FETCH without re-parsing."""

from __future__ import annotations

import msgpack

from stalwart_mp.mail.ingest import (
    bodystructure_tree,
    envelope_tree,
    from_record,
    parse_message,
    to_record,
)
from tests.mail.ingest import corpus


def _rich() -> bytes:
    inner = corpus.multipart(
        [corpus.text_part("inner"), corpus.attachment("in.bin", b"\x00")], boundary="IN"
    )
    return corpus.multipart(
        [
            corpus.text_part("Hello \u00e9t\u00e9"),
            corpus.attachment("a.pdf", b"%PDF", "application/pdf"),
            b"Content-Type: message/rfc822\r\nContent-Description: fwd\r\n\r\n" + inner,
            (b"Content-Type: image/png\r\nContent-ID: <c@x>\r\nContent-Language: en\r\n"
            b"Content-Location: x.png\r\nContent-MD5: abc=\r\n\r\nz"),
        ],
        extra_headers=(
            b"Cc: =?utf-8?q?Ren=C3=A9?= <r@x>, G: a@b;\r\nSender: s@x\r\n"
            b"Date: Thu, 13 Feb 2025 10:00:00 +0000\r\nMessage-ID: <m@x>\r\n"
            b"In-Reply-To: <p@x>\r\nReferences: <o@x> <p@x>\r\n"
        ),
    ).replace(b"Subject: multipart", b"Subject: Re: [list] =?utf-8?q?caf=C3=A9?=")


def test_round_trip_through_msgpack() -> None:
    raw = _rich()
    parsed = parse_message(raw)
    record = to_record(parsed)
    packed = msgpack.packb(record, use_bin_type=True)
    stored = from_record(msgpack.unpackb(packed, raw=False))
    assert bodystructure_tree(stored.root, True) == bodystructure_tree(parsed.root, True)
    assert bodystructure_tree(stored.root, False) == bodystructure_tree(parsed.root, False)
    assert envelope_tree(stored.envelope) == envelope_tree(parsed.envelope)
    assert stored.envelope == parsed.envelope
    for name in ("size", "sent_at", "subject", "base_subject", "message_id", "in_reply_to",
                 "references", "preview", "attachments", "has_attachment", "header_index"):
        assert getattr(stored, name) == getattr(parsed, name), name
    for section in ("1", "2", "3", "3.1", "3.2", "4"):
        a, b = parsed.root.section(section), stored.root.section(section)
        assert a is not None and b is not None
        assert (a.header_start, a.body_start, a.end) == (b.header_start, b.body_start, b.end)
    assert stored.header_fields(raw, ["subject", "cc"]) == parsed.header_fields(
        raw, ["subject", "cc"]
    )
    assert stored.header_fields(raw, ["Subject"]).startswith(b"Subject: Re: [list]")
    assert len(packed) < 1500  # compact: a few hundred bytes for a 6-part message


def test_defaults_are_omitted() -> None:
    record = to_record(parse_message(b"\r\nx"))
    assert record == {"v": 1, "z": 3, "x": {"o": [0, 2, 3], "n": 1}, "p": "x"}
    stored = from_record(record)
    assert stored.subject == "" and stored.envelope.from_ == [] and stored.attachments == []
    assert bodystructure_tree(stored.root, False) == [
        "text", "plain", ["charset", "us-ascii"], None, None, "7bit", 1, 1
    ]


def test_round_trip_of_malformed_messages() -> None:
    for raw in (b"", b"Subject: only", corpus.bomb(50), corpus.nested(60),
                b"Content-Type: multipart/mixed\r\n\r\nno boundary"):
        parsed = parse_message(raw)
        stored = from_record(msgpack.unpackb(msgpack.packb(to_record(parsed)), raw=False))
        assert bodystructure_tree(stored.root, True) == bodystructure_tree(parsed.root, True)
