"""The sans-I/O IMAP layer with no sockets: reader, grammar (RFC 9051 examples), writer."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart_mp.imap.protocol import commands as c
from stalwart_mp.imap.protocol import reader as r
from stalwart_mp.imap.protocol import utf7, writer
from stalwart_mp.imap.protocol.parser import ParseError, parse_command


def read_all(data: bytes, bytewise: bool = False, **kw) -> list:
    rd = r.CommandReader(**kw)
    out = []
    chunks = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        rd.feed(chunk)
        while (ev := rd.next()) is not r.NEED_DATA:
            out.append(ev)
    return out


@pytest.mark.parametrize("bytewise", [False, True])
def test_reader_sync_literal_asks_for_continuation(bytewise):
    data = b"A003 APPEND saved-messages (\\Seen) {10}\r\n0123456789\r\na NOOP\r\n"
    events = read_all(data, bytewise)
    assert events == [r.Continue(10, append=True),
                      r.Complete(b"A003 APPEND saved-messages (\\Seen) {10}\r\n0123456789"),
                      r.Complete(b"a NOOP")]


def test_reader_non_sync_literal_needs_no_continuation():
    events = read_all(b"a LOGIN {5+}\r\nalice {2+}\r\npw\r\n")
    assert events == [r.Complete(b"a LOGIN {5+}\r\nalice {2+}\r\npw")]


def test_reader_refuses_oversized_literal_before_reading():
    rd = r.CommandReader(max_literal=100, max_append=1000)
    rd.feed(b"a1 LOGIN {101}\r\n")
    assert rd.next() == r.TooBig("a1", 101, 100, True, False)
    rd.feed(b"a2 APPEND INBOX {1001}\r\n")
    assert rd.next() == r.TooBig("a2", 1001, 1000, True, True)
    # a non-synchronizing one is dropped as it arrives, with the rest of its line
    rd.feed(b"a3 APPEND INBOX {2000+}\r\n" + b"x" * 1500)
    assert rd.next() == r.TooBig("a3", 2000, 1000, False, True)
    assert rd.next() is r.NEED_DATA and rd.buffered == 0
    rd.feed(b"x" * 500 + b" more\r\na4 NOOP\r\n")
    assert rd.next() == r.Complete(b"a4 NOOP")


def test_reader_line_too_long():
    rd = r.CommandReader(max_line=50)
    rd.feed(b"a1 NOOP " + b"x" * 100)
    assert rd.next() == r.LineTooLong("a1")
    rd.feed(b"yyy\r\na2 NOOP\r\n")
    assert rd.next() == r.Complete(b"a2 NOOP")


def test_reader_bare_lf_and_lines():
    rd = r.CommandReader()
    rd.feed(b"a NOOP\nDONE\r\n")
    assert rd.next() == r.Complete(b"a NOOP")
    assert rd.next_line() == b"DONE"
    assert rd.next_line() is r.NEED_DATA


# --- grammar: examples from RFC 9051 §6 ---------------------------------------------------

def test_login_and_authenticate():
    cmd = parse_command(b'a001 LOGIN SMITH SESAME')
    assert isinstance(cmd, c.Login) and (cmd.user, cmd.password) == ("SMITH", "SESAME")
    cmd = parse_command(b'a LOGIN "fred \\"x\\"" {3}\r\npw!')
    assert (cmd.user, cmd.password) == ('fred "x"', "pw!")
    cmd = parse_command(b"a01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=")
    assert cmd.mechanism == "PLAIN" and cmd.initial == b"dGVzdAB0ZXN0AHRlc3Q="
    assert parse_command(b"A001 AUTHENTICATE GSSAPI").initial is None
    assert parse_command(b"a AUTHENTICATE PLAIN =").initial == b"="


def test_select_examine_with_condstore_and_qresync():
    assert parse_command(b"A142 SELECT INBOX").mailbox == "INBOX"
    assert parse_command(b"A142 select inbox").mailbox == "INBOX"
    cmd = parse_command(b"A932 EXAMINE blurdybloop (CONDSTORE)")
    assert cmd.name == "EXAMINE" and cmd.condstore
    cmd = parse_command(b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 "
                        b"41,43:211,214:541))")
    assert cmd.qresync[0:2] == (67890007, 20050715194045000)
    assert cmd.qresync[2].ranges == ((41, 41), (43, 211), (214, 541))
    cmd = parse_command(b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 "
                        b"1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973)))")
    assert cmd.qresync[3][0].ranges[0] == (5000, 5000)


def test_mailbox_names_modified_utf7_and_utf8():
    cmd = parse_command(b"a CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-")
    assert cmd.mailbox == "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"
    assert parse_command("a CREATE Entwürfe".encode(), utf8=True).mailbox == "Entwürfe"
    assert parse_command(b"a CREATE \"Sent\" (USE (\\Sent))").special_use == ["\\Sent"]
    cmd = parse_command(b"A683 RENAME blurdybloop sarasoop")
    assert (cmd.old, cmd.new) == ("blurdybloop", "sarasoop")


def test_list_forms():
    cmd = parse_command(b'A101 LIST "" ""')
    assert cmd.reference == "" and cmd.patterns == [""] and not cmd.extended
    cmd = parse_command(b'A202 LIST ~/Mail/ %')
    assert cmd.reference == "~/Mail/" and cmd.patterns == ["%"]
    cmd = parse_command(b'A01 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Drafts" %) '
                        b'RETURN (CHILDREN STATUS (MESSAGES UNSEEN))')
    assert cmd.select_options == ["SUBSCRIBED", "RECURSIVEMATCH"]
    assert cmd.patterns == ["INBOX", "Drafts", "%"]
    assert cmd.return_options == ["CHILDREN", "STATUS"]
    assert cmd.status_items == ["MESSAGES", "UNSEEN"]
    assert parse_command(b'a LSUB "#news." "comp.mail.*"').patterns == ["comp.mail.*"]


def test_status_and_append():
    cmd = parse_command(b"A042 STATUS blurdybloop (UIDNEXT MESSAGES SIZE)")
    assert cmd.items == ["UIDNEXT", "MESSAGES", "SIZE"]
    with pytest.raises(ParseError, match="unknown STATUS item"):
        parse_command(b"A042 STATUS x (BOGUS)")
    msg = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\nHello\r\n"
    cmd = parse_command(b'A003 APPEND saved-messages (\\Seen) "07-Feb-1994 21:52:25 -0800" '
                        b"{%d}\r\n" % len(msg) + msg)
    assert cmd.messages[0].flags == ["\\Seen"]
    assert cmd.messages[0].date == 760686745.0
    assert cmd.messages[0].data == msg
    cmd = parse_command(b"A003 APPEND x {1}\r\na (\\Draft) {1+}\r\nb ~{1}\r\nc")
    assert [m.data for m in cmd.messages] == [b"a", b"b", b"c"]
    assert cmd.messages[2].binary


def test_fetch_items():
    cmd = parse_command(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    assert cmd.sequence.ranges == ((2, 4),)
    assert cmd.items[1] == c.FetchAtt("BODY", c.Section((), "HEADER.FIELDS", ("DATE", "FROM")))
    cmd = parse_command(b"a FETCH 1:* ALL")
    assert [i.name for i in cmd.items] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    cmd = parse_command(b"a UID FETCH 5,7:* (BODY.PEEK[1.2.MIME] BODY[]<0.2048> BINARY[1] "
                        b"BINARY.SIZE[2] RFC822.SIZE) (CHANGEDSINCE 12345 VANISHED)")
    assert cmd.uid and cmd.changed_since == 12345 and cmd.vanished
    assert cmd.items[0].section == c.Section((1, 2), "MIME")
    assert cmd.items[1].partial == (0, 2048)
    assert cmd.items[2].section.part == (1,)
    assert cmd.items[0].section.spec() == "1.2.MIME"
    assert parse_command(b"a FETCH 1 BODY").items == [c.FetchAtt("BODY")]
    with pytest.raises(ParseError, match="unknown fetch item"):
        parse_command(b"a FETCH 1 (BOGUS)")


def test_store_copy_move_expunge():
    cmd = parse_command(b"A003 STORE 2:4 +FLAGS (\\Deleted)")
    assert (cmd.mode, cmd.flags, cmd.silent) == ("+", ["\\Deleted"], False)
    cmd = parse_command(b"a STORE 1 -FLAGS.SILENT \\Seen $Junk")
    assert (cmd.mode, cmd.flags, cmd.silent) == ("-", ["\\Seen", "$Junk"], True)
    cmd = parse_command(b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)")
    assert cmd.unchanged_since == 320162338
    cmd = parse_command(b"A003 COPY 2:4 MEETING")
    assert cmd.mailbox == "MEETING" and cmd.name == "COPY"
    assert parse_command(b"a UID MOVE 42:69 foo").uid
    cmd = parse_command(b"A202 UID EXPUNGE 3000:3002")
    assert isinstance(cmd, c.Expunge) and cmd.sequence.ranges == ((3000, 3002),)


def test_search_keys():
    cmd = parse_command(b'A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 '
                        b'NOT FROM "Smith"')
    assert cmd.return_options == ["MIN", "COUNT"]
    assert cmd.key.op == "AND"
    flagged, since, not_ = cmd.key.children
    assert flagged.op == "FLAGGED" and since.value == (1994, 2, 1)
    assert not_.children[0] == c.SearchKey("FROM", "Smith")
    cmd = parse_command(b"a SEARCH CHARSET UTF-8 OR (SEEN 1:3) UID 5:* HEADER X-Foo bar")
    assert cmd.charset == "UTF-8"
    or_, header = cmd.key.children
    assert or_.op == "OR" and or_.children[0].children[1].op == "SEQ"
    assert header.value == ("X-Foo", "bar")
    assert parse_command(b"a SEARCH $").key.value.saved
    cmd = parse_command(b"a SEARCH TEXT {4}\r\ntext MODSEQ 620162338")
    assert cmd.key.children[1] == c.SearchKey("MODSEQ", 620162338)
    cmd = parse_command(b"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL")
    assert cmd.sort == [("SUBJECT", False), ("DATE", True)] and cmd.charset == "UTF-8"
    cmd = parse_command(b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000")
    assert cmd.algorithm == "ORDEREDSUBJECT"
    with pytest.raises(ParseError):
        parse_command(b"a SEARCH " + b"(" * 200 + b"ALL" + b")" * 200)


def test_sequence_sets():
    s = parse_command(b"a FETCH 1:3,5,7:* FLAGS").sequence
    assert s.resolve(9) == [1, 2, 3, 5, 7, 8, 9]
    assert parse_command(b"a FETCH *:4 FLAGS").sequence.resolve(6) == [4, 5, 6]
    assert parse_command(b"a UID FETCH 100:* FLAGS").sequence.members([3, 7]) == [7]
    for bad in (b"a FETCH 0 FLAGS", b"a FETCH 1:: FLAGS", b"a FETCH 4294967296 FLAGS"):
        with pytest.raises(ParseError):
            parse_command(bad)


@pytest.mark.parametrize("line,reason", [
    (b"", "tag"), (b"a", "a space"), (b"a FOO", "unknown command FOO"),
    (b"a UID NOOP", "UID NOOP is not a command"), (b"a LOGIN x", "a space"),
    (b'a LOGIN "unterminated', "unterminated"), (b"a NOOP extra", "end of the command"),
    (b"a SELECT", "a space"), (b"a STORE 1 FLAGZ x", "FLAGS"),
])
def test_bad_commands_name_the_problem(line, reason):
    with pytest.raises(ParseError) as info:
        parse_command(line)
    assert reason in info.value.message
    if line.startswith(b"a"):
        assert info.value.tag == "a"


def test_id_enable_quota():
    cmd = parse_command(b'a023 ID ("name" "sodr" "version" "19.34" "vendor" NIL)')
    assert cmd.params == {"name": "sodr", "version": "19.34", "vendor": None}
    assert parse_command(b"a ID NIL").params is None
    assert parse_command(b"t2 ENABLE CONDSTORE qresync").capabilities == ["CONDSTORE",
                                                                          "QRESYNC"]
    assert parse_command(b'G0001 GETQUOTAROOT INBOX').mailbox == "INBOX"
    assert parse_command(b'S0000 SETQUOTA "" (STORAGE 512)').limits == {"STORAGE": 512}


# --- writer -------------------------------------------------------------------------------

def test_writer_strings_and_lists():
    assert writer.encode(None) == b"NIL"
    assert writer.encode(["a b", 3, None, [writer.Atom("\\Seen")]]) == \
        b'("a b" 3 NIL (\\Seen))'
    assert writer.encode('say "hi"\\') == b'"say \\"hi\\"\\\\"'
    assert writer.encode("line\r\nbreak") == b"{11}\r\nline\r\nbreak"
    assert writer.encode("Grüße") == b"{7}\r\nGr\xc3\xbc\xc3\x9fe"
    assert writer.encode("Grüße", utf8=True) == '"Grüße"'.encode()
    assert writer.encode(b"raw") == b"{3}\r\nraw"
    assert writer.encode(writer.Literal8(b"\x00\x01")) == b"~{2}\r\n\x00\x01"
    assert writer.tagged("a1", "OK", "done", "READ-WRITE") == b"a1 OK [READ-WRITE] done\r\n"
    assert writer.fetch(12, [("FLAGS", [writer.Atom("\\Seen")]), ("UID", 4)]) == \
        b"* 12 FETCH (FLAGS (\\Seen) UID 4)\r\n"
    assert writer.sequence_set([1, 2, 3, 5, 8, 9]) == "1:3,5,8:9"


def test_modified_utf7_round_trip():
    assert utf7.encode("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e") == \
        "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert utf7.encode("A&B") == "A&-B"
    for name in ("Entwürfe", "A&B", "日本語/x", "plain", "Ünïcödé & more"):
        assert utf7.decode(utf7.encode(name)) == name
    assert writer.mailbox_name("Entwürfe", False) == b'"Entw&APw-rfe"'
    assert writer.mailbox_name("Entwürfe", True) == '"Entwürfe"'.encode()
    with pytest.raises(utf7.Utf7Error):
        utf7.decode("&U,BTFw")


# --- fuzzing: any bytes give a command, a BAD with a reason, or a request for more ------------


_WORDS = st.sampled_from([b"a", b"UID", b"FETCH", b"SEARCH", b"STORE", b"APPEND", b"LIST", b" ",
                          b"(", b")", b"[", b"]", b"{3}\r\n", b"{2+}\r\n", b"\"", b"\\", b"*",
                          b"1:*", b"$", b"BODY[1.HEADER]", b"<0.5>", b"INBOX", b"NIL", b"~{1}",
                          b"FLAGS", b"+FLAGS", b"OR", b"NOT", b"\r\n", b"\x00", b"\xc3\xa9"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORDS, max_size=30))
def test_parser_never_crashes(words):
    data = b"".join(words)
    try:
        parse_command(data)
    except ParseError as exc:
        assert exc.message and exc.tag


@settings(max_examples=200, deadline=None)
@given(st.lists(_WORDS, max_size=30), st.integers(1, 7))
def test_reader_same_events_whole_or_in_pieces(words, step):
    data = b"".join(words) + b"\r\n"

    def run(chunk: int) -> list:
        rd = r.CommandReader(max_line=200, max_literal=50, max_append=100)
        out = []
        for i in range(0, len(data), chunk):
            rd.feed(data[i:i + chunk])
            while (ev := rd.next()) is not r.NEED_DATA:
                out.append(ev)
        return out

    assert run(len(data)) == run(step)


def test_metadata_commands():
    cmd = parse_command(b'a GETMETADATA (MAXSIZE 1024 DEPTH infinity) INBOX '
                        b'(/private/comment /shared/comment)')
    assert (cmd.maxsize, cmd.depth) == (1024, "infinity")
    assert cmd.entries == ["/private/comment", "/shared/comment"]
    cmd = parse_command(b'a SETMETADATA "" (/private/comment {3}\r\nabc /shared/x NIL)')
    assert cmd.mailbox == "" and cmd.values == {"/private/comment": b"abc", "/shared/x": None}


# Command examples of RFC 9051 §6 (and the extension RFCs), each parsed to its command.
RFC_EXAMPLES = [
    (b"abcd CAPABILITY", "CAPABILITY"),
    (b"a002 NOOP", "NOOP"),
    (b"A023 LOGOUT", "LOGOUT"),
    (b"a001 STARTTLS", "STARTTLS"),
    (b"A001 AUTHENTICATE GSSAPI", "AUTHENTICATE"),
    (b"a001 LOGIN SMITH SESAME", "LOGIN"),
    (b"t2 ENABLE CONDSTORE", "ENABLE"),
    (b"A142 SELECT INBOX", "SELECT"),
    (b"A932 EXAMINE blurdybloop", "EXAMINE"),
    (b"A003 CREATE owatagusiam/", "CREATE"),
    (b"A004 CREATE owatagusiam/blurdybloop", "CREATE"),
    (b"A682 LIST \"\" *", "LIST"),
    (b"A683 DELETE blurdybloop", "DELETE"),
    (b"A685 DELETE foo", "DELETE"),
    (b"A683 RENAME blurdybloop sarasoop", "RENAME"),
    (b"A002 SUBSCRIBE #news.comp.mail.mime", "SUBSCRIBE"),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime", "UNSUBSCRIBE"),
    (b"A101 LIST \"\" \"\"", "LIST"),
    (b"A102 LIST #news.comp.mail.misc \"\"", "LIST"),
    (b"A103 LIST /usr/staff/jones \"\"", "LIST"),
    (b"A202 LIST ~/Mail/ %", "LIST"),
    (b"A02 LIST (SUBSCRIBED) \"\" \"*\"", "LIST"),
    (b"A03 LIST () \"\" \"%\" RETURN (CHILDREN)", "LIST"),
    (b"A04 LIST (REMOTE) \"\" \"%\" RETURN (CHILDREN)", "LIST"),
    (b"A05 LIST (REMOTE SUBSCRIBED) \"\" \"*\"", "LIST"),
    (b"A06 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN)", "LIST"),
    (b"C04 LIST (SPECIAL-USE) \"\" \"*\"", "LIST"),
    (b"A01 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))", "LIST"),
    (b"A002 NAMESPACE", "NAMESPACE"),
    (b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)", "STATUS"),
    (b"A003 APPEND saved-messages (\\Seen) {5}\r\nHello", "APPEND"),
    (b"a002 IDLE", "IDLE"),
    (b"A341 CLOSE", "CLOSE"),
    (b"a UNSELECT", "UNSELECT"),
    (b"A202 EXPUNGE", "EXPUNGE"),
    (b"A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"", "SEARCH"),
    (b"A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"", "SEARCH"),
    (b"A284 SEARCH TEXT \"string not in mailbox\"", "SEARCH"),
    (b"A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0",
     "SEARCH"),
    (b"A286 SEARCH CHARSET INVALID TEXT \"Bogus\"", "SEARCH"),
    (b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])", "FETCH"),
    (b"A003 STORE 2:4 +FLAGS (\\Deleted)", "STORE"),
    (b"A003 COPY 2:4 MEETING", "COPY"),
    (b"a UID MOVE 42:69 foo", "MOVE"),
    (b"A999 UID FETCH 4827313:4828442 FLAGS", "FETCH"),
    (b"A003 UID STORE 4827313:4828442 +FLAGS (\\Deleted)", "STORE"),
    (b"A004 UID SEARCH 1:100 UID 443:557", "SEARCH"),
    ((b"a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music "
     b"Limited\")"), "ID"),
    (b"A001 GETQUOTAROOT INBOX", "GETQUOTAROOT"),
    (b"G0001 GETQUOTA \"!partition/sda4\"", "GETQUOTA"),
    (b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994", "SORT"),
    (b"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL", "SORT"),
    (b"A284 SORT (SUBJECT) US-ASCII TEXT \"not in mailbox\"", "SORT"),
    (b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000", "THREAD"),
    (b"A284 THREAD ORDEREDSUBJECT US-ASCII TEXT \"gewp\"", "THREAD"),
    (b"a1 SETMETADATA INBOX (/private/comment {33}\r\nMy new comment across\r\ntwo lines.)",
     "SETMETADATA"),
    (b"a GETMETADATA (DEPTH 1) \"\" \"/private/vendor/vendor.coyote\"", "GETMETADATA"),
    (b"A001 SETACL INBOX/Drafts John lrQswicda", "SETACL"),
    (b"A002 GETACL INBOX/Drafts", "GETACL"),
    (b"a LISTRIGHTS ~/Mail/saved smith", "LISTRIGHTS"),
    (b"A003 MYRIGHTS INBOX", "MYRIGHTS"),
    (b"a DELETEACL ~/Mail/saved smith", "DELETEACL"),
    (b"a COMPRESS DEFLATE", "COMPRESS"),
    (b"A003 REPLACE 4 Drafts (\\Seen \\Draft) {5}\r\nHello", "REPLACE"),
    (b"a UNAUTHENTICATE", "UNAUTHENTICATE"),
]


@pytest.mark.parametrize("line,name", RFC_EXAMPLES, ids=[n for _, n in RFC_EXAMPLES])
def test_rfc_examples_parse(line, name):
    assert parse_command(line).name == name


def test_reader_lets_the_session_refuse_an_append_before_its_literal():
    from stalwart_mp.imap.protocol.parser import append_target

    rd = r.CommandReader()
    rd.feed(b"q APPEND \"Entw&APw-rfe\" (\\Seen) {400}\r\n")
    assert rd.next() == r.Continue(400, True)
    assert append_target(rd.first_line()) == "Entwürfe"
    assert rd.abandon() == "q"
    rd.feed(b"n NOOP\r\n")
    assert rd.next() == r.Complete(b"n NOOP")
    assert append_target(b"a LOGIN x y") is None
