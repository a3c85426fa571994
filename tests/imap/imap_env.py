"""Shared set-up of the IMAP integration tests: a real ``stalwart-mp serve`` with an IMAP
listener (STARTTLS on the plain port), an implicit-TLS one, SMTP and LMTP for delivery, and
accounts alice, bob (a 300-byte quota), carol, dave and erin, and the group "team" (dave and
carol)."""
from __future__ import annotations

import imaplib
import socket
import ssl
import time

from tests.smtp.smtp_env import mail_server

ACCOUNTS = [("alice", "alice-pw", None), ("bob", "bob-pw", 300), ("carol", "carol-pw", None),
            ("dave", "dave-pw", None), ("erin", "erin-pw", None)]
GROUPS = {"team": ["dave", "carol"]}
SMTP_SETTINGS = ("max-message-size = 200000\nchecks.spf = false\nchecks.dkim = false\n"
                 "checks.iprev = false\nchecks.dmarc = false\n")


def imap_server(folder, extra_imap: str = "", workers: int = 2):
    srv = mail_server(folder, 9, {"imap": ("imap", ""),
                                  "imaps": ("imap", "tls.implicit = true\n"),
                                  "smtp": ("smtp", ""), "lmtp": ("lmtp", "")},
                      smtp=SMTP_SETTINGS + ("\n[imap]\n" + extra_imap if extra_imap else ""),
                      workers=workers, accounts=ACCOUNTS, groups=GROUPS)
    return srv


def connect(srv, user: str | None = "alice", password: str | None = None) -> imaplib.IMAP4:
    conn = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=10)
    if user:
        typ, _ = conn.login(user, password or f"{user}-pw")
        assert typ == "OK"
    return conn


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Raw:
    """A line-level IMAP client for exact-bytes checks."""

    def __init__(self, port: int, timeout: float = 10, source: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged completion of ``tag``."""
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    def cmd(self, text: bytes, tag: bytes = b"t") -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def closed(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, TimeoutError):
            return False
        return False

    def close(self) -> None:
        self.sock.close()


MESSAGE = (b"From: Ann Example <ann@remote.test>\r\nTo: alice@example.org\r\n"
           b"Subject: Hello there\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
           b"Message-ID: <m1@remote.test>\r\n\r\nHello Alice.\r\n")

MULTIPART = (b"From: Bob <bob@remote.test>\r\nTo: alice@example.org\r\nSubject: Parts\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
             b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
             b"First part.\r\n--XX\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--XX--\r\n")
