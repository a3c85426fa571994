"""SMTP inbound driven by real clients: smtplib over implicit TLS, SASL SCRAM by hand,
pipelining and SMTPUTF8 on raw sockets, every limit's reply, DKIM/DMARC with dkimpy, swaks,
and durability of acknowledged messages while workers are SIGKILLed.

One server (module scope) serves most tests; each test uses its own Message-IDs, so tests
never depend on one another's mail. The kill -9 test starts its own server.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from stalwart_mp.mail.records import Role
from tests.dns_server import DnsServer, Zone
from tests.harness import Server
from tests.services import require_service
from tests.smtp.smtp_env import mail_server, mailbox

HOSTNAME = "mail.test.example"
ACCOUNTS: list[tuple[str, str, int | None]] = [
    (name, f"{name}-pw", None) for name in ("alice", "carol", "dave", "erin")]
SMTP_SETTINGS = "max-message-size = 20000\nmax-recipients = 3\n"
LISTENERS = {
    "mx": ("smtp", ""),
    "mx_idle": ("smtp", "timeout = 2\n"),
    "submission": ("submission", ""),
    "submissions": ("submission", "tls.implicit = true\n"),
}


@dataclass
class Env:
    server: Server
    zone: Zone
    dkim_key: bytes  # PEM private key of s=sel, d=signed.test

    @property
    def folder(self) -> Path:
        return self.server.folder

    def port(self, name: str) -> int:
        return self.server.ports[name]

    @property
    def ca_file(self) -> Path:
        return self.folder / "data" / "tls" / "self-signed.crt"


def _dkim_key() -> tuple[bytes, str]:
    """(PEM private key, the DKIM TXT record publishing its public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory, dns: DnsServer) -> Iterator[Env]:
    pem, record = _dkim_key()
    dns.zone.update({
        "remote.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
        "sel._domainkey.signed.test": {"TXT": [record]},
        "_dmarc.signed.test": {"TXT": ["v=DMARC1; p=reject"]},
        "quarantine.test": {"TXT": ["v=spf1 -all"]},
        "_dmarc.quarantine.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    })
    srv = mail_server(tmp_path_factory.mktemp("clients"), dns.port, LISTENERS,
                      smtp=SMTP_SETTINGS, accounts=ACCOUNTS)
    yield Env(srv, dns.zone, pem)
    srv.stop()


# --- helpers -----------------------------------------------------------------------------

def message_id() -> str:
    return f"<{uuid.uuid4().hex}@remote.test>"


def make_message(mid: str, sender: str = "ann@remote.test", to: str = "alice@example.org",
                 body: bytes = b"Hello.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: test\r\nMessage-ID: {mid}\r\n\r\n"
            .encode() + body)


_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


def message_ids(messages: list[bytes]) -> list[str]:
    out = []
    for raw in messages:
        head = raw.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        out.append(found.group(1).decode() if found else "")
    return out


def stored(env: Env, account: str, mid: str, role: str = Role.INBOX) -> list[bytes]:
    """The stored messages of ``account``'s folder whose Message-ID is ``mid``."""
    messages = mailbox(env.folder, account, role)[0]
    return [m for m, i in zip(messages, message_ids(messages), strict=True) if i == mid]


def verified_tls(env: Env) -> ssl.SSLContext:
    """Trusts only the server's self-signed certificate, and checks the host name."""
    ctx = ssl.create_default_context(cafile=str(env.ca_file))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


class SMTPS(smtplib.SMTP_SSL):
    """SMTP_SSL to 127.0.0.1 that checks the certificate against the server's host name."""

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=HOSTNAME)


class Raw:
    """A line-level SMTP client on a socket: exact bytes out, exact replies in."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.file = sock.makefile("rb")

    @classmethod
    def connect(cls, port: int, *, tls: ssl.SSLContext | None = None,
                timeout: float = 10) -> Raw:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=HOSTNAME)
        client = cls(sock)
        assert client.reply()[0] == 220
        return client

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """One reply: (code, text of the last line)."""
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            if line[3:4] != b"-":
                return int(line[:3]), line[4:].rstrip(b"\r\n").decode()

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def at_eof(self) -> bool:
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# --- implicit TLS submission (RFC 8314) and SASL -----------------------------------------

def test_implicit_tls_certificate_is_verified(env: Env) -> None:
    with SMTPS("127.0.0.1", env.port("submissions"), context=verified_tls(env),
               timeout=10) as c:
        code, text = c.ehlo("laptop")
        assert code == 250
        features = text.decode()
        assert "STARTTLS" not in features, "already encrypted"
        assert "REQUIRETLS" in features
        assert c.esmtp_features["auth"].split() == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
                                                    "LOGIN", "OAUTHBEARER", "XOAUTH2"]
    with pytest.raises(ssl.SSLCertVerificationError):  # the system CAs do not trust it
        SMTPS("127.0.0.1", env.port("submissions"), context=ssl.create_default_context(),
              timeout=10)


def test_implicit_tls_auth_plain_delivers_with_esmtpsa(env: Env) -> None:
    mid = message_id()
    with SMTPS("127.0.0.1", env.port("submissions"), context=verified_tls(env),
               timeout=10) as c:
        c.ehlo("laptop")
        assert c.mail("alice@example.org")[0] == 530, "AUTH comes first"
        c.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            c.login("alice", "wrong", initial_response_ok=True)
        assert exc.value.smtp_code == 535
        c.user, c.password = "alice", "alice-pw"
        assert c.auth("PLAIN", c.auth_plain) == (235, b"2.7.0 Authentication successful")
        assert c.sendmail("alice@example.org", ["carol@example.org"],
                          make_message(mid, "alice@example.org", "carol@example.org")) == {}
    (msg,) = stored(env, "carol", mid)
    assert re.search(rb"Received: from laptop \(\[127\.0\.0\.1\]\)\r\n\tby mail\.test\.example "
                     rb"\(stalwart-mp\) with ESMTPSA id ", msg)
    assert not msg.startswith(b"Authentication-Results"), "not an MX: no checks"


def test_implicit_tls_auth_login(env: Env) -> None:
    mid = message_id()
    with SMTPS("127.0.0.1", env.port("submissions"), context=verified_tls(env),
               timeout=10) as c:
        c.ehlo("laptop")
        c.user, c.password = "carol", "carol-pw"
        assert c.auth("LOGIN", c.auth_login, initial_response_ok=False) == (
            235, b"2.7.0 Authentication successful")
        assert c.sendmail("carol@example.org", ["dave@example.org"],
                          make_message(mid, "carol@example.org", "dave@example.org")) == {}
    assert len(stored(env, "dave", mid)) == 1


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _hmac(key: bytes, text: str | bytes) -> bytes:
    return hmac.digest(key, text.encode() if isinstance(text, str) else text, "sha256")


def scram_sha256(c: Raw, user: str, password: str) -> tuple[int, str]:
    """RFC 5802 client exchange over AUTH SCRAM-SHA-256 (RFC 7677, RFC 4954); returns the
    final reply. Asserts the server signature when the server sends one."""
    nonce = _b64(os.urandom(18))
    gs2, first_bare = "n,,", f"n={user},r={nonce}"
    code, text = c.cmd(f"AUTH SCRAM-SHA-256 {_b64(gs2 + first_bare)}")
    assert code == 334, text
    server_first = base64.b64decode(text).decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    assert attrs["r"].startswith(nonce) and len(attrs["r"]) > len(nonce)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = _hmac(salted, "Client Key")
    without_proof = f"c={_b64(gs2)},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}"
    signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    code, text = c.cmd(_b64(f"{without_proof},p={_b64(proof)}"))
    assert code == 334, text
    server_final = base64.b64decode(text).decode()
    if server_final.startswith("v="):  # RFC 5802 §3: the server proves it knows the key
        expected = _hmac(_hmac(salted, "Server Key"), auth_message)
        assert base64.b64decode(server_final[2:]) == expected, "server signature"
    else:
        assert server_final == "e=invalid-proof"
    return c.cmd("")


def test_scram_sha_256_by_hand_over_implicit_tls(env: Env) -> None:
    c = Raw.connect(env.port("submissions"), tls=verified_tls(env))
    try:
        assert c.cmd("EHLO laptop")[0] == 250
        assert scram_sha256(c, "erin", "wrong-pw") == (
            535, "5.7.8 Authentication credentials invalid")
        assert scram_sha256(c, "erin", "erin-pw") == (235, "2.7.0 Authentication successful")
        assert c.cmd("AUTH PLAIN") == (503, "5.5.1 Already authenticated")
        assert c.cmd("MAIL FROM:<erin@example.org>") == (250, "2.1.0 OK")
        assert c.cmd("QUIT")[0] == 221
    finally:
        c.close()


# --- pipelining (RFC 2920) and SMTPUTF8 (RFC 6531) ------------------------------------------

def test_pipelined_transaction_is_answered_in_order(env: Env) -> None:
    mid = message_id()
    c = Raw.connect(env.port("mx"))
    try:
        assert c.cmd("EHLO client.remote.test")[0] == 250
        c.send(b"MAIL FROM:<ann@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
               b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n")
        assert [c.reply() for _ in range(5)] == [
            (250, "2.1.0 OK"), (250, "2.1.5 OK"),
            (550, "5.1.1 Mailbox <nobody@example.org> does not exist"), (250, "2.1.5 OK"),
            (354, "Start mail input; end with <CRLF>.<CRLF>")]
        c.send(make_message(mid) + b".\r\nNOOP\r\n")
        assert c.reply() == (250, "2.0.0 Message accepted")
        assert c.reply() == (250, "2.0.0 OK")
    finally:
        c.close()
    assert len(stored(env, "alice", mid)) == len(stored(env, "carol", mid)) == 1


def test_smtputf8_sender_and_8bitmime_body_stored_byte_exact(env: Env) -> None:
    mid = message_id()
    msg = (f"From: Jörg <jörg@remote.test>\r\nTo: alice@example.org\r\nSubject: Grüße\r\n"
           f"Message-ID: {mid}\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
           f"\r\nGrüße aus Köln — ✓ 日本語\r\n").encode()
    c = Raw.connect(env.port("mx"))
    try:
        assert c.cmd("EHLO client.remote.test")[0] == 250
        assert c.cmd("MAIL FROM:<jörg@remote.test>".encode()) == (
            553, "5.6.7 Non-ASCII address requires SMTPUTF8")
        assert c.cmd("MAIL FROM:<jörg@remote.test> SMTPUTF8 BODY=8BITMIME".encode()) == (
            250, "2.1.0 OK")
        assert c.cmd("RCPT TO:<alice@example.org>") == (250, "2.1.5 OK")
        assert c.cmd("DATA")[0] == 354
        assert c.cmd(msg + b".") == (250, "2.0.0 Message accepted")
    finally:
        c.close()
    (got,) = stored(env, "alice", mid)
    assert got.endswith(msg), "the message is stored byte-exact after the trace fields"
    # RFC 8601 §2.2 pvalue: a UTF-8 local part is given as a quoted-string (RFC 6532 §3.2)
    assert 'smtp.mailfrom="jörg@remote.test"'.encode() in got.split(b"\r\n\r\n")[0]


# --- limits ------------------------------------------------------------------------------

def test_fourth_recipient_over_max_recipients_gets_452(env: Env) -> None:
    c = Raw.connect(env.port("mx"))
    try:
        c.cmd("EHLO client.remote.test")
        assert c.cmd("MAIL FROM:<ann@remote.test>")[0] == 250
        for name in ("alice", "carol", "dave"):
            assert c.cmd(f"RCPT TO:<{name}@example.org>") == (250, "2.1.5 OK")
        assert c.cmd("RCPT TO:<erin@example.org>") == (452, "4.5.3 Too many recipients")
        assert c.cmd("RSET") == (250, "2.0.0 OK")
    finally:
        c.close()


def test_oversize_data_gets_552_and_the_connection_stays_usable(env: Env) -> None:
    mid = message_id()
    c = Raw.connect(env.port("mx"))
    try:
        c.cmd("EHLO client.remote.test")
        c.cmd("MAIL FROM:<ann@remote.test>")
        c.cmd("RCPT TO:<dave@example.org>")
        assert c.cmd("DATA")[0] == 354
        big_mid = message_id()
        big = make_message(big_mid, to="dave@example.org", body=(b"y" * 998 + b"\r\n") * 25)
        assert c.cmd(big + b".") == (
            552, "5.3.4 Message size exceeds fixed maximum message size")
        assert c.cmd("NOOP") == (250, "2.0.0 OK")
        assert c.cmd("MAIL FROM:<ann@remote.test>") == (250, "2.1.0 OK")
        assert c.cmd("RCPT TO:<dave@example.org>") == (250, "2.1.5 OK")
        assert c.cmd("DATA")[0] == 354
        assert c.cmd(make_message(mid, to="dave@example.org") + b".")[0] == 250
    finally:
        c.close()
    assert len(stored(env, "dave", mid)) == 1
    assert stored(env, "dave", big_mid) == []


def test_overlong_command_line_gets_500_5_5_2(env: Env) -> None:
    c = Raw.connect(env.port("mx"))
    try:
        c.cmd("EHLO client.remote.test")
        assert c.cmd("NOOP " + "x" * 5000) == (500, "5.5.2 Line too long")
        assert c.cmd("NOOP") == (250, "2.0.0 OK"), "the rest of the long line was dropped"
    finally:
        c.close()


def test_twenty_protocol_errors_close_with_421(env: Env) -> None:
    c = Raw.connect(env.port("mx"))
    try:
        c.cmd("EHLO client.remote.test")
        c.send(b"BOGUS\r\n" * 25)
        replies = [c.reply() for _ in range(21)]
        assert replies[:20] == [(500, "5.5.1 Command not recognized")] * 20
        assert replies[20] == (421, "4.7.0 Too many errors")
        assert c.at_eof()
    finally:
        c.close()


def test_idle_timeout_421_then_closed(env: Env) -> None:
    c = Raw.connect(env.port("mx_idle"))
    try:
        assert c.cmd("EHLO client.remote.test")[0] == 250
        started = time.monotonic()
        assert c.reply() == (421, f"4.4.2 {HOSTNAME} idle timeout")
        assert 1.5 < time.monotonic() - started < 8
        assert c.at_eof()
    finally:
        c.close()


def test_idle_timeout_counts_from_the_last_bytes_received(env: Env) -> None:
    """The idle timer is re-armed lazily (not moved on every read): a client that keeps
    talking outlives the 2 s timeout, and is closed 2 s after it stops."""
    c = Raw.connect(env.port("mx_idle"))
    try:
        assert c.cmd("EHLO client.remote.test")[0] == 250
        for _ in range(7):  # 3.5 s of activity, longer than the timeout
            time.sleep(0.5)
            assert c.cmd("NOOP")[0] == 250
        started = time.monotonic()
        assert c.reply() == (421, f"4.4.2 {HOSTNAME} idle timeout")
        assert 1.5 < time.monotonic() - started < 8
        assert c.at_eof()
    finally:
        c.close()


# --- DKIM and DMARC on the MX ------------------------------------------------------------

def _signed(env: Env, mid: str, sender: str = "news@signed.test") -> bytes:
    msg = make_message(mid, sender, body=b"Signed news.\r\n")
    sig = dkim.sign(msg, b"sel", b"signed.test", env.dkim_key,
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    return sig + msg


def _auth_results(raw: bytes) -> str:
    """The unfolded Authentication-Results field our server prepended."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    field = re.search(r"^Authentication-Results: (.*?)\r\n(?!\s)", head,
                      re.MULTILINE | re.DOTALL)
    assert field, head
    return " ".join(field.group(1).split())


def test_dkim_signed_aligned_message_passes_dkim_and_dmarc(env: Env) -> None:
    mid = message_id()
    signed = _signed(env, mid)
    with smtplib.SMTP("127.0.0.1", env.port("mx"), timeout=10) as c:
        c.ehlo("mta.signed.test")
        assert c.sendmail("bounce@signed.test", ["erin@example.org"], signed) == {}
    (got,) = stored(env, "erin", mid)
    results = _auth_results(got)
    assert results.startswith(f"{HOSTNAME};")
    assert "dkim=pass header.d=signed.test header.s=sel header.a=rsa-sha256" in results
    assert "dmarc=pass (p=reject) header.from=signed.test" in results
    assert got.endswith(signed), "signature and message kept as sent"


def test_broken_dkim_signature_fails_dmarc_reject(env: Env) -> None:
    mid = message_id()
    tampered = _signed(env, mid).replace(b"Signed news.", b"Signed NEWS!")
    with (smtplib.SMTP("127.0.0.1", env.port("mx"), timeout=10) as c,
          pytest.raises(smtplib.SMTPDataError) as exc):
        c.sendmail("bounce@signed.test", ["erin@example.org"], tampered)
    assert exc.value.smtp_code == 550
    assert exc.value.smtp_error.startswith(b"5.7.1 Rejected by the sender domain's DMARC")
    assert stored(env, "erin", mid) == []


def test_dmarc_quarantine_lands_in_junk(env: Env) -> None:
    mid = message_id()
    with smtplib.SMTP("127.0.0.1", env.port("mx"), timeout=10) as c:
        c.sendmail("promo@quarantine.test", ["erin@example.org"],
                   make_message(mid, "promo@quarantine.test", "erin@example.org"))
    assert stored(env, "erin", mid) == [], "not in the Inbox"
    (got,) = stored(env, "erin", mid, Role.JUNK)
    results = _auth_results(got)
    assert "spf=fail" in results and "smtp.mailfrom=promo@quarantine.test" in results
    assert "dmarc=fail (p=quarantine) header.from=quarantine.test" in results


# --- swaks ---------------------------------------------------------------------------------

def _swaks_available() -> None:
    subprocess.run(["swaks", "--version"], capture_output=True, check=True, timeout=10)


def _swaks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", "127.0.0.1", *args], check=False,
                          capture_output=True, text=True, timeout=30)


def test_swaks_to_the_mx(env: Env) -> None:
    require_service("swaks", _swaks_available)
    mid = message_id()
    out = _swaks("--port", str(env.port("mx")), "--ehlo", "swaks.remote.test",
                 "--from", "ann@remote.test", "--to", "alice@example.org",
                 "--header", f"Message-Id: {mid}", "--body", "Sent by swaks.")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "<-  250 2.0.0 Message accepted" in out.stdout
    (got,) = stored(env, "alice", mid)
    assert b"Sent by swaks." in got and b"with ESMTP id" in got


def test_swaks_to_submission_with_starttls_and_auth_plain(env: Env) -> None:
    require_service("swaks", _swaks_available)
    mid = message_id()
    out = _swaks("--port", str(env.port("submission")), "--ehlo", "laptop",
                 "--tls", "--tls-verify", "--tls-ca-path", str(env.ca_file),
                 "--auth", "PLAIN", "--auth-user", "dave", "--auth-password", "dave-pw",
                 "--from", "dave@example.org", "--to", "carol@example.org",
                 "--header", f"Message-Id: {mid}", "--body", "Submitted by swaks.")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "<~  235 2.7.0 Authentication successful" in out.stdout
    (got,) = stored(env, "carol", mid)
    assert b"Submitted by swaks." in got and b"with ESMTPSA id" in got


# --- durability under SIGKILL ----------------------------------------------------------------

@dataclass
class Tally:
    acked: list[str] = field(default_factory=list)  # a 250 was read for these
    unacked: list[str] = field(default_factory=list)  # the connection died first
    lock: threading.Lock = field(default_factory=threading.Lock)


def _sender(port: int, stop: threading.Event, tally: Tally) -> None:
    """Send messages on one connection until an error, then reconnect; until ``stop``."""
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                c.ehlo("load.remote.test")
                while not stop.is_set():
                    mid = message_id()
                    try:
                        c.sendmail("load@load.test", ["alice@example.org"], make_message(mid))
                    except BaseException:
                        with tally.lock:
                            tally.unacked.append(mid)
                        raise
                    with tally.lock:
                        tally.acked.append(mid)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)


def test_acknowledged_messages_survive_worker_sigkill(tmp_path, dns: DnsServer) -> None:
    srv = mail_server(tmp_path, dns.port, {"mx": ("smtp", "")}, accounts=ACCOUNTS[:1])
    try:
        stop, tally = threading.Event(), Tally()
        threads = [threading.Thread(target=_sender, args=(srv.ports["mx"], stop, tally))
                   for _ in range(20)]
        for t in threads:
            t.start()
        killed: list[int] = []
        rng = random.Random(5321)
        for _ in range(4):
            time.sleep(1.5)
            pids = sorted(srv.worker_pids())
            if pids:
                victim = rng.choice(pids)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
        stop.set()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads)
        assert len(killed) == 4
        srv.wait_for(lambda: len(srv.worker_pids() - set(killed)) == 2,
                     "the master to respawn the workers")
    finally:
        exit_code = srv.stop()
    assert exit_code == 0, "clean stop"
    counts = Counter(message_ids(mailbox(srv.folder, "alice")[0]))
    assert len(tally.acked) > 50, f"only {len(tally.acked)} messages acknowledged"
    assert tally.unacked, "the kills interrupted transactions in flight"
    missing = [m for m in tally.acked if counts[m] != 1]
    assert missing == [], f"{len(missing)} acknowledged messages lost or duplicated"
    assert max(counts.values()) == 1, "no message is stored twice"
    assert set(counts) <= set(tally.acked) | set(tally.unacked)
