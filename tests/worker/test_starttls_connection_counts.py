"""A connection upgraded with STARTTLS still releases its counts when it ends.

Regression: sessions handed themselves (not the worker's tracking wrapper) to
``loop.start_tls``, so the end of every upgraded connection went unseen: the per-IP limit
filled up for good and the active-connections gauge only grew.
"""
from __future__ import annotations

import imaplib
import smtplib
import ssl

from stalwart_mp.worker.connection import outer_protocol
from tests.harness import http_get
from tests.smtp.smtp_env import mail_server


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def test_outer_protocol_is_what_the_transport_holds():
    class Transport:
        def __init__(self, protocol):
            self.protocol = protocol

        def get_protocol(self):
            return self.protocol

    session, wrapper = object(), object()
    assert outer_protocol(Transport(wrapper), session) is wrapper
    assert outer_protocol(Transport(None), session) is session


def test_starttls_sessions_release_the_per_ip_limit(tmp_path):
    limit = "max-connections-per-ip = 2\n"
    srv = mail_server(tmp_path, 9, {"submission": ("submission", limit),
                                    "imap": ("imap", limit)}, workers=1)
    try:
        for _ in range(5):   # more than the limit, one after the other
            with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=10) as c:
                c.starttls(context=_tls())
                assert c.ehlo("laptop")[0] == 250
            imap = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=10)
            imap.starttls(ssl_context=_tls())
            assert imap.login("alice", "alice-pw")[0] == "OK"
            imap.logout()
        srv.wait_for(lambda: _active(srv) == {"submission": 0, "imap": 0},
                     "the active-connection gauges back to 0")
    finally:
        srv.stop()


def _active(srv) -> dict[str, int]:
    status, _, body = http_get(srv.http_port, "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("stalwart_connections_active{"):
            name = line.split('listener="', 1)[1].split('"', 1)[0]
            out[name] = int(float(line.rsplit(" ", 1)[1]))
    return {k: v for k, v in out.items() if k in ("submission", "imap")}
