"""DNS blocklists and greylisting on the MX, against a real server and a loopback DNS."""
from __future__ import annotations

import smtplib
import socket
import time

import pytest

from stalwart_mp.smtp.policy import dnsbl_name
from tests.dns_server import dns_zone  # noqa: F401 - the fixture
from tests.smtp.smtp_env import mail_server, mailbox

MESSAGE = b"From: ann@remote.test\r\nSubject: policy\r\n\r\nhello\r\n"


@pytest.fixture
def server(tmp_path, dns_zone):  # noqa: F811
    port, zone = dns_zone
    zone["55.2.0.192.bl.test"] = {"A": ["127.0.0.2"], "TXT": ["listed for testing"]}
    srv = mail_server(tmp_path, port, {"mx": ("smtp", ""),
                                       "lb": ("smtp", "proxy-protocol = true\n")},
                      smtp='dnsbl.zones = ["bl.test"]\ngreylist.enabled = true\n'
                           'greylist.delay = "1s"\n')
    yield srv
    srv.stop()


def _session_via_proxy(port: int, client_ip: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n".encode())
    return s


def _lines(s: socket.socket, count: int) -> list[bytes]:
    f = s.makefile("rb")
    out = []
    while len(out) < count:
        line = f.readline()
        if line[3:4] == b" ":
            out.append(line)
    return out


def test_dnsbl_names():
    assert dnsbl_name("192.0.2.55", "bl.test") == "55.2.0.192.bl.test"
    assert dnsbl_name("2001:db8::1", "bl.test.").startswith("1.0.0.0.0.0.0.0")
    assert dnsbl_name("2001:db8::1", "bl.test").endswith(".8.b.d.0.1.0.0.2.bl.test")


def test_listed_client_is_refused_and_others_are_not(server):
    with _session_via_proxy(server.ports["lb"], "192.0.2.55") as s:
        s.sendall(b"EHLO spammer.test\r\nMAIL FROM:<x@spammer.test>\r\nQUIT\r\n")
        greeting, ehlo, mail, _ = _lines(s, 4)
    assert greeting.startswith(b"220") and ehlo.startswith(b"250")
    assert mail.startswith(b"554 5.7.1 Client host [192.0.2.55] blocked using bl.test")
    with _session_via_proxy(server.ports["lb"], "192.0.2.56") as s:  # not listed
        s.sendall(b"EHLO fine.test\r\nMAIL FROM:<x@fine.test>\r\nQUIT\r\n")
        assert _lines(s, 4)[2].startswith(b"250")


def test_first_attempt_is_greylisted_and_the_retry_accepted(server):
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as c:
        c.ehlo("mta.remote.test")
        c.mail("ann@remote.test")
        code, text = c.rcpt("alice@example.org")
        assert (code, text.startswith(b"4.7.1 Greylisted")) == (451, True)
        c.rset()
        c.mail("other@remote.test")  # another triplet is greylisted on its own
        assert c.rcpt("alice@example.org")[0] == 451
        c.rset()
    time.sleep(1.3)
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as c:
        assert c.sendmail("ann@remote.test", ["alice@example.org"], MESSAGE) == {}
    assert len(mailbox(server.folder, "alice")[0]) == 1


@pytest.fixture
def strict_server(tmp_path, dns_zone):  # noqa: F811
    port, _ = dns_zone
    srv = mail_server(tmp_path, port, {"mx": ("smtp", "")},
                      smtp='greeting-delay = "0.5s"\nrate-limit.ip = 3\nmax-received = 5\n')
    yield srv
    srv.stop()


def test_early_talker_is_refused(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.ports["mx"]), timeout=10) as s:
        s.sendall(b"EHLO impatient.test\r\n")  # before the greeting
        assert s.recv(200).startswith(b"554 5.5.1")
        assert s.recv(200) == b"", "then dropped"
    with smtplib.SMTP("127.0.0.1", strict_server.ports["mx"], timeout=10) as c:
        assert c.ehlo("patient.test")[0] == 250, "a client that waits is served"


def test_mail_loop_and_rate_limit(strict_server):
    looping = b"".join(b"Received: from hop%d\r\n" % i for i in range(6)) + MESSAGE
    with smtplib.SMTP("127.0.0.1", strict_server.ports["mx"], timeout=10) as c:
        with pytest.raises(smtplib.SMTPDataError) as exc:
            c.sendmail("ann@remote.test", ["alice@example.org"], looping)
        assert (exc.value.smtp_code, exc.value.smtp_error[:5]) == (554, b"5.4.6")
        # that was message 1 of 3 allowed per window from this address
        assert c.sendmail("ann@remote.test", ["alice@example.org"], MESSAGE) == {}
        assert c.sendmail("ann@remote.test", ["alice@example.org"], MESSAGE) == {}
        code, text = c.mail("ann@remote.test")
        assert (code, text[:5]) == (451, b"4.7.1") and b"Rate limit exceeded" in text
