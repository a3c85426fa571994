"""Inputs built to make naive parsers slow: each must be handled (bounded scans).

How long each takes is measured by ``load_tests/bench_ingest.py``, not asserted here (no
timed unit tests); a parser gone quadratic would still trip the suite's per-test timeout.
"""

from __future__ import annotations

import os

import pytest

from stalwart_mp.mail.ingest import parse_message
from stalwart_mp.mail.ingest.dates import parse_date
from stalwart_mp.mail.ingest.params import parse_value
from stalwart_mp.mail.ingest.preview import html_to_text
from tests.mail.ingest import corpus


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    """Run one adversarial input (its duration is load_tests/bench_ingest.py's business)."""
    return fn(*args)


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("<script>" * 100_000, " "),              # one unclosed script: the rest is code
        ("<" * 500_000, "<" * 500_000),           # no tag ever starts: all text
        ("<p" * 200_000, "<p" * 200_000),         # an unterminated tag: left as text
        ("<!--" * 100_000, " "),                  # one unclosed comment
        ("<style>x</style>" * 50_000, " " * 50_000),
    ],
)
def test_html_stripping_is_linear(markup: str, text: str) -> None:
    assert _timed(html_to_text, markup) == text


def test_html_unclosed_script_hides_the_rest() -> None:
    assert html_to_text("a<script>var x = '<p>';").strip() == "a"
    assert html_to_text("a<!-- b").strip() == "a"
    assert html_to_text("a<SCRIPT>b</Script >c") == "a c"


def test_long_inputs_to_field_parsers() -> None:
    assert _timed(parse_date, "a" * 1_000_000) is None
    assert _timed(parse_date, "1 " * 500_000) is None
    _timed(parse_value, "x/y; " + "a*" * 300_000 + "=1")
    _timed(parse_value, "x/y; " + "(" * 300_000)


def test_ten_mib_attachment_is_not_walked_line_by_line() -> None:
    raw = corpus.multipart(
        [corpus.text_part("see attached"), corpus.attachment("big.bin", os.urandom(7_600_000))]
    )
    parsed = _timed(parse_message, raw)
    assert parsed.attachments == ["big.bin"] and parsed.preview == "see attached"


def test_many_address_header() -> None:
    to = ", ".join(f"User {i} <user{i}@example.com>" for i in range(20_000))
    parsed = _timed(parse_message, corpus.simple(To=to))
    assert len(parsed.envelope.to) == 20_000


def test_image_only_message_has_no_preview() -> None:
    raw = b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo="
    parsed = parse_message(raw)
    assert parsed.preview == ""
    # RFC 8621 §4.1.4: a lone inline image is the body (textBody/htmlBody), not an attachment
    assert not parsed.has_attachment and parsed.attachments == []
