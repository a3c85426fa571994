"""Locust load for a running SMTP server: each user connects, sends N messages, quits.

Every message is one locust request (type "SMTP", name "send"), timed from MAIL to the 250
after the data, so locust's statistics and charts show per-message latency and rate.

    .venv/bin/python load_tests/bench_smtp.py --serve-only --smtp-port 2525 &
    .venv/bin/locust -f load_tests/locustfile.py --headless -u 20 -r 5 -t 30s \\
        --host smtp://127.0.0.1:2525

Environment: STALWART_BENCH_RCPT (default user@bench.test), STALWART_BENCH_FROM (default
bench@remote.test), STALWART_BENCH_MESSAGES (per connection, default 10),
STALWART_BENCH_SIZE (bytes, default 4096).
"""
from __future__ import annotations

import imaplib
import os
import random
import select
import smtplib
import time
from urllib.parse import urlsplit

from locust import User, between, task

RCPT = os.environ.get("STALWART_BENCH_RCPT", "user@bench.test")
SENDER = os.environ.get("STALWART_BENCH_FROM", "bench@remote.test")
PER_CONNECTION = int(os.environ.get("STALWART_BENCH_MESSAGES", "10"))
SIZE = int(os.environ.get("STALWART_BENCH_SIZE", "4096"))


def message(size: int, n: int) -> bytes:
    """A plain-text message of about ``size`` bytes with a unique Message-ID."""
    head = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: locust {n}\r\n"
            f"Message-ID: <{n}.{os.getpid()}.{time.time_ns()}@locust.test>\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def parse_host(host: str | None) -> tuple[str, int]:
    """``smtp://HOST:PORT`` (or plain ``HOST:PORT``) from locust's --host; port 25 if none."""
    if not host:
        raise ValueError("no --host given; expected smtp://HOST:PORT")
    parts = urlsplit(host if "://" in host else f"smtp://{host}")
    if parts.scheme != "smtp" or not parts.hostname:
        raise ValueError(f"--host {host!r}: expected smtp://HOST:PORT")
    return parts.hostname, parts.port or 25


class SmtpUser(User):
    """One SMTP client session per task run: connect, EHLO, N messages, QUIT."""

    wait_time = between(0.0, 0.1)
    sent = 0

    def on_start(self) -> None:
        self.address = parse_host(self.host)

    def fire(self, started: float, length: int, exc: Exception | None) -> None:
        """Report one message to locust; a failure carries the exception, as locust wants."""
        self.environment.events.request.fire(
            request_type="SMTP", name="send", response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=exc, context={})

    @task
    def session(self) -> None:
        started = time.perf_counter()
        try:
            client = smtplib.SMTP(*self.address, timeout=30)
            client.ehlo("locust.test")
        except (OSError, smtplib.SMTPException) as exc:
            self.fire(started, 0, exc)  # a refused connection counts as a failed send
            return
        try:
            for _ in range(PER_CONNECTION):
                SmtpUser.sent += 1
                data = message(SIZE, SmtpUser.sent)
                started = time.perf_counter()
                try:
                    client.sendmail(SENDER, [RCPT], data)
                except smtplib.SMTPResponseException as exc:
                    self.fire(started, len(data), exc)
                    client.rset()
                    continue
                self.fire(started, len(data), None)
            client.quit()
        except (OSError, smtplib.SMTPException) as exc:
            self.fire(started, 0, exc)
            client.close()


# --- IMAP ------------------------------------------------------------------------------------
# .venv/bin/python load_tests/bench_imap.py --serve-only --imap-port 1143 &
# .venv/bin/locust -f load_tests/locustfile.py ImapUser --headless -u 20 -r 5 -t 30s \
#     --host imap://127.0.0.1:1143
IMAP_USER = os.environ.get("STALWART_BENCH_IMAP_USER", "user")
IMAP_PASSWORD = os.environ.get("STALWART_BENCH_IMAP_PASSWORD", "bench-pw")
_IMAP_ERRORS = (OSError, EOFError, ValueError, RuntimeError, imaplib.IMAP4.error)


class ImapUser(User):
    """One IMAP session per task run: LOGIN, SELECT, FETCH headers of the newest 50, FETCH
    one body, STORE flags, a short IDLE, LOGOUT; each step is one locust request."""

    wait_time = between(0.0, 0.2)

    def on_start(self) -> None:
        parts = urlsplit(self.host if "://" in (self.host or "") else f"imap://{self.host}")
        if parts.scheme != "imap" or not parts.hostname:
            raise ValueError(f"--host {self.host!r}: expected imap://HOST:PORT")
        self.address = (parts.hostname, parts.port or 143)

    def step(self, name: str, fn):
        started = time.perf_counter()
        try:
            result = fn()
            typ = result[0] if isinstance(result, tuple) else "OK"
            exc = None if typ in ("OK", "BYE") else RuntimeError(f"{name}: {result!r}")
        except _IMAP_ERRORS as error:
            exc, result = error, None
        self.environment.events.request.fire(
            request_type="IMAP", name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=exc, context={})
        if exc is not None:
            raise exc
        return result

    @task
    def session(self) -> None:
        try:
            conn = self.step("connect", lambda: imaplib.IMAP4(*self.address, timeout=30))
            self.step("login", lambda: conn.login(IMAP_USER, IMAP_PASSWORD))
            _, data = self.step("select", lambda: conn.select("INBOX"))
            exists = int(data[0] or 0)
            if exists:
                first = max(1, exists - 49)
                self.step("fetch headers", lambda: conn.fetch(
                    f"{first}:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"))
                n = random.randint(1, exists)
                self.step("fetch body", lambda: conn.fetch(str(n), "(BODY.PEEK[])"))
                self.step("store flags", lambda: conn.store(str(n), "+FLAGS", "(\\Seen)"))

            def idle() -> tuple:
                tag = conn._new_tag()
                conn.send(tag + b" IDLE\r\n")
                conn.readline()          # "+ idling"
                # an update, if one comes within half a second (select: a timed-out read
                # would leave imaplib's buffered file unusable)
                if select.select([conn.sock], [], [], 0.5)[0]:
                    conn.readline()
                conn.send(b"DONE\r\n")
                while not conn.readline().startswith(tag):
                    pass
                return ("OK",)

            self.step("idle", idle)
            self.step("logout", conn.logout)
        except _IMAP_ERRORS:
            return  # already reported by step()
