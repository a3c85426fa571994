"""A real mail server for the web admin tests: control plane, an SMTP listener, the
loopback DNS server as resolver, an administrator "root" and a user "alice"; optionally
the admin child (gunicorn) on a free port. No domain exists at first unless asked: the
setup wizard creates it.
"""
from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
import time
import tomllib
import urllib.request
from pathlib import Path

from admin_web import create_app
from admin_web.config import AdminConfig
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.store.registry import open_data_store
from tests.harness import Server, base_config, free_port
from tests.smtp.smtp_env import listener

ADMIN, ADMIN_PW = "root", "root-password-1"
USER, USER_PW = "alice", "alice-password-1"


def _prepare(folder: Path, domain: str | None) -> None:
    async def run() -> None:
        data = open_data_store("default", {"type": "lmdb",
                                           "path": str(folder / "data" / "lmdb")})
        manager = DirectoryManager(InternalDirectory(data))
        emails: dict[str, list[str]] = {ADMIN: [], USER: []}
        if domain:
            await manager.create_domain(domain)
            emails = {ADMIN: [f"{ADMIN}@{domain}"], USER: [f"{USER}@{domain}"]}
        await manager.create_principal(ADMIN, password=ADMIN_PW, emails=emails[ADMIN],
                                       roles=["user", "admin"])
        await manager.create_principal(USER, password=USER_PW, emails=emails[USER])
        await data.close()

    asyncio.run(run())


def start_server(folder: Path, dns_port: int, *, domain: str | None = None,
                 admin: bool = False, ban_failures: int = 50) -> Server:
    """A started server; ``server.ports`` has "http", "smtp", "submission" and, with
    ``admin``, "admin"
    (the web admin served by the master's admin child)."""
    ports = {name: free_port() for name in ("http", "smtp", "submission", "admin")}
    extra = listener("smtp", ports["smtp"], "smtp")
    extra += listener("submission", ports["submission"], "submission")
    extra += f"""
[smtp]
max-message-size = 200000

[outbound]
enabled = false

[resolver]
nameservers = ["127.0.0.1:{dns_port}"]
timeout = 2

[auth.ban]
allowed-networks = []
failures = {ban_failures}

[admin]
enabled = {'true' if admin else 'false'}
bind = "127.0.0.1:{ports['admin']}"
workers = 1
"""
    (folder / "data").mkdir(parents=True)
    _prepare(folder, domain)
    srv = Server(folder, ports["http"], base_config(folder, ports["http"], workers=1,
                                                    extra=extra))
    srv.start(wait_workers=1)
    srv.wait_for((srv.run_dir / "control.token").exists, "the control token")
    srv.ports = ports
    srv.control_bind = tomllib.loads(srv.config_text)["control"]["bind"]
    if admin:
        srv.wait_for(lambda: _answers(f"http://127.0.0.1:{ports['admin']}/login"),
                     "the web admin to answer", timeout=30)
    return srv


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def admin_config(srv: Server, secret: Path) -> AdminConfig:
    return AdminConfig(control=srv.control_bind, token_file=srv.run_dir / "control.token",
                       secret_key_file=secret,
                       metrics_url=f"http://127.0.0.1:{srv.http_port}/metrics")


def app_for(srv: Server, secret: Path, **overrides: object):
    app = create_app(admin_config(srv, secret), **overrides)
    app.config["TESTING"] = True
    return app


_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                   r'type="hidden" name="csrf_token" value="([^"]+)"|'
                   r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    m = _CSRF.search(html)
    assert m, "no CSRF token in the page"
    return next(g for g in m.groups() if g)


def wait_until(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def send(srv: Server, rcpt: str, subject: str = "hello") -> None:
    """One message to a local recipient over SMTP (the MX listener)."""
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as client:
        client.sendmail("someone@sender.test", [rcpt],
                        f"From: someone@sender.test\r\nTo: {rcpt}\r\nSubject: {subject}"
                        "\r\n\r\nhello\r\n".encode())


def submit(srv: Server, mail_from: str, rcpts: list[str], login: tuple[str, str]) -> None:
    """One message submitted by an account (STARTTLS + AUTH) for remote recipients: it
    stays in the outbound queue (outbound delivery is off)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=10) as client:
        client.starttls(context=ctx)
        client.login(*login)
        assert client.sendmail(mail_from, rcpts, f"From: {mail_from}\r\nSubject: queued"
                               "\r\n\r\nhi\r\n".encode()) == {}
