"""parse_message: envelope, BODYSTRUCTURE trees, preview, attachments, search text."""

from __future__ import annotations

from stalwart_mp.mail.ingest import bodystructure_tree, envelope_tree, parse_message, to_record
from tests.mail.ingest import corpus


def test_envelope_tree_field_order_and_defaults() -> None:
    raw = corpus.simple(
        Subject="=?utf-8?q?Re:_caf=C3=A9?=",
        To='"Doe, John" <john@example.org>, Team: x@y.z;',
        Cc="=?utf-8?q?Ren=C3=A9?= <rene@example.fr>",
        In_Reply_To="<prev@example.com>",
    )
    parsed = parse_message(raw)
    env = parsed.envelope
    assert env.subject == "Re: caf\u00e9" and env.subject_raw == b"=?utf-8?q?Re:_caf=C3=A9?="
    alice = [["Alice", None, "alice", "example.com"]]
    # RFC 9051 §7.5.2: date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to, msg-id;
    # sender and reply-to default to from
    assert envelope_tree(env) == [
        "Thu, 13 Feb 2025 10:00:00 +0000",
        "=?utf-8?q?Re:_caf=C3=A9?=",
        alice,
        alice,
        alice,
        [
            ["Doe, John", None, "john", "example.org"],
            [None, None, "Team", None],
            [None, None, "x", "y.z"],
            [None, None, None, None],
        ],
        [["=?utf-8?q?Ren=C3=A9?=", None, "rene", "example.fr"]],
        None,
        "<prev@example.com>",
        "<msg-1@example.com>",
    ]
    assert parsed.subject == "Re: caf\u00e9" and parsed.base_subject == "caf\u00e9"
    assert parsed.message_id == "msg-1@example.com"
    assert parsed.in_reply_to == ["prev@example.com"]
    assert parsed.sent_at == 1739440800.0


def test_envelope_explicit_sender_reply_to_and_missing_parts() -> None:
    raw = b"Sender: s@x\r\nReply-To:\r\nFrom: f@x\r\nTo: nodomain\r\n\r\n"
    env = parse_message(raw).envelope
    assert [a.email for a in env.sender] == ["s@x"]
    assert [a.email for a in env.reply_to] == ["f@x"]  # empty Reply-To: defaults to From
    tree = envelope_tree(env)
    assert tree[0] is None and tree[1] is None and tree[9] is None
    assert tree[5] == [[None, None, "nodomain", "MISSING_DOMAIN"]]


def test_bodystructure_tree_order() -> None:
    html = corpus.text_part("<p>Hi</p>", "html")
    alternative = (
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\n" + corpus.text_part("Hi") + b"\r\n--alt\r\n" + html + b"\r\n--alt--"
    )
    inner = b"Subject: in\r\nFrom: i@x\r\n\r\nline1\r\nline2\r\n"
    raw = corpus.multipart([
        alternative,
        corpus.attachment("r\u00e9sum\u00e9.pdf", b"%PDF-1.4", "application/pdf"),
        b"Content-Type: message/rfc822\r\nContent-Language: en\r\n\r\n" + inner,
    ])
    root = parse_message(raw).root
    text_plain = ["text", "plain", ["charset", "utf-8"], None, None, "8bit", 2, 1]
    text_html = ["text", "html", ["charset", "utf-8"], None, None, "8bit", 9, 1]
    pdf_size = root.section("2").size
    pdf = ["application", "pdf", ["name", "r\u00e9sum\u00e9.pdf"], None, None, "base64",
           pdf_size]
    inner_env = [None, "in", [[None, None, "i", "x"]], [[None, None, "i", "x"]],
                 [[None, None, "i", "x"]], None, None, None, None, None]
    inner_body = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", 14, 2]
    message = ["message", "rfc822", None, None, None, "7bit", len(inner), inner_env,
               inner_body, 5]
    assert bodystructure_tree(root, extended=False) == [
        [text_plain, text_html, "alternative"],
        pdf,
        message,
        "mixed",
    ]
    ext = bodystructure_tree(root, extended=True)
    assert ext[0] == [
        text_plain + [None, None, None, None],
        text_html + [None, None, None, None],
        "alternative", ["boundary", "alt"], None, None, None,
    ]
    assert ext[1] == pdf + [None, ["attachment", ["filename", "r\u00e9sum\u00e9.pdf"]], None,
                            None]
    assert ext[2][-4:] == [None, None, ["en"], None]
    assert ext[2][8] == inner_body + [None, None, None, None]
    assert ext[3:] == ["mixed", ["boundary", "BOUNDARY"], None, None, None]


def test_single_part_bodystructure() -> None:
    root = parse_message(corpus.simple()).root
    assert bodystructure_tree(root, extended=False) == [
        "text", "plain", ["charset", "us-ascii"], None, None, "7bit", 15, 1
    ]


def test_preview_plain_html_and_collapse() -> None:
    text = "  Hello\r\n\r\n   there,\tfriend.  " + "word " * 200
    parsed = parse_message(corpus.simple(text.encode()))
    assert parsed.preview.startswith("Hello there, friend. word word")
    assert len(parsed.preview) <= 256
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<script>alert(1)</script><p>Caf&eacute; &amp; cr&#232;me</p><!-- hidden --><br>"
        "next&nbsp;line</body></html>"
    )
    raw = corpus.multipart([corpus.text_part(html, "html")])
    assert parse_message(raw).preview == "Caf\u00e9 & cr\u00e8me next line"


def test_preview_prefers_plain_in_alternative() -> None:
    alt = corpus.multipart(
        [corpus.text_part("<p>html version</p>", "html"), corpus.text_part("plain version")],
        subtype="alternative",
    )
    parsed = parse_message(alt)
    assert parsed.preview == "plain version"
    assert parsed.text_for_search["body"] == "plain version"


def test_preview_skips_leading_attachment() -> None:
    raw = corpus.multipart(
        [corpus.attachment("a.txt", b"attached text", "text/plain"), corpus.text_part("body")]
    )
    parsed = parse_message(raw)
    assert parsed.preview == "body"
    assert parsed.attachments == ["a.txt"] and parsed.has_attachment
    assert parsed.text_for_search["attachments"] == ["a.txt", "attached text"]


def test_attachment_names_rfc2231_and_encoded_words() -> None:
    parts = [
        corpus.text_part("see attached"),
        (b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        b" filename*0*=utf-8''%E6%97%A5%E6%9C%AC;\r\n filename*1=\".pdf\"\r\n\r\nx"),
        b'Content-Type: application/octet-stream; name="=?utf-8?b?w6l0w6kuemlw?="\r\n\r\ny',
        b"Content-Type: image/png\r\nContent-ID: <logo@x>\r\n\r\nz",
    ]
    parsed = parse_message(corpus.multipart(parts))
    assert parsed.attachments == ["\u65e5\u672c.pdf", "\u00e9t\u00e9.zip"]
    assert parsed.has_attachment


def test_inline_image_alone_is_not_an_attachment() -> None:
    related = corpus.multipart(
        [corpus.text_part("<img src=cid:logo@x>", "html"),
         b"Content-Type: image/png\r\nContent-ID: <logo@x>\r\n\r\nz"],
        subtype="related",
    )
    parsed = parse_message(related)
    assert not parsed.has_attachment and parsed.attachments == []


def test_search_fields_and_header_values() -> None:
    raw = corpus.simple(
        b"body text\r\n",
        To="Bob <bob@example.org>, Group: g@x;",
        Cc="c@example.net",
        Bcc="d@example.net",
        X_Custom="=?utf-8?q?v=C3=A9?=",
        References="<a@x>\r\n <b@x>",
    )
    parsed = parse_message(raw)
    assert parsed.text_for_search == {
        "from": ["Alice <alice@example.com>"],
        "to": ["Bob <bob@example.org>", "g@x"],
        "cc": ["c@example.net"],
        "bcc": ["d@example.net"],
        "subject": "Greetings",
        "body": "body text\n",
        "attachments": [],
    }
    assert parsed.header_values("x-custom") == ["v\u00e9"]
    assert parsed.header_values("Missing") == []
    assert parsed.references == ["a@x", "b@x"]
    assert parsed.header_fields(raw, ["to", "cc"]) == (
        b"To: Bob <bob@example.org>, Group: g@x;\r\nCc: c@example.net\r\n"
    )


def test_bad_date_and_no_subject() -> None:
    parsed = parse_message(b"Date: not a date\r\n\r\nx")
    assert parsed.sent_at is None and parsed.envelope.date == "not a date"
    assert parsed.subject == "" and parsed.envelope.subject is None


def test_without_search_text_the_stored_record_is_the_same() -> None:
    """Delivery parses with ``search_text=False`` (the record does not keep the search text;
    the indexer builds it): everything stored is identical, only ``text_for_search`` is
    left empty."""
    messages = [
        corpus.simple(),
        corpus.multipart([corpus.text_part("plain version"),
                          corpus.text_part("<p>html</p>", "html"),
                          corpus.attachment("a.txt", b"attached text", "text/plain"),
                          corpus.attachment("b.bin", b"\x00\x01")]),
        corpus.nested(5),
    ]
    for raw in messages:
        full, lean = parse_message(raw), parse_message(raw, search_text=False)
        assert full.text_for_search and lean.text_for_search == {}
        assert to_record(lean) == to_record(full)
        assert (lean.preview, lean.attachments, lean.has_attachment) == \
            (full.preview, full.attachments, full.has_attachment)
