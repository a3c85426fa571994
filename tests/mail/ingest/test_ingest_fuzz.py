"""Hypothesis: parse_message never raises and its offsets are always consistent."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stalwart_mp.mail.ingest import (
    Part,
    bodystructure_tree,
    decode_body,
    decoded_text,
    envelope_tree,
    from_record,
    parse_message,
    to_record,
)
from stalwart_mp.mail.ingest.addresses import parse_address_list
from stalwart_mp.mail.ingest.dates import parse_date
from stalwart_mp.mail.ingest.headers import unfold
from stalwart_mp.mail.ingest.params import parse_value
from stalwart_mp.mail.ingest.preview import collapse, make_preview
from stalwart_mp.mail.ingest.rfc2047 import decode_words

_PIECES = [
    b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\n\n", b" ", b"\t", b":", b";", b"\x00", b"\xff",
    b"\xc3\xa9", b"--b", b"--b--", b"--c", b"--c--", b"=?utf-8?q?", b"=?x?b?", b"?=", b"\"",
    b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: multipart/digest; boundary=c",
    b"Content-Type: message/rfc822", b"Content-Type: text/html", b"Content-Type: text/plain;",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Disposition: attachment; filename*0*=utf-8''%E6; filename*1=x",
    b"From: a <b@c>, g: d@e;", b"Subject: Re: [x] ", b"Date: 1 Jan 2000 00:00 +0000",
    b"To: \"q\\\"\" <@r:x@y>", b"<p>", b"</p>", b"=41=", b"aGVsbG8=", b"(", b")", b"<", b">",
]
_MESSAGES = st.lists(
    st.one_of(st.sampled_from(_PIECES), st.binary(max_size=8)), max_size=80
).map(b"".join)


def _check(raw: bytes, part: Part, parent_start: int, parent_end: int) -> None:
    assert parent_start <= part.header_start <= part.body_start <= part.end <= parent_end
    assert part.lines >= 0
    if part.is_multipart or part.is_message:
        assert part.children, "a container always has at least one child"
    for child in part.children:
        _check(raw, child, part.body_start, part.end)
    decode_body(raw, part)
    decoded_text(raw, part)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MESSAGES)
def test_parse_never_raises_and_offsets_nest(raw: bytes) -> None:
    parsed = parse_message(raw, max_parts=50, max_depth=8)
    assert parsed.size == len(raw)
    _check(raw, parsed.root, 0, len(raw))
    assert len(parsed.preview) <= 256
    assert len(parsed.root.walk()) <= 50 + 2 * 9
    tree = bodystructure_tree(parsed.root, True)
    envelope_tree(parsed.envelope)
    stored = from_record(to_record(parsed))
    assert bodystructure_tree(stored.root, True) == tree
    for lname, start, end in parsed.header_index:
        assert raw[start:end].lower().startswith(lname.encode())


@given(st.text(max_size=200))
def test_field_parsers_never_raise(text: str) -> None:
    parse_address_list(text)
    parse_value(text)
    decode_words(text)
    parse_date(text)


_TEXT_PIECES = st.sampled_from([" ", "\n", "\r\n", "\t", "\u00a0", "\u2028", "\x1c", "word",
                                "é", "x" * 300, " " * 700, "\n" * 900])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_TEXT_PIECES, st.text(max_size=30)), max_size=40))
def test_preview_from_a_head_equals_collapsing_the_whole_text(pieces: list[str]) -> None:
    """make_preview collapses only a head of the body, grown as needed: the result is the
    first 256 characters of the whole text with its whitespace collapsed."""
    text = "".join(pieces)
    whole = collapse(text)
    assert make_preview(text) == (whole if len(whole) <= 256 else whole[:256].rstrip())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n ",
                                 b"\n\t", b"=?x?="]), max_size=20))
def test_unfold_matches_the_two_regex_passes(pieces: list[bytes]) -> None:
    """unfold skips its regex passes when there is no line end: same result as always
    running them (RFC 5322 §2.2.3 unfolding, stray line ends to spaces)."""
    value = b"".join(pieces)
    expected = re.sub(rb"[\r\n]+", b" ", re.sub(rb"\r?\n(?=[ \t])", b"", value))
    assert unfold(value) == expected


_LONG_PIECES = st.sampled_from(["word ", "é ", "\n", "\r\n", " " * 3000, "\n" * 2000,
                                "naïve café " * 400, "x" * 5000, "日本語 " * 500, "\t"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_LONG_PIECES, st.text(max_size=40)), max_size=60),
       st.sampled_from(["8bit", "quoted-printable", "base64"]))
def test_preview_of_a_long_plain_part_equals_decoding_it_whole(pieces: list[str],
                                                               encoding: str) -> None:
    """A long text/plain part is previewed from a head of whole lines: same result as
    decoding the whole part, whatever the transfer encoding."""
    import base64
    import binascii

    text = "".join(pieces).replace("\r", "")
    data = text.replace("\n", "\r\n").encode("utf-8", "surrogatepass")
    if encoding == "base64":
        b64 = base64.b64encode(data)
        body = b"\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    elif encoding == "quoted-printable":
        body = binascii.b2a_qp(data).replace(b"\n", b"\r\n")
    else:
        body = data
    raw = (b"From: a@b.c\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + body)
    parsed = parse_message(raw)
    whole = decoded_text(raw, parsed.root)
    assert parsed.preview == make_preview(whole)
