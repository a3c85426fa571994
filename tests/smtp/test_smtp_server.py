"""SMTP (MX), submission and LMTP served by a real server, driven with smtplib."""
from __future__ import annotations

import smtplib
import socket
import ssl

import pytest

from tests.dns_server import dns_zone  # noqa: F401 - the fixture
from tests.harness import http_get
from tests.smtp.smtp_env import mail_server
from tests.smtp.smtp_env import mailbox as _mailbox
from tests.smtp.smtp_env import queue_with_bodies

MESSAGE = (b"From: Ann <ann@remote.test>\r\nTo: alice@example.org\r\nSubject: Hi\r\n"
           b"Message-ID: <m1@remote.test>\r\n\r\nHello Alice.\r\n")


@pytest.fixture
def server(tmp_path, dns_zone):  # noqa: F811
    dns_port, zone = dns_zone
    zone["remote.test"] = {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]}
    zone["_dmarc.strict.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    srv = mail_server(tmp_path, dns_port, {"smtp": ("smtp", ""),
                                           "submission": ("submission", ""),
                                           "lmtp": ("lmtp", "")})
    srv.zone = zone
    yield srv
    srv.stop()


def test_mx_delivers_locally_with_trace_and_authentication_results(server):
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as c:
        code, text = c.ehlo("client.remote.test")
        assert code == 250
        features = text.decode()
        for ext in ("PIPELINING", "8BITMIME", "CHUNKING", "SIZE 20000", "STARTTLS",
                    "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN"):
            assert ext in features
        assert "AUTH" not in features, "no AUTH on the MX port"
        refused = c.sendmail("ann@remote.test", ["alice@example.org"], MESSAGE)
        assert refused == {}
    (stored,), _ = _mailbox(server.folder, "alice")
    assert stored.endswith(MESSAGE), "the message itself is byte-exact"
    head = stored[: -len(MESSAGE)].decode()
    assert head.startswith("Authentication-Results: mail.test.example;")
    assert "spf=fail" in head and "smtp.mailfrom=ann@remote.test" in head
    assert "spf=none smtp.helo=client.remote.test" in head, "the HELO identity is checked too"
    assert "Received: from client.remote.test ([127.0.0.1])" in head


def test_mx_refuses_unknown_users_and_relaying(server):
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as c:
        c.ehlo("client.remote.test")
        c.mail("ann@remote.test")
        assert c.rcpt("nobody@example.org")[0] == 550
        code, text = c.rcpt("someone@elsewhere.test")
        assert (code, text.startswith(b"5.7.1")) == (550, True)
        code, _ = c.rcpt("alice@example.org")
        assert code == 250
        c.rset()


def test_dmarc_reject_policy_is_applied(server):
    msg = MESSAGE.replace(b"ann@remote.test", b"boss@strict.test")
    with (smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as c,
          pytest.raises(smtplib.SMTPDataError) as exc):
        c.sendmail("boss@strict.test", ["alice@example.org"], msg)
    assert exc.value.smtp_code == 550
    assert _mailbox(server.folder, "alice")[0] == []


def _tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_submission_requires_auth_then_delivers_and_queues(server):
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as c:
        c.ehlo("laptop")
        assert c.mail("alice@example.org")[0] == 530
        c.rset()
        c.starttls(context=_tls())
        c.ehlo("laptop")
        assert "SCRAM-SHA-256" in c.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("alice", "wrong")
        c.login("alice", "alice-pw")
        assert c.mail("bob@example.org")[0] == 553, "alice may not send as bob"
        c.rset()
        refused = c.sendmail("alice@example.org", ["bob@example.org", "friend@remote.test"],
                             b"From: alice@example.org\r\nSubject: x\r\n\r\nhi\r\n")
        assert refused == {}
    bob_inbox, queue = _mailbox(server.folder, "bob")
    assert len(bob_inbox) == 1 and b"with ESMTPSA" in bob_inbox[0]
    assert [r.address for m in queue for r in m.recipients] == ["friend@remote.test"]
    assert queue[0].authenticated_as == "alice"


def test_mailing_list_forwards_to_its_external_members(tmp_path, dns_zone):  # noqa: F811
    """A list's local members get the message; its external members get it through the
    queue, with the original envelope sender and the list's address as ORCPT; a list of
    external members only is not acknowledged and dropped. Over LMTP too."""
    dns_port, zone = dns_zone
    zone["remote.test"] = {"TXT": ["v=spf1 -all"]}
    srv = mail_server(tmp_path, dns_port, {"smtp": ("smtp", ""), "lmtp": ("lmtp", "")},
                      lists={"team": ["alice@example.org", "Friend@Remote.test",
                                      "other@far.test"],
                             "outside": ["friend@remote.test"]})
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as c:
            c.ehlo("client.remote.test")
            assert c.sendmail("ann@remote.test", ["team@example.org"], MESSAGE) == {}
            assert c.sendmail("ann@remote.test", ["outside@example.org"], MESSAGE) == {}
        with smtplib.LMTP("127.0.0.1", srv.ports["lmtp"], timeout=10) as c:
            c.ehlo("relay.example.org")
            assert c.sendmail("bob@remote.test", ["outside@example.org"], MESSAGE) == {}
        inbox, queue = _mailbox(srv.folder, "alice")
        assert len(inbox) == 1
        assert [(m.mail_from, [(r.address, r.orcpt) for r in m.recipients]) for m in queue] == [
            ("ann@remote.test", [("friend@remote.test", "rfc822;team@example.org"),
                                 ("other@far.test", "rfc822;team@example.org")]),
            ("ann@remote.test", [("friend@remote.test", "rfc822;outside@example.org")]),
            ("bob@remote.test", [("friend@remote.test", "rfc822;outside@example.org")])]
    finally:
        srv.stop()


def test_permanent_failure_after_data_is_refused_or_bounced(tmp_path, dns_zone):  # noqa: F811
    """With delivery.over-quota = "permanent", a message too big for bob's quota: refused
    after DATA (552 5.2.2) when bob is the only recipient; accepted for alice and bounced
    for bob (a failure DSN to the sender, null envelope sender) when both are; no DSN for
    a null sender, nor for NOTIFY=NEVER; a "delivered" DSN for NOTIFY=SUCCESS."""
    dns_port, zone = dns_zone
    zone["remote.test"] = {"TXT": ["v=spf1 -all"]}
    srv = mail_server(tmp_path, dns_port, {"smtp": ("smtp", "")},
                      outbound='enabled = false\n[delivery]\nover-quota = "permanent"\n')
    big = MESSAGE + b"x" * 400  # over bob's 300-byte quota
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as c:
            c.ehlo("client.remote.test")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail("ann@remote.test", ["bob@example.org"], big)
            assert refused.value.smtp_code == 552 and b"5.2.2" in refused.value.smtp_error
            c.rset()
            assert c.sendmail("ann@remote.test", ["alice@example.org", "bob@example.org"],
                              big) == {}
            assert c.sendmail("", ["alice@example.org", "bob@example.org"], big) == {}
            # RFC 3461: NOTIFY=NEVER asks for no DSN at all; NOTIFY=SUCCESS for a
            # "delivered" one, with the ORCPT given
            assert c.sendmail("ann@remote.test", ["alice@example.org", "bob@example.org"], big,
                              rcpt_options=["NOTIFY=NEVER"]) == {}
            assert c.sendmail("ann@remote.test", ["alice@example.org"], MESSAGE,
                              rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;list+2Bx@a.test"]) \
                == {}
        inbox, _ = _mailbox(srv.folder, "alice")
        assert len(inbox) == 4
        [(failure, body), (success, delivered)] = queue_with_bodies(srv.folder)
        assert failure.mail_from == "" and [r.address for r in failure.recipients] == \
            ["ann@remote.test"]
        assert b"Final-Recipient: rfc822; bob@example.org" in body
        assert b"Action: failed" in body and b"Status: 5.2.2" in body
        assert b"alice@example.org" not in body.split(b"message/delivery-status")[1] \
            .split(b"message/rfc822")[0]
        assert success.mail_from == "" and b"Action: delivered" in delivered
        assert b"Final-Recipient: rfc822; alice@example.org" in delivered
        assert b"Original-Recipient: rfc822;list+x@a.test" in delivered
        metrics = http_get(srv.http_port, "/metrics")[2].decode()
        assert 'stalwart_dsn_sent_total{action="failed"} 1.0' in metrics
        assert 'stalwart_dsn_sent_total{action="delivered"} 1.0' in metrics
    finally:
        srv.stop()


def test_starttls_injection_is_not_executed(server):
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10) as raw:
        raw.recv(1000)
        raw.sendall(b"EHLO x\r\n")
        raw.recv(2000)
        raw.sendall(b"STARTTLS\r\nRSET\r\n")  # RSET smuggled before the handshake
        assert raw.recv(1000).startswith(b"220")
        tls = _tls().wrap_socket(raw, server_hostname="mail.test.example")
        tls.sendall(b"NOOP\r\n")
        answer = tls.recv(1000)
        assert answer.startswith(b"250"), "only the NOOP is answered, not the RSET"
        tls.close()


def test_bdat_and_size_limit(server):
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO x\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        body = MESSAGE
        s.sendall(b"MAIL FROM:<ann@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
                  + b"BDAT %d LAST\r\n" % len(body) + body)
        answers = [f.readline() for _ in range(3)]
        assert [a[:3] for a in answers] == [b"250", b"250", b"250"]
        s.sendall(b"MAIL FROM:<ann@remote.test> SIZE=999999\r\n")
        assert f.readline().startswith(b"552 5.3.4")
        s.sendall(b"QUIT\r\n")
    assert len(_mailbox(server.folder, "alice")[0]) == 1


def test_lmtp_answers_per_recipient(server):
    with smtplib.LMTP("127.0.0.1", server.ports["lmtp"], timeout=10) as c:
        c.ehlo("mta.example.org")  # smtplib.LMTP sends LHLO
        c.mail("ann@remote.test")
        assert c.rcpt("alice@example.org")[0] == 250
        assert c.rcpt("bob@example.org")[0] == 250
        big = MESSAGE + b"x" * 400  # over bob's 300-byte quota
        c.putcmd("data")
        assert c.getreply()[0] == 354
        c.send(big.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        first, second = c.getreply(), c.getreply()
    assert first[0] == 250 and second[0] == 452
    assert len(_mailbox(server.folder, "alice")[0]) == 1
    assert _mailbox(server.folder, "bob")[0] == []
