"""The MIME tree: exact offsets, IMAP section numbers, malformed structure and limits."""

from __future__ import annotations


from stalwart_mp.mail.ingest import Part, decode_body, decoded_text, parse_message
from tests.mail.ingest import corpus


def _body(raw: bytes, part: Part | None) -> bytes:
    assert part is not None
    return raw[part.body_start : part.end]


def _mime(raw: bytes, part: Part | None) -> bytes:
    assert part is not None
    return raw[part.header_start : part.body_start]


def test_single_part_message_is_part_one() -> None:
    raw = corpus.simple()
    root = parse_message(raw).root
    assert root.section("1") is root  # RFC 9051 §6.4.5: non-multipart body is part 1
    assert _body(raw, root) == b"Hello, world.\r\n"
    assert root.section("2") is None and root.section("1.1") is None
    assert root.lines == 1 and root.mime_type == "text/plain"


def test_multipart_offsets_exclude_crlf_before_boundary() -> None:
    raw = corpus.multipart(
        [corpus.text_part("one"), corpus.text_part("<b>two</b>", "html")],
        epilogue=b"epilogue\r\n",
    )
    root = parse_message(raw).root
    assert len(root.children) == 2
    one, two = root.section("1"), root.section("2")
    assert _body(raw, one) == b"one"
    assert _mime(raw, one) == (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    assert _body(raw, two) == b"<b>two</b>"
    assert raw[root.body_start : root.end].startswith(b"This is a MIME message.")
    assert raw[root.body_start : root.end].endswith(b"epilogue\r\n")


def test_part_body_keeps_its_own_trailing_newlines() -> None:
    raw = corpus.multipart([b"Content-Type: text/plain\r\n\r\nline\r\n\r\n"])
    assert _body(raw, parse_message(raw).root.section("1")) == b"line\r\n\r\n"


def test_empty_parts_and_adjacent_boundaries() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\nx\r\n--b--"
    root = parse_message(raw).root
    assert [_body(raw, c) for c in root.children] == [b"", b"x"]


def test_lf_only_message() -> None:
    raw = corpus.multipart([b"Content-Type: text/plain\n\nlf body\n"], eol=b"\n")
    root = parse_message(raw).root
    assert _body(raw, root.section("1")) == b"lf body\n"
    assert parse_message(raw).envelope.subject == "multipart"


def test_mixed_line_ends() -> None:
    raw = (
        b"Subject: mixed\nContent-Type: multipart/mixed; boundary=zz\r\n\n"
        b"--zz\nContent-Type: text/plain\r\n\r\nA\r\n--zz\r\n\nB\n--zz--\n"
    )
    root = parse_message(raw).root
    assert [_body(raw, c) for c in root.children] == [b"A", b"B"]


def test_missing_final_boundary() -> None:
    raw = corpus.multipart([corpus.text_part("one"), corpus.text_part("two")], close=False)
    root = parse_message(raw).root
    assert len(root.children) == 2
    assert _body(raw, root.section("2")) == b"two\r\n"  # runs to the end of the message


def test_boundary_not_found_gives_one_opaque_part() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=nope\r\n\r\nJust text.\r\n"
    parsed = parse_message(raw)
    (child,) = parsed.root.children
    assert child.mime_type == "text/plain" and child.header_start == child.body_start
    assert _body(raw, child) == b"Just text.\r\n"
    assert parsed.preview == "Just text."


def test_missing_boundary_parameter() -> None:
    raw = b"Content-Type: multipart/mixed\r\n\r\nbody"
    assert _body(raw, parse_message(raw).root.section("1")) == b"body"


def test_quoted_boundary_with_specials_and_prefix_boundaries() -> None:
    outer, inner = "=_outer; x", "=_outer; x-inner"
    inner_msg = (
        f'Content-Type: multipart/alternative; boundary="{inner}"\r\n\r\n'
        f"--{inner}\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
        f"--{inner}\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--{inner}--"
    ).encode()
    raw = corpus.multipart([inner_msg, corpus.text_part("tail")], boundary=outer)
    root = parse_message(raw).root
    assert len(root.children) == 2
    assert _body(raw, root.section("1.1")) == b"plain"
    assert _body(raw, root.section("1.2")) == b"<p>html</p>"
    assert _body(raw, root.section("2")) == b"tail"


def test_inner_part_without_close_cannot_swallow_siblings() -> None:
    inner = b"Content-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n\r\ninner text"
    raw = corpus.multipart([inner, corpus.text_part("sibling")])
    root = parse_message(raw).root
    assert _body(raw, root.section("1.1")) == b"inner text"
    assert _body(raw, root.section("2")) == b"sibling"


def test_boundary_lookalike_lines_are_content() -> None:
    raw = corpus.multipart([b"Content-Type: text/plain\r\n\r\n--BOUNDARYX\r\n--BOUNDARY-- x"])
    root = parse_message(raw).root
    assert _body(raw, root.section("1")) == b"--BOUNDARYX\r\n--BOUNDARY-- x"
    padded = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b  \t\r\n\r\nx\r\n--b-- \r\n"
    assert _body(padded, parse_message(padded).root.section("1")) == b"x"


def test_part_without_blank_line_after_headers() -> None:
    raw = corpus.multipart([b"Content-Type: text/plain\r\nno blank line here"])
    part = parse_message(raw).root.section("1")
    assert part is not None and part.mime_type == "text/plain"
    assert _body(raw, part) == b"no blank line here"


def test_message_rfc822_containing_multipart() -> None:
    inner = corpus.multipart(
        [corpus.text_part("inner text"), corpus.attachment("in.bin", b"\x00\x01")],
        boundary="INNER",
    ).replace(b"Subject: multipart", b"Subject: =?utf-8?q?inn=C3=A9r?=")
    raw = corpus.multipart(
        [corpus.text_part("outer"), b"Content-Type: message/rfc822\r\n\r\n" + inner]
    )
    parsed = parse_message(raw)
    msg = parsed.root.section("2")
    assert msg is not None and msg.is_message
    assert msg.envelope is not None and msg.envelope.subject == "inn\u00e9r"
    assert _body(raw, msg) == inner
    (enc_root,) = msg.children
    assert raw[enc_root.header_start : enc_root.body_start].startswith(b"From: Alice")
    # RFC 9051 §6.4.5: 2.1 and 2.2 are the encapsulated multipart's parts
    assert _body(raw, parsed.root.section("2.1")) == b"inner text"
    assert decode_body(raw, parsed.root.section("2.2")) == b"\x00\x01"
    assert msg.lines == inner.count(b"\n")  # ends with a line end: no partial line
    assert parsed.attachments == []  # the attached message has no file name
    assert parsed.has_attachment


def test_message_rfc822_with_single_part_body() -> None:
    inner = b"Subject: in\r\n\r\nhello"
    raw = corpus.multipart([b"Content-Type: message/rfc822\r\n\r\n" + inner])
    root = parse_message(raw).root
    assert _body(raw, root.section("1.1")) == b"hello"
    assert root.section("1.2") is None


def test_digest_defaults_to_message_rfc822() -> None:
    raw = corpus.multipart([b"\r\nSubject: d1\r\n\r\nx"], subtype="digest")
    part = parse_message(raw).root.section("1")
    assert part is not None and part.mime_type == "message/rfc822"
    assert part.envelope is not None and part.envelope.subject == "d1"


def test_invalid_content_type_defaults_to_text_plain() -> None:
    raw = b"Content-Type: garbage\r\n\r\nx"
    assert parse_message(raw).root.mime_type == "text/plain"
    raw = b"Content-Type: text/\r\n\r\nx"
    assert parse_message(raw).root.mime_type == "text/plain"


def test_empty_message_and_headers_only() -> None:
    empty = parse_message(b"")
    assert empty.size == 0 and empty.root.end == 0 and empty.headers == []
    assert empty.preview == "" and empty.subject == "" and empty.sent_at is None
    headers_only = parse_message(b"Subject: only\r\nFrom: a@b\r\n")
    assert headers_only.subject == "only"
    assert headers_only.root.body_start == headers_only.root.end == headers_only.size
    assert headers_only.root.lines == 0


def test_nul_and_eight_bit_bytes() -> None:
    raw = b"Subject: \xff\xfe\x00nul\r\nFrom: \xc3\xa9 <e@x>\r\n\r\nbody\x00with nul\xff"
    parsed = parse_message(raw)
    assert parsed.envelope.from_[0].name == "\u00e9"
    assert "nul" in parsed.subject
    assert parsed.preview.startswith("body\x00with nul")


def test_max_depth() -> None:
    raw = corpus.nested(200)
    parsed = parse_message(raw, max_depth=50)
    depth, part = 0, parsed.root
    while part.children:
        part, depth = part.children[0], depth + 1
    assert depth == 51  # 50 split levels, then an opaque part holding the rest
    assert part.header_start == part.body_start and b"--b51" in _body(raw, part)
    assert parse_message(corpus.nested(20)).preview == "bottom"


def test_part_bomb_stops_at_max_parts_quickly() -> None:
    raw = corpus.bomb(50_000)
    parsed = parse_message(raw, max_parts=10_000)   # its time: load_tests/bench_ingest.py
    count = len(parsed.root.walk())
    assert count == 10_000
    last = parsed.root.children[-1]
    assert _body(raw, last).endswith(b"49999\r\n--x--\r\n")  # the rest is kept, not dropped
    assert _body(raw, parsed.root.section("1")) == b"0"


def test_boundary_flood_is_bounded() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\r\n" * 500_000
    parsed = parse_message(raw, max_parts=100)
    assert len(parsed.root.children) == 99
    assert parsed.root.children[-1].end == len(raw)


def test_huge_header_block() -> None:
    raw = b"Subject: big\r\nX-Big: " + b"a" * (3 << 20) + b"\r\n\r\nbody"
    parsed = parse_message(raw, max_header_bytes=1 << 20)
    assert parsed.subject == "big"
    assert [h.name for h in parsed.headers] == ["Subject"]
    assert raw[parsed.root.body_start :] == b"body"


def test_transfer_decoding() -> None:
    raw = corpus.multipart([
        corpus.text_part("caf\u00e9 \u2014 long line " * 10, encoding="quoted-printable"),
        corpus.text_part("\u65e5\u672c\u8a9e", charset="iso-2022-jp", encoding="base64"),
        b"Content-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8g!!d29y\r\nbGQ",  # junk, no padding
        b"Content-Type: text/plain; charset=bogus\r\n\r\ncaf\xc3\xa9",
        b"Content-Type: text/html\r\n\r\n<meta charset=\"iso-8859-1\">caf\xe9",
    ])
    root = parse_message(raw).root
    assert decoded_text(raw, root.section("1")) == "caf\u00e9 \u2014 long line " * 10
    assert decoded_text(raw, root.section("2")) == "\u65e5\u672c\u8a9e"
    assert decode_body(raw, root.section("3")) == b"hello world"
    assert decoded_text(raw, root.section("4")) == "caf\u00e9"
    assert decoded_text(raw, root.section("5")).endswith("caf\u00e9")


def test_mime_fields() -> None:
    part = (
        b"Content-Type: image/png; name=a.png\r\n"
        b"Content-ID: <img1@x>\r\n"
        b"Content-Description: A picture\r\n"
        b"Content-Transfer-Encoding: BASE64\r\n"
        b"Content-Disposition: inline; filename=\"a.png\"; size=4\r\n"
        b"Content-Language: en, fr\r\n"
        b"Content-Location: http://example.com/a.png\r\n"
        b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\r\nAAAA"
    )
    p = parse_message(corpus.multipart([part], subtype="related")).root.section("1")
    assert p is not None
    assert (p.content_type, p.subtype, p.params) == ("image", "png", {"name": "a.png"})
    assert (p.id, p.description, p.encoding) == ("<img1@x>", "A picture", "base64")
    assert (p.disposition, p.disposition_params) == ("inline", {"filename": "a.png", "size": "4"})
    assert p.language == ["en", "fr"] and p.location == "http://example.com/a.png"
    assert p.md5 == "Q2hlY2sgSW50ZWdyaXR5IQ==" and p.filename == "a.png"


def test_section_numbers_reject_garbage() -> None:
    root = parse_message(corpus.multipart([corpus.text_part("x")])).root
    for bad in ("0", "01", "1.", "a", "-1", "2"):
        assert root.section(bad) is None
    assert root.section("") is root


def test_header_envelope_matches_the_full_parse() -> None:
    from stalwart_mp.mail.ingest import header_envelope

    for raw in (corpus.simple(), corpus.multipart([corpus.text_part("x")]),
                corpus.simple(From='"Doe, J." <j@example.net>, other@example.org'),
                corpus.simple(From="=?utf-8?q?J=C3=BCrgen?= <j@example.de>"),
                b"no headers at all"):
        full = parse_message(raw).envelope
        assert header_envelope(raw) == full
