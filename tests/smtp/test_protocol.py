"""The sans-I/O SMTP/LMTP server protocol: events, replies, transitions, hostile input."""
from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart_mp.smtp import protocol
from stalwart_mp.smtp import replies as r
from stalwart_mp.smtp.address import AddressError, decode_xtext, parse_path
from stalwart_mp.smtp.protocol import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    BadSequence,
    BadSyntax,
    BdatChunk,
    Body,
    Data,
    ErrorEvent,
    Expn,
    Helo,
    Help,
    MailFrom,
    MessageData,
    Noop,
    ProtocolUsageError,
    Quit,
    RcptTo,
    Refused,
    Rset,
    SmtpProtocol,
    StartTls,
    State,
    Unknown,
    Vrfy,
)

OK = r.reply(250, "2.0.0", "OK")


def default_reply(event) -> r.Reply:
    """What a permissive session would answer."""
    if isinstance(event, ErrorEvent):
        return event.reply
    if isinstance(event, Data):
        return r.reply(354, None, "Go ahead")
    if isinstance(event, Quit):
        return r.reply(221, "2.0.0", "Bye")
    if isinstance(event, StartTls):
        return r.reply(220, "2.0.0", "Ready to start TLS")
    if isinstance(event, Auth):
        return r.reply(334, None, "")
    if isinstance(event, AuthResponse):
        return r.reply(235, "2.7.0", "Authenticated")
    if isinstance(event, Helo):
        return r.ehlo_reply("mx.example", "hello", ["PIPELINING", "CHUNKING"])
    return OK


def drain(proto: SmtpProtocol, answer=default_reply) -> list:
    events = []
    while True:
        ev = proto.next_event()
        if ev in (NEED_DATA, PAUSED, CLOSED):
            return events
        events.append(ev)
        proto.send(answer(ev))


def run(data: bytes, **kw) -> list:
    p = SmtpProtocol(**kw)
    p.receive_data(data)
    return drain(p)


def run_bytewise(data: bytes, **kw) -> list:
    p = SmtpProtocol(**kw)
    events = []
    for i in range(len(data)):
        p.receive_data(data[i:i + 1])
        events += drain(p)
    return events


def greeted(**kw) -> SmtpProtocol:
    p = SmtpProtocol(**kw)
    p.receive_data(b"LHLO client.example\r\n" if kw.get("lmtp") else b"EHLO client.example\r\n")
    assert len(drain(p)) == 1
    return p


def one(p: SmtpProtocol, data: bytes):
    p.receive_data(data)
    events = drain(p)
    assert len(events) == 1, events
    return events[0]


TRANSACTION = (b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"
               b"RCPT TO:<b@example.net>\r\nDATA\r\n")


# ---- replies ----------------------------------------------------------------------------

def test_reply_serialization_single_multi_and_enhanced_codes():
    p = SmtpProtocol()
    assert p.send(r.reply(220, None, "mx.example ESMTP")) == b"220 mx.example ESMTP\r\n"
    assert r.reply(250, "2.1.0", "a", "b").to_bytes() == b"250-2.1.0 a\r\n250 2.1.0 b\r\n"
    assert r.reply(550, "5.1.1", "x\r\n250 injected").to_bytes() == \
        b"550 5.1.1 x  250 injected\r\n"
    assert r.reply(250, "2.0.0", "ok").to_bytes(enhanced=False) == b"250 ok\r\n"
    with pytest.raises(ValueError):
        r.reply(250, "5.0.0", "class mismatch")
    with pytest.raises(ValueError):
        r.reply(700, None, "bad")


def test_ehlo_reply_has_no_enhanced_code_but_later_replies_do():
    p = SmtpProtocol()
    p.receive_data(b"EHLO c.example\r\nNOOP\r\n")
    assert isinstance(p.next_event(), Helo)
    wire = p.send(r.ehlo_reply("mx.example", "hi", ["SIZE 1000", "LIMITS RCPTMAX=10"]))
    assert wire == b"250-mx.example hi\r\n250-SIZE 1000\r\n250 LIMITS RCPTMAX=10\r\n"
    assert isinstance(p.next_event(), Noop)
    assert p.send(OK) == b"250 2.0.0 OK\r\n"
    q = SmtpProtocol(enhanced_status_codes=False)
    q.receive_data(b"NOOP\r\n")
    q.next_event()
    assert q.send(OK) == b"250 OK\r\n"


# ---- happy paths ------------------------------------------------------------------------

def test_full_transaction_with_dot_stuffing():
    body = b"Subject: t\r\n\r\n..leading dot\r\n.\r\n"
    events = run(TRANSACTION + body + b"QUIT\r\n")
    assert events[0] == Helo("client.example", True, False)
    assert events[1] == MailFrom("a@example.org")
    assert events[2] == RcptTo("b@example.net")
    assert events[3] == Data()
    assert events[4] == MessageData(b"Subject: t\r\n\r\n.leading dot\r\n")
    assert events[5] == Quit()


def test_empty_message_and_commands_after_data():
    events = run(TRANSACTION + b".\r\nRSET\r\n")
    assert events[4] == MessageData(b"")
    assert events[5] == Rset()


def test_simple_commands():
    events = run(b"HELO c.example\r\nNOOP anything\r\nHELP mail\r\nVRFY bob\r\nEXPN list\r\n"
                 b"rset\r\nquit\r\n")
    assert events == [Helo("c.example", False, False), Noop(), Help("mail"), Vrfy("bob"),
                      Expn("list"), Rset(), Quit()]


def test_helo_literal_and_errors():
    assert run(b"EHLO [192.0.2.1]\r\n") == [Helo("[192.0.2.1]", True, False)]
    for bad in (b"EHLO\r\n", b"EHLO a b\r\n", b"HELO -bad-\r\n"):
        (ev,) = run(bad)
        assert isinstance(ev, BadSyntax) and ev.reply.code == 501


def test_mail_params_parsed():
    p = greeted(max_message_size=1000)
    ev = one(p, b"MAIL FROM:<a@b.example> size=999 BODY=binarymime SMTPUTF8 RET=hdrs "
                b"ENVID=QQ+2B1 AUTH=<> REQUIRETLS\r\n")
    assert ev == MailFrom("a@b.example", ev.params)
    prm = ev.params
    assert (prm.size, prm.body, prm.smtputf8, prm.ret, prm.envid, prm.auth, prm.requiretls) == \
        (999, Body.BINARY_MIME, True, "HDRS", "QQ+1", "<>", True)
    ev = one(p, b"RCPT TO:<c@d.example> NOTIFY=success,delay ORCPT=rfc822;c+40d.example\r\n")
    assert ev.params.notify == ("SUCCESS", "DELAY")
    assert ev.params.orcpt == ("rfc822", "c@d.example")


@pytest.mark.parametrize("line,code,enhanced", [
    (b"MAIL FROM:<a@b.example> FOO=1\r\n", 555, "5.5.4"),  # RFC 5321 §4.1.1.11
    (b"MAIL FROM:<a@b.example> SIZE=x\r\n", 501, "5.5.4"),
    (b"MAIL FROM:<a@b.example> SIZE=1001\r\n", 552, "5.3.4"),  # RFC 1870 §6.3
    (b"MAIL FROM:<a@b.example> BODY=9BIT\r\n", 501, "5.5.4"),
    (b"MAIL FROM:<a@b.example> RET=ALL\r\n", 501, "5.5.4"),
    (b"MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n", 501, "5.5.4"),
    (b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n", 501, "5.5.4"),
    (b"MAIL FROM:<a@b.example> ENVID=+zz\r\n", 501, "5.5.4"),
    (b"MAIL FROM:a@b.example\r\n", 501, "5.1.7"),
    (b"MAIL FROM:<a@b.example\r\n", 501, "5.1.7"),
    (b"MAIL FROM:<@b.example>\r\n", 501, "5.1.7"),
    (b"MAIL FROM:<a..b@c.example>\r\n", 501, "5.1.7"),
    (b"MAIL TO:<a@b.example>\r\n", 501, "5.5.4"),
    (b"MAIL FROM:<a@b.example>SIZE=1\r\n", 501, "5.5.4"),
    ("MAIL FROM:<pelé@b.example>\r\n".encode(), 553, "5.6.7"),  # RFC 6531 §3.5
    (b"MAIL FROM:<" + b"a" * 65 + b"@b.example>\r\n", 501, "5.1.7"),  # RFC 5321 §4.5.3.1.1
    (b"MAIL FROM:<a@\xff.example>\r\n", 501, "5.5.2"),
])
def test_mail_errors(line, code, enhanced):
    p = greeted(max_message_size=1000)
    ev = one(p, line)
    assert isinstance(ev, ErrorEvent) and (ev.reply.code, ev.reply.enhanced) == (code, enhanced)
    assert p.state is State.READY
    assert isinstance(one(p, b"MAIL FROM:<ok@b.example>\r\n"), MailFrom)  # still usable


def test_smtputf8_addresses_allowed_with_parameter():
    p = greeted()
    ev = one(p, "MAIL FROM:<pelé@exämple.fr> SMTPUTF8\r\n".encode())
    assert ev == MailFrom("pelé@exämple.fr", ev.params)
    assert one(p, "RCPT TO:<josé@b.example>\r\n".encode()) == RcptTo("josé@b.example")


def test_paths_null_sender_postmaster_quoted_and_source_route():
    p = greeted()
    assert one(p, b"MAIL FROM:<>\r\n") == MailFrom("")
    assert one(p, b"RCPT TO:<Postmaster>\r\n") == RcptTo("postmaster")
    assert one(p, b'RCPT TO:<"john doe>x"@b.example>\r\n') == RcptTo('"john doe>x"@b.example')
    assert one(p, b"RCPT TO:<@relay.example,@r2.example:c@d.example>\r\n") == \
        RcptTo("c@d.example")
    assert one(p, b"RCPT TO: <spaced@d.example>\r\n") == RcptTo("spaced@d.example")
    ev = one(p, b"RCPT TO:<>\r\n")
    assert isinstance(ev, BadSyntax) and ev.reply.enhanced == "5.1.3"
    ev = one(p, b"RCPT TO:<c@d.example> FOO\r\n")
    assert ev.reply.code == 555


def test_address_helpers():
    with pytest.raises(AddressError) as exc:
        parse_path("<a@" + "b" * 260 + ">", utf8=False, allow_null=False, allow_postmaster=False)
    assert exc.value.too_long
    assert parse_path("<a@[IPv6:::1]>", utf8=False, allow_null=False,
                      allow_postmaster=False).domain == "[IPv6:::1]"
    assert decode_xtext("a+3Db") == "a=b"
    with pytest.raises(ValueError):
        decode_xtext("a=b")


# ---- sequence (RFC 5321 §4.1.4) ---------------------------------------------------------

def test_sequence_errors():
    p = SmtpProtocol()
    ev = one(p, b"MAIL FROM:<a@b.example>\r\n")
    assert isinstance(ev, BadSequence) and ev.reply.code == 503
    p = greeted()
    assert one(p, b"RCPT TO:<a@b.example>\r\n").reply == r.BAD_SEQUENCE_MAIL
    assert one(p, b"DATA\r\n").reply == r.BAD_SEQUENCE_MAIL
    one(p, b"MAIL FROM:<a@b.example>\r\n")
    assert one(p, b"MAIL FROM:<a@b.example>\r\n").reply == r.NESTED_MAIL
    assert one(p, b"DATA\r\n").reply == r.BAD_SEQUENCE_RCPT
    # all recipients refused by the session: 554 no valid recipients (RFC 2920 §3.1)
    p.receive_data(b"RCPT TO:<x@b.example>\r\n")
    ev = p.next_event()
    p.send(r.reply(550, "5.1.1", "No such user"))
    assert one(p, b"DATA\r\n").reply == r.NO_VALID_RECIPIENTS
    assert one(p, b"DATA extra\r\n").reply.code == 501
    assert isinstance(ev, RcptTo)


def test_refused_mail_does_not_open_transaction_and_rset_clears():
    p = greeted()
    p.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    p.next_event()
    p.send(r.reply(550, "5.7.1", "No"))
    assert p.state is State.READY
    one(p, b"MAIL FROM:<a@b.example>\r\n")
    one(p, b"RCPT TO:<c@d.example>\r\n")
    assert p.state is State.RCPT
    assert one(p, b"RSET\r\n") == Rset()
    assert p.state is State.READY
    assert one(p, b"RSET x\r\n").reply.code == 501


def test_max_recipients():
    p = greeted(max_recipients=2)
    one(p, b"MAIL FROM:<a@b.example>\r\n")
    one(p, b"RCPT TO:<1@b.example>\r\n")
    one(p, b"RCPT TO:<2@b.example>\r\n")
    ev = one(p, b"RCPT TO:<3@b.example>\r\n")
    assert isinstance(ev, Refused) and ev.reply == r.TOO_MANY_RECIPIENTS
    assert p.recipients == 2


def test_usage_error_when_reply_not_sent():
    p = SmtpProtocol()
    p.receive_data(b"NOOP\r\nNOOP\r\n")
    p.next_event()
    with pytest.raises(ProtocolUsageError):
        p.next_event()


def test_unknown_and_malformed_commands():
    (ev,) = run(b"FOO bar\r\n")
    assert isinstance(ev, Unknown) and ev.verb == "FOO" and ev.reply.code == 500
    (ev,) = run(b"\r\n")
    assert isinstance(ev, Unknown)
    (ev,) = run(b"NO\x00OP\r\n")
    assert isinstance(ev, BadSyntax)
    (ev,) = run(b"LHLO x.example\r\n")
    assert isinstance(ev, Unknown)  # LHLO is not an SMTP command


# ---- line handling ----------------------------------------------------------------------

def test_bare_lf_command_rejected():
    events = run(b"NOOP\nNOOP\r\n")
    assert events == [BadSyntax(r.BARE_NEWLINE), Noop()]


def test_long_lines():
    limit = 600
    ok_line = b"NOOP " + b"x" * (limit - 7) + b"\r\n"
    assert len(ok_line) == limit
    assert run(ok_line, max_line=limit) == [Noop()]
    long_line = b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n"
    for events in (run(long_line, max_line=limit), run_bytewise(long_line, max_line=limit)):
        assert events == [BadSyntax(r.LINE_TOO_LONG), Noop()]
    with pytest.raises(ValueError):
        SmtpProtocol(max_line=100)


# ---- pipelining & byte-at-a-time --------------------------------------------------------

PIPELINED = (TRANSACTION + b"line 1\r\n..\r\n.\r\n"
             b"MAIL FROM:<x@y.example>\r\nRCPT TO:<z@y.example>\r\nBDAT 5\r\nab\r\ncBDAT 0 LAST\r\n"
             b"NOOP\r\nQUIT\r\n")


def test_pipelined_events_in_order_and_bytewise_identical():
    whole = run(PIPELINED)
    assert [type(e) for e in whole] == [Helo, MailFrom, RcptTo, Data, MessageData, MailFrom,
                                        RcptTo, BdatChunk, MessageData, Noop, Quit]
    assert whole[4] == MessageData(b"line 1\r\n.\r\n")
    assert whole[7] == BdatChunk(5)
    assert whole[8] == MessageData(b"ab\r\nc", chunked=True)
    assert run_bytewise(PIPELINED) == whole


# ---- DATA size and smuggling --------------------------------------------------------------

def _message_of(size: int) -> bytes:
    line = b"x" * (size - 2) + b"\r\n"
    return line


def test_message_exactly_at_and_over_limit():
    at = _message_of(100)
    events = run(TRANSACTION + at + b".\r\nNOOP\r\n", max_message_size=100)
    assert events[4] == MessageData(at) and events[5] == Noop()
    over = _message_of(101)
    events = run(TRANSACTION + over + b".\r\nNOOP\r\n", max_message_size=100)
    assert events[4] == Refused(r.MESSAGE_TOO_BIG) and events[5] == Noop()
    assert run_bytewise(TRANSACTION + over + b".\r\nNOOP\r\n", max_message_size=100) == events
    # stuffed dots do not count towards the size (limit is on the unstuffed message)
    stuffed = b"." + _message_of(100)
    assert run(TRANSACTION + stuffed + b".\r\n", max_message_size=100)[4] == \
        MessageData(stuffed[1:])


def test_long_data_line_flushed_and_unstuffed():
    line = b"." + b"y" * 30000 + b"\r\n"
    data = TRANSACTION + line + b".\r\n"
    assert run(data)[4] == MessageData(line[1:])
    assert run_bytewise(data)[4] == MessageData(line[1:])


@pytest.mark.parametrize("smuggle", [
    b"a\n.\r\nMAIL FROM:<evil@x.example>\r\n",
    b"a\r\n.\nMAIL FROM:<evil@x.example>\r\n",
    b"a\n.\nMAIL FROM:<evil@x.example>\r\n",
    b"a\r.\r\nMAIL FROM:<evil@x.example>\r\n",
    b"a\r\n.\rMAIL FROM:<evil@x.example>\r\n",
    b"a\r.\rMAIL FROM:<evil@x.example>\r\n",
])
def test_smuggling_patterns_are_not_end_of_data_and_are_refused(smuggle):
    data = TRANSACTION + smuggle + b"more\r\n.\r\nNOOP\r\n"
    events = run(data)
    assert [type(e) for e in events] == [Helo, MailFrom, RcptTo, Data, Refused, Noop]
    assert events[4].reply == r.SMUGGLING
    assert run_bytewise(data) == events


def test_bare_lf_elsewhere_is_kept():
    body = b"a\nb\r\n.x\nc\r\n"
    assert run(TRANSACTION + body + b".\r\n")[4] == MessageData(b"a\nb\r\nx\nc\r\n")


# ---- BDAT (RFC 3030) ----------------------------------------------------------------------

def test_bdat_binary_chunk_with_terminator_inside():
    p = greeted()
    one(p, b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n")
    one(p, b"RCPT TO:<c@d.example>\r\n")
    chunk = b"\x00\xff\r\n.\r\nQUIT\r\n"
    assert one(p, b"BDAT %d\r\n" % len(chunk) + chunk) == BdatChunk(len(chunk))
    assert one(p, b"BDAT 3 last\r\nxyz") == MessageData(chunk + b"xyz", chunked=True)
    assert p.state is State.READY


def test_bdat_errors_discard_chunk():
    p = greeted()
    ev = one(p, b"BDAT 12\r\nQUIT\r\nQUIT\r\n")
    assert isinstance(ev, BadSequence)
    assert p.state is State.READY  # the QUITs inside the chunk were never commands
    assert one(p, b"BDAT x\r\n").reply.code == 501
    assert one(p, b"BDAT 1 FIRST\r\n").reply.code == 501
    one(p, b"MAIL FROM:<a@b.example>\r\n")
    one(p, b"RCPT TO:<c@d.example>\r\n")
    assert one(p, b"BDAT 2\r\nab") == BdatChunk(2)
    assert one(p, b"RCPT TO:<e@d.example>\r\n").reply == r.MIXED_DATA_BDAT
    assert one(p, b"DATA\r\n").reply == r.MIXED_DATA_BDAT  # RFC 3030 §2
    assert p.state is State.READY


def test_bdat_too_big_and_binarymime_with_data():
    p = greeted(max_message_size=10)
    one(p, b"MAIL FROM:<a@b.example>\r\n")
    one(p, b"RCPT TO:<c@d.example>\r\n")
    assert one(p, b"BDAT 6\r\n123456") == BdatChunk(6)
    assert one(p, b"BDAT 6 LAST\r\n123456") == Refused(r.MESSAGE_TOO_BIG)
    assert p.state is State.READY
    one(p, b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n")
    one(p, b"RCPT TO:<c@d.example>\r\n")
    assert one(p, b"DATA\r\n").reply == r.BINARYMIME_NEEDS_BDAT


def test_bdat_chunk_refused_by_session_fails_transaction():
    p = greeted()
    one(p, b"MAIL FROM:<a@b.example>\r\n")
    one(p, b"RCPT TO:<c@d.example>\r\n")
    p.receive_data(b"BDAT 2\r\nab")
    assert p.next_event() == BdatChunk(2)
    p.send(r.reply(452, "4.3.1", "Disk full"))
    assert p.state is State.READY
    assert isinstance(one(p, b"BDAT 1 LAST\r\nz"), BadSequence)


# ---- STARTTLS -----------------------------------------------------------------------------

def test_starttls_injection_is_returned_not_parsed():
    p = greeted()
    p.receive_data(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@x.example>\r\n")
    assert p.next_event() == StartTls()
    p.send(r.reply(220, "2.0.0", "Ready"))
    assert p.next_event() is PAUSED
    p.receive_data(b"more")
    trailing = p.start_tls()
    assert trailing == b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@x.example>\r\nmore"
    assert p.state is State.NEED_HELO and p.tls and p.helo is None
    assert p.next_event() is NEED_DATA
    assert isinstance(one(p, b"MAIL FROM:<a@b.example>\r\n"), BadSequence)
    assert one(p, b"EHLO c.example\r\n") == Helo("c.example", True, False)
    assert one(p, b"STARTTLS\r\n").reply == r.ALREADY_TLS


def test_starttls_refused_resumes_and_preconditions():
    p = SmtpProtocol()
    assert isinstance(one(p, b"STARTTLS\r\n"), BadSequence)
    p = greeted()
    p.receive_data(b"STARTTLS\r\nNOOP\r\n")
    assert p.next_event() == StartTls()
    p.send(r.reply(454, "4.7.0", "TLS not available"))
    assert p.next_event() == Noop()
    p.send(OK)
    with pytest.raises(ProtocolUsageError):
        p.start_tls()
    assert one(p, b"STARTTLS now\r\n").reply.code == 501
    one(p, b"MAIL FROM:<a@b.example>\r\n")
    assert one(p, b"STARTTLS\r\n").reply == r.TRANSACTION_IN_PROGRESS


# ---- AUTH (RFC 4954) ----------------------------------------------------------------------

def test_auth_exchange_and_state():
    p = greeted()
    p.receive_data(b"AUTH LOGIN\r\n" + base64.b64encode(b"user") + b"\r\n"
                   + base64.b64encode(b"pass") + b"\r\n")
    assert p.next_event() == Auth("LOGIN", None)
    p.send(r.reply(334, None, "VXNlcm5hbWU6"))
    assert p.state is State.AUTH
    assert p.next_event() == AuthResponse(b"user")
    p.send(r.reply(334, None, "UGFzc3dvcmQ6"))
    assert p.next_event() == AuthResponse(b"pass")
    p.send(r.reply(235, "2.7.0", "Authentication successful"))
    assert p.authenticated and p.state is State.READY
    assert one(p, b"AUTH PLAIN\r\n").reply == r.ALREADY_AUTHENTICATED


def test_auth_initial_response_cancel_and_errors():
    p = greeted()
    assert one(p, b"AUTH plain =\r\n") == Auth("PLAIN", b"")
    p = greeted()
    assert one(p, b"AUTH PLAIN AGEAYg==\r\n") == Auth("PLAIN", b"\x00a\x00b")
    p = greeted()
    assert one(p, b"AUTH PLAIN !!!\r\n").reply == r.BAD_BASE64
    p.receive_data(b"AUTH LOGIN\r\n*\r\n")
    p.next_event()
    p.send(r.reply(334, None, ""))
    assert p.next_event() == AuthResponse(b"", cancelled=True)
    p.send(r.AUTH_CANCELLED)
    assert p.state is State.READY
    p.receive_data(b"AUTH LOGIN\r\nnot base64!\r\n")
    p.next_event()
    p.send(r.reply(334, None, ""))
    assert p.next_event().reply == r.BAD_BASE64
    p.send(r.BAD_BASE64)
    assert p.state is State.READY
    h = SmtpProtocol()
    h.receive_data(b"HELO c.example\r\n")
    drain(h)
    assert one(h, b"AUTH PLAIN\r\n").reply == r.AUTH_NEEDS_EHLO
    assert one(greeted(), b"AUTH TOO-LONG-MECHANISM-NAME-X\r\n").reply.code == 501


def test_auth_lines_may_be_longer_than_commands():
    p = greeted(max_line=600)
    p.receive_data(b"AUTH PLAIN\r\n")
    p.next_event()
    p.send(r.reply(334, None, ""))
    payload = base64.b64encode(b"x" * 3000)
    assert one(p, payload + b"\r\n") == AuthResponse(b"x" * 3000)


# ---- LMTP (RFC 2033) ----------------------------------------------------------------------

def test_lmtp_lhlo_and_helo_refused():
    p = SmtpProtocol(lmtp=True)
    assert isinstance(one(p, b"EHLO c.example\r\n"), Unknown)
    assert one(p, b"MAIL FROM:<a@b.example>\r\n").reply == r.BAD_SEQUENCE_LHLO
    assert one(p, b"LHLO c.example\r\n") == Helo("c.example", True, True)
    one(p, b"MAIL FROM:<a@b.example>\r\n")
    one(p, b"RCPT TO:<c@d.example>\r\n")
    one(p, b"RCPT TO:<e@d.example>\r\n")
    p.receive_data(b"DATA\r\nhi\r\n.\r\n")
    p.next_event()
    p.send(r.reply(354, None, "go"))
    assert p.next_event() == MessageData(b"hi\r\n")
    # one reply per recipient (RFC 2033 §4.2): the second send is plain serialization
    assert p.send(r.reply(250, "2.1.5", "c OK")) == b"250 2.1.5 c OK\r\n"
    assert p.send(r.reply(452, "4.2.2", "e full")) == b"452 4.2.2 e full\r\n"
    assert p.state is State.READY


# ---- fuzzing ------------------------------------------------------------------------------

ALPHABET = st.sampled_from([b"EHLO x.example\r\n", b"MAIL FROM:<a@b.example>\r\n",
                            b"RCPT TO:<c@d.example>\r\n", b"DATA\r\n", b"BDAT 3\r\n",
                            b"BDAT 2 LAST\r\n", b".\r\n", b"\r\n", b"\n", b"\r", b".",
                            b"STARTTLS\r\n", b"AUTH PLAIN\r\n", b"*\r\n", b"RSET\r\n", b"x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), ALPHABET), max_size=40),
       st.booleans())
def test_fuzz_never_raises_and_stays_usable(chunks, lmtp):
    data = b"".join(chunks)
    p = SmtpProtocol(lmtp=lmtp, max_line=512, max_message_size=200)
    events = []
    for chunk in chunks:
        p.receive_data(chunk)
        events += drain(p)
    if p.state is State.PAUSED:
        p.start_tls()
    if p.state not in (State.CLOSED,):
        # whatever happened, RSET (or the end of a DATA/BDAT/AUTH) leads back to commands
        p.receive_data(b"\r\n.\r\n*\r\nRSET\r\n")
        drain(p)
    q = SmtpProtocol(lmtp=lmtp, max_line=512, max_message_size=200)
    q.receive_data(data)
    assert drain(q) == events  # one feed and per-chunk feeds agree


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_data_content_round_trip(content):
    """Any content made SMTP-safe (CRLF only, dot-stuffed) comes back unchanged."""
    body = content.replace(b"\r", b"").replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    stuffed = b"\r\n".join((b"." + ln if ln.startswith(b".") else ln)
                           for ln in body.split(b"\r\n"))
    events = run(TRANSACTION + stuffed + b".\r\n")
    assert events[4] == MessageData(body)


def _reference_data(stream: bytes, max_size: int) -> tuple[object, bytes]:
    """RFC 5321 §4.5.2 / §4.1.1.4 the slow, obvious way: one line at a time. Returns the
    event for the DATA content at the start of ``stream`` and the bytes left after it."""
    parts, size, smuggled, prev = [], 0, False, b"\r\n"  # prev: the 2 raw bytes before
    pos = 0
    while True:
        nl = stream.find(b"\n", pos)
        if nl < 0:
            return None, b""
        line, pos = stream[pos:nl + 1], nl + 1
        if prev == b"\r\n" and line == b".\r\n":
            break
        if re.search(rb"(?:\r\n|\n|\r)\.(?:\r\n|\n|\r)", prev + line):
            smuggled = True
        kept = line[1:] if prev == b"\r\n" and line.startswith(b".") else line
        size += len(kept)
        parts.append(kept)
        prev = (prev + line)[-2:]
    if smuggled:
        return Refused(r.SMUGGLING), stream[pos:]
    if size > max_size:
        return Refused(r.MESSAGE_TOO_BIG), stream[pos:]
    return MessageData(b"".join(parts)), stream[pos:]


DATA_ALPHABET = st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"x", b"\r\n.\r\n",
                                 b"\r\n.", b".\r\n", b"abc"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(DATA_ALPHABET, st.binary(max_size=8)), max_size=60),
       st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=20),
       st.integers(min_value=0, max_value=80), st.sampled_from([8192, 3, 7]))
def test_fuzz_data_reading_matches_line_by_line_model(pieces, cuts, max_size, flush):
    """DATA is read a whole buffer at a time (bytes.find/replace, not a loop per line): any
    content, fed in any pieces, gives the event and the leftover a line-by-line reader gives:
    the same end, unstuffing, smuggling refusal and size limit. A small ``flush`` makes
    every long line go through the partial-line path."""
    saved, protocol._DATA_FLUSH = protocol._DATA_FLUSH, flush
    try:
        _check_data_against_model(pieces, cuts, max_size)
    finally:
        protocol._DATA_FLUSH = saved


def _check_data_against_model(pieces: list[bytes], cuts: list[int], max_size: int) -> None:
    stream = b"".join(pieces) + b"\r\n.\r\nNOOP\r\n"
    expected, rest = _reference_data(stream, max_size)
    p = greeted(max_message_size=max_size)
    for line in (b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.net>\r\n",
                 b"DATA\r\n"):
        one(p, line)
    events, pos, i = [], 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        p.receive_data(stream[pos:pos + size])
        pos, i = pos + size, i + 1
        events += drain(p)
    assert events[0] == expected
    after = greeted()  # what follows the end of data is read as commands
    after.receive_data(rest)
    assert events[1:] == drain(after)
