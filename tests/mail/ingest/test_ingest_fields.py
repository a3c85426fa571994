"""Header-level parsing: fields, encoded-words, parameters, addresses, dates, charsets,
thread keys."""

from __future__ import annotations

import calendar

import pytest

from stalwart_mp.mail.ingest import charsets
from stalwart_mp.mail.ingest.addresses import Address, parse_address_list
from stalwart_mp.mail.ingest.dates import parse_date
from stalwart_mp.mail.ingest.headers import header_fields, split_headers, unfold
from stalwart_mp.mail.ingest.params import parse_value
from stalwart_mp.mail.ingest.rfc2047 import decode_words
from stalwart_mp.mail.ingest.thread import base_subject, id_list, normalize_id

# --- header splitting -----------------------------------------------------------------------


def test_split_offsets_folding_and_obsolete_colon() -> None:
    raw = b"Subject: a\r\n b\r\n\tc\r\nX-Obs  : v\r\nTo: x\r\n\r\nbody"
    block = split_headers(raw, 0, len(raw), 1 << 20)
    assert [h.name for h in block.headers] == ["Subject", "X-Obs", "To"]
    subject = block.headers[0]
    assert subject.value == b" a\r\n b\r\n\tc"
    assert raw[subject.start : subject.end] == b"Subject: a\r\n b\r\n\tc\r\n"
    assert subject.text() == "a b\tc"
    assert block.headers[1].text() == "v"
    assert raw[block.body_start :] == b"body"


def test_split_lf_only_and_mixed_line_ends() -> None:
    raw = b"A: 1\nB: 2\r\n C\n\nbody\r\n"
    block = split_headers(raw, 0, len(raw), 1 << 20)
    assert [(h.name, h.text()) for h in block.headers] == [("A", "1"), ("B", "2 C")]
    assert raw[block.body_start :] == b"body\r\n"


def test_no_blank_line_body_starts_at_first_non_field_line() -> None:
    raw = b"Content-Type: text/plain\r\nThis is the body, no blank line.\r\n"
    block = split_headers(raw, 0, len(raw), 1 << 20)
    assert [h.name for h in block.headers] == ["Content-Type"]
    assert raw[block.body_start :] == b"This is the body, no blank line.\r\n"


def test_only_headers_and_empty() -> None:
    raw = b"Subject: x\r\nTo: y"
    block = split_headers(raw, 0, len(raw), 1 << 20)
    assert [h.text() for h in block.headers] == ["x", "y"]
    assert block.body_start == len(raw)
    empty = split_headers(b"", 0, 0, 1 << 20)
    assert empty.headers == [] and empty.body_start == 0


def test_mbox_from_line_skipped() -> None:
    raw = b"From alice@example.com Thu Feb 13 10:00:00 2025\nSubject: s\n\nb"
    block = split_headers(raw, 0, len(raw), 1 << 20)
    assert [h.name for h in block.headers] == ["Subject"]


def test_eight_bit_and_nul_header_values() -> None:
    raw = "Subject: caf\u00e9\r\n".encode() + b"X-Latin: caf\xe9\r\nX-Nul: a\x00b\r\n\r\n"
    block = split_headers(raw, 0, len(raw), 1 << 20)
    assert [h.decoded() for h in block.headers] == ["caf\u00e9", "caf\u00e9", "a\x00b"]


def test_max_header_bytes_keeps_body_offset() -> None:
    filler = b"".join(b"X-Fill-%d: %s\r\n" % (i, b"y" * 60) for i in range(2000))
    raw = b"Subject: first\r\n" + filler + b"\r\nbody"
    block = split_headers(raw, 0, len(raw), 4096)
    assert block.headers[0].text() == "first"
    assert sum(h.end - h.start for h in block.headers) <= 4096
    assert raw[block.body_start :] == b"body"


def test_unfold() -> None:
    assert unfold(b"a\r\n b\n\tc") == b"a b\tc"
    assert unfold(b"a\r\nb") == b"a b"  # a stray line end is not lost as text


def test_header_fields_from_index() -> None:
    raw = b"From: a@b\r\nSubject: s\r\nTo: c@d\r\nsubject: t\r\n\r\n"
    block = split_headers(raw, 0, len(raw), 1 << 20)
    index = [(h.lname, h.start, h.end) for h in block.headers]
    assert header_fields(raw, index, ["SUBJECT"]) == b"Subject: s\r\nsubject: t\r\n"
    assert header_fields(raw, index, ["subject"], exclude=True) == b"From: a@b\r\nTo: c@d\r\n"


# --- RFC 2047 encoded-words -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=?utf-8?q?caf=C3=A9?=", "caf\u00e9"),
        ("=?ISO-8859-1?Q?Andr=E9?= Pirard", "Andr\u00e9 Pirard"),
        ("=?utf-8?b?w6lsw6huZQ==?=", "\u00e9l\u00e8ne"),
        # RFC 2047 §8: whitespace between adjacent encoded-words is ignored
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
        ("=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab"),
        ("=?utf-8?q?a?= b", "a b"),
        # adjacent without whitespace (not RFC 2047, common)
        ("=?utf-8?q?a?==?utf-8?q?b?=", "ab"),
        ("x=?utf-8?q?y?=z", "xyz"),
        # a UTF-8 character split across two words
        ("=?utf-8?b?w6k=?= =?utf-8?b?w6g=?=", "\u00e9\u00e8"),
        ("=?utf-8?q?=C3?= =?utf-8?q?=A9?=", "\u00e9"),
        # language suffix (RFC 2231 §5)
        ("=?utf-8*en?q?hi?=", "hi"),
        # unpadded and junk-laden base64
        ("=?utf-8?b?aGVsbG8?=", "hello"),
        ("=?utf-8?b?aGV sbG8=?=", "hello"),
        # unknown charset: falls back to UTF-8
        ("=?x-klingon?q?caf=C3=A9?=", "caf\u00e9"),
        ("=?utf-8?q?bad=ZZhex?=", "bad=ZZhex"),
        ("=?utf-8?q?under_score?=", "under score"),
        ("plain text", "plain text"),
        ("=?utf-8?x?not-an-encoding?=", "=?utf-8?x?not-an-encoding?="),
        ("=?gb2312?b?1tDOxA==?=", "\u4e2d\u6587"),
        ("=?utf-8?q?a?= =?iso-8859-1?q?=E9?=", "a\u00e9"),
    ],
)
def test_encoded_words(value: str, expected: str) -> None:
    assert decode_words(value) == expected


# --- parameters (RFC 2045 §5.1, RFC 2231) ----------------------------------------------------


def test_params_quoted_comments_and_case() -> None:
    main, params = parse_value('Text/Plain (a comment); CHARSET="UTF-8" ; format=flowed')
    assert main == "text/plain"
    assert params == {"charset": "UTF-8", "format": "flowed"}


def test_params_boundary_with_specials_in_quotes() -> None:
    _, params = parse_value('multipart/mixed; boundary="=_a;b=c (d)"')
    assert params["boundary"] == "=_a;b=c (d)"


def test_params_unterminated_quote_and_spaces() -> None:
    _, params = parse_value('application/pdf; name="my file.pdf')
    assert params["name"] == "my file.pdf"
    _, params = parse_value("application/pdf; name = my file.pdf ; x=1")
    assert params == {"name": "my file.pdf", "x": "1"}


def test_rfc2231_continuations_and_charsets() -> None:
    _, params = parse_value(
        "attachment; filename*0*=utf-8''%E6%97%A5%E6%9C; filename*1*=%AC.txt; size=3"
    )
    assert params["filename"] == "\u65e5\u672c.txt"
    _, params = parse_value("attachment; filename*=iso-8859-1'fr'caf%E9.doc")
    assert params["filename"] == "caf\u00e9.doc"
    _, params = parse_value('attachment; filename*1="b.txt"; filename*0="a "')
    assert params["filename"] == "a b.txt"
    # the RFC 2231 form wins over the plain one
    _, params = parse_value("attachment; filename=x.txt; filename*=utf-8''y.txt")
    assert params["filename"] == "y.txt"


def test_encoded_word_in_parameter() -> None:
    _, params = parse_value('attachment; filename="=?utf-8?b?w6l0w6kucGRm?="')
    assert params["filename"] == "\u00e9t\u00e9.pdf"


# --- addresses (RFC 5322 §3.4, §4.4) -----------------------------------------------------------


def _emails(text: str) -> list[tuple[str | None, str | None, str | None]]:
    return [(a.name, a.mailbox, a.host) for a in parse_address_list(text)]


def test_addresses_basic_forms() -> None:
    assert _emails('"Doe, John" <john@example.com>, jane@example.com') == [
        ("Doe, John", "john", "example.com"),
        (None, "jane", "example.com"),
    ]
    assert _emails("John Q. Public <jqp@example.com>") == [
        ("John Q. Public", "jqp", "example.com")
    ]
    assert _emails("jane@example.com (Jane Doe)") == [("Jane Doe", "jane", "example.com")]
    assert _emails('"quoted local"@example.com') == [(None, "quoted local", "example.com")]
    assert _emails("<>") == [(None, "", "")]


def test_groups() -> None:
    addrs = parse_address_list("A Group: a@x.org, B <b@y.org>; c@z.org, undisclosed-recipients:;")
    assert [(a.name, a.mailbox, a.host) for a in addrs] == [
        (None, "A Group", None),
        (None, "a", "x.org"),
        ("B", "b", "y.org"),
        (None, None, None),
        (None, "c", "z.org"),
        (None, "undisclosed-recipients", None),
        (None, None, None),
    ]
    assert addrs[0].is_group_start and addrs[3].is_group_end
    # unterminated group is closed
    assert parse_address_list("G: a@b")[-1] == Address(None, None, None)


def test_obsolete_syntax() -> None:
    # obs-route, empty list elements, missing comma between addresses, comments in addr-spec
    addrs = parse_address_list("<@r1.org,@r2.org:user@host.org>, , <a@b.org> <c@d.org> e@f")
    route = (addrs[0].route, addrs[0].mailbox, addrs[0].host)
    assert route == ("@r1.org,@r2.org", "user", "host.org")
    assert [(a.mailbox, a.host) for a in addrs[1:]] == [("a", "b.org"), ("c", "d.org"), ("e", "f")]
    # an address used as display name
    assert _emails("a@b.org <a@b.org>") == [("a@b.org", "a", "b.org")]
    assert _emails("john (comment) @ example (x) . com") == [(None, "john", "example.com")]


def test_encoded_display_name_keeps_raw() -> None:
    (addr,) = parse_address_list("=?utf-8?q?Ren=C3=A9?= <rene@example.fr>")
    assert addr.name == "Ren\u00e9"
    assert addr.raw_name == "=?utf-8?q?Ren=C3=A9?="
    assert addr.display() == "Ren\u00e9 <rene@example.fr>"


def test_address_without_domain() -> None:
    assert _emails("Just Words") == [(None, "Just Words", "")]
    assert _emails("user") == [(None, "user", "")]


# --- dates (RFC 5322 §3.3, §4.3) ---------------------------------------------------------------

_T = calendar.timegm((2025, 2, 13, 10, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thu, 13 Feb 2025 10:00:00 +0000", _T),
        ("13 Feb 2025 10:00:00 +0000", _T),
        ("Thu, 13 Feb 2025 11:00:00 +0100", _T),
        ("Thu, 13 Feb 2025 05:00:00 EST", _T),
        ("Thu, 13 Feb 2025 02:00:00 PST", _T),
        ("Thu, 13 Feb 2025 10:00:00 GMT", _T),
        ("Thu, 13 Feb 2025 10:00:00 UT", _T),
        ("Thu, 13 Feb 2025 10:00:00 A", _T),  # military zone: -0000 (RFC 5322 §4.3)
        ("Thu, 13 Feb 25 10:00:00 +0000", _T),  # two-digit year
        ("Thu, 13 Feb 125 10:00:00 +0000", _T),  # three-digit year: 1900 + 125
        ("Thu, 13 Feb 2025 10:00 +0000", _T),  # no seconds
        ("Thu, 13 Feb 2025 10:00:00 +0000 (UTC)", _T),
        ("Thu,13 Feb 2025 10:00:00 +0000", _T),
        ("Thursday, 13 February 2025 10:00:00 +0000", _T),
        ("Thu, 13 Feb 2025 10:00:00", _T),  # no zone
        ("Thu Feb 13 10:00:00 2025", _T),  # asctime
        ("Thu, 13 Feb 99 10:00:00 +0000", calendar.timegm((1999, 2, 13, 10, 0, 0))),
        ("Thu, 31 Feb 2025 10:00:00 +0000", None),
        ("Thu, 13 Foo 2025 10:00:00 +0000", None),
        ("Thu, 13 Feb 2025 25:00:00 +0000", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_dates(text: str, expected: int | None) -> None:
    result = parse_date(text)
    assert result == (float(expected) if expected is not None else None)


# --- charsets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        ("caf\u00e9".encode(), "utf8", "caf\u00e9"),
        (b"caf\xe9", "latin1", "caf\u00e9"),
        (b"caf\xe9", "iso-8859-1", "caf\u00e9"),
        (b"\x93q\x94", "iso-8859-1", "\u201cq\u201d"),  # windows-1252 punctuation
        ("\ud55c\uad6d".encode("cp949"), "ks_c_5601-1987", "\ud55c\uad6d"),
        ("\u4e2d\u6587".encode("gb18030"), "gb2312", "\u4e2d\u6587"),
        ("\u05e9\u05dc\u05d5\u05dd".encode("iso-8859-8"), "iso-8859-8-i", "\u05e9\u05dc\u05d5\u05dd"),
        ("caf\u00e9".encode(), "x-unknown-thing", "caf\u00e9"),
        (b"caf\xe9", "x-unknown-thing", "caf\u00e9"),
        ("caf\u00e9".encode(), "us-ascii", "caf\u00e9"),  # mislabelled 8-bit
        (b"caf\xe9", "utf-8", "caf\u00e9"),  # invalid UTF-8: windows-1252
        (b"\x81\x8d", "utf-8", "\x81\x8d"),  # not windows-1252 either: Latin-1
        (b"abc", "base64", "abc"),  # a bytes codec is never used
        (b"abc", "rot13", "abc"),
        (b"\\u0041", "unicode_escape", "\\u0041"),
        (b"abc", None, "abc"),
        (b"abc", '"UTF-8"', "abc"),
    ],
)
def test_charsets(data: bytes, charset: str | None, expected: str) -> None:
    assert charsets.decode(data, charset) == expected


# --- thread keys (RFC 5256) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: hello", "hello"),
        ("RE: Re: re: hello", "hello"),
        ("Fwd: Fw: hello", "hello"),
        ("Re[2]: hello", "hello"),
        ("[list] Re: hello", "hello"),
        ("Re: [list] hello", "hello"),
        ("[list]", "[list]"),  # a blob is kept when nothing else would remain
        ("hello (fwd)", "hello"),
        ("hello (fwd) (FWD)", "hello"),
        ("[Fwd: Re: hello]", "hello"),
        ("  hello \t  world  ", "hello world"),
        ("Re:", ""),
        ("", ""),
        ("Reply to this", "Reply to this"),
    ],
)
def test_base_subject(subject: str, expected: str) -> None:
    assert base_subject(subject) == expected


def test_message_ids() -> None:
    assert normalize_id(" <Abc@Example.com> ") == "Abc@Example.com"
    assert normalize_id("<a @ b>") == "a@b"
    assert normalize_id("bare@id (comment)") == "bare@id"
    assert normalize_id("<>") is None
    assert id_list("<a@b> <c@d>\r\n <a@b>") == ["a@b", "c@d"]
    assert id_list("a@b (comment) c@d") == ["a@b", "c@d"]
    assert id_list("Your message of Tuesday") == []
