"""Account and domain management over the control plane, end to end.

A real `stalwart-mp serve` (tests/harness.py) runs with an SMTP listener; the real
`stalwart-mp-admin` CLI creates a domain and an account through the Principals service of
its control child, and a message sent with smtplib to the new address is accepted.
"""
from __future__ import annotations

import smtplib
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stalwart_mp.control.client import connect
from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2, principals_pb2_grpc
from stalwart_mp.mail.records import Role
from tests.dns_server import DnsServer
from tests.harness import Server
from tests.smtp.smtp_env import mail_server, mailbox

ADMIN = Path(sys.executable).parent / "stalwart-mp-admin"
DOMAIN = "example.net"  # smtp_env creates example.org before the server starts


class Env:
    def __init__(self, server: Server):
        self.server = server
        self.bind = tomllib.loads(server.config_text)["control"]["bind"]
        self.token_file = server.run_dir / "control.token"

    def admin(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(ADMIN), "--control", self.bind, "--token-file", str(self.token_file), *args],
            check=False, capture_output=True, text=True, input=stdin, timeout=60,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    dns = DnsServer().start()
    server = mail_server(tmp_path_factory.mktemp("principals"), dns.port,
                         {"mx": ("smtp", "")}, accounts=[])
    try:
        environment = Env(server)
        server.wait_for(environment.token_file.exists, "the control token")
        yield environment
    finally:
        server.stop()
        dns.stop()


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def failed(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert needle in result.stderr, result.stderr


def test_manage_an_account_with_the_cli_then_receive_mail(env):
    assert "domain example.net created" in ok(env.admin("domain", "add", DOMAIN))
    failed(env.admin("domain", "add", DOMAIN), "already exists")

    out = ok(env.admin("account", "add", "frank", "--email", f"frank@{DOMAIN}",
                       "--email", f"f@{DOMAIN}", "--password", "frank-pw",
                       "--quota", "1000000"))
    assert f"account frank created (frank@{DOMAIN}, f@{DOMAIN})" in out
    ok(env.admin("account", "add", "gina", "--email", f"gina@{DOMAIN}", "--admin",
                 "--password-stdin", stdin="gina-pw\n"))

    failed(env.admin("account", "add", "frank", "--email", f"frank2@{DOMAIN}"),
           "already exists")
    failed(env.admin("account", "add", "henry", "--email", f"frank@{DOMAIN}"),
           "already belongs")
    failed(env.admin("account", "add", "ivan", "--email", "ivan@nowhere.test"),
           "does not exist")
    failed(env.admin("account", "show", "nobody"), 'no principal named "nobody"')
    failed(env.admin("account", "add", "bad name!", "--email", f"x@{DOMAIN}"),
           "not a valid name")

    listing = ok(env.admin("account", "list")).splitlines()
    assert listing[0].split() == ["NAME", "EMAILS", "QUOTA", "ROLES", "STATE"]
    assert [line.split()[0] for line in listing[1:]] == ["frank", "gina"]
    assert ok(env.admin("account", "list", "--search", "GINA")).splitlines()[1].startswith(
        "gina")
    assert ok(env.admin("account", "list", "--search", "zzz")).strip() == "no accounts"

    shown = ok(env.admin("account", "show", "frank"))
    assert f"frank@{DOMAIN}, f@{DOMAIN}" in shown
    assert "976.6 KiB" in shown and "user" in shown and "frank-pw" not in shown
    assert "admin" in ok(env.admin("account", "show", "gina"))

    # over gRPC: no secret nor hash in the message, paging, NOT_FOUND
    with connect(env.bind, env.token_file.read_text().strip()) as stub:
        principals = principals_pb2_grpc.PrincipalsStub(stub.channel)
        p = principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name="frank"),
                                    timeout=10)
        assert (p.name, p.type, p.quota_bytes, list(p.roles)) == (
            "frank", "individual", 1000000, ["user"])
        assert b"ARGON" not in p.SerializeToString().upper()
        first = principals.ListPrincipals(principals_pb2.ListPrincipalsRequest(page_size=1),
                                          timeout=10)
        assert len(first.principals) == 1 and first.next_page_token
        rest = principals.ListPrincipals(
            principals_pb2.ListPrincipalsRequest(page_token=first.next_page_token),
            timeout=10)
        names = [first.principals[0].name, *(x.name for x in rest.principals)]
        assert names == sorted(names) and {"frank", "gina", DOMAIN} <= set(names)
        assert rest.next_page_token == ""
        with pytest.raises(grpc.RpcError) as missing:
            principals.DeletePrincipal(principals_pb2.DeletePrincipalRequest(name="nobody"),
                                       timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    assert "password of frank changed" in ok(
        env.admin("account", "passwd", "frank", "--password-stdin", stdin="new-pw\n"))
    failed(env.admin("account", "passwd", "nobody", "--password-stdin", stdin="x\n"),
           "no principal named")

    # the new account receives mail
    message_id = f"<{uuid.uuid4()}@sender.test>"
    with smtplib.SMTP("127.0.0.1", env.server.ports["mx"], timeout=30) as smtp:
        smtp.ehlo("sender.test")
        code, _ = smtp.mail("someone@sender.test")
        assert code == 250
        code, reply = smtp.rcpt(f"f@{DOMAIN}")
        assert code == 250, reply
        code, reply = smtp.data(
            f"From: someone@sender.test\r\nTo: f@{DOMAIN}\r\nSubject: hello\r\n"
            f"Message-ID: {message_id}\r\n\r\nWelcome aboard.\r\n".encode())
        assert code == 250, reply
    messages, _ = mailbox(env.server.folder, "frank", Role.INBOX)
    assert any(message_id.encode() in m for m in messages)

    # delete: needs --yes; then the account is gone and its address unknown
    assert env.admin("account", "delete", "gina").returncode == 2
    assert "account gina deleted" in ok(env.admin("account", "delete", "gina", "--yes"))
    failed(env.admin("account", "show", "gina"), "no principal named")
    with smtplib.SMTP("127.0.0.1", env.server.ports["mx"], timeout=30) as smtp:
        smtp.ehlo("sender.test")
        smtp.mail("someone@sender.test")
        code, _ = smtp.rcpt(f"gina@{DOMAIN}")
        assert code == 550


# --- the servicer alone: error mapping --------------------------------------------------


class _Aborted(Exception):
    pass


class _Context:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted


class _Backend:
    """Runs the call at once with ``manager`` (None: an external directory)."""

    def __init__(self, manager: object | None):
        self.manager = manager

    def run(self, call):
        import asyncio

        return asyncio.run(call(self.manager))


def _abort_of(servicer, method: str, request) -> tuple[grpc.StatusCode, str]:
    context = _Context()
    with pytest.raises(_Aborted):
        getattr(servicer, method)(request, context)
    return context.code, context.details


def test_external_directory_and_missing_config():
    from stalwart_mp.control.principals_service import PrincipalsServicer

    external = PrincipalsServicer(_Backend(None))
    code, details = _abort_of(external, "CreateDomain",
                              principals_pb2.CreateDomainRequest(name="example.com"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == "the directory is external (sql/ldap): manage accounts there"
    code, _ = _abort_of(PrincipalsServicer(None), "GetPrincipal",
                        principals_pb2.GetPrincipalRequest(name="x"))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_directory_errors_map_to_status_codes():
    from stalwart_mp.control.principals_service import status_of
    from stalwart_mp.directory.base import DirectoryError

    for message, code in [
        ('a principal named "a" already exists', grpc.StatusCode.ALREADY_EXISTS),
        ('domain "x.org" already exists', grpc.StatusCode.ALREADY_EXISTS),
        ("address a@x.org already belongs to another principal",
         grpc.StatusCode.ALREADY_EXISTS),
        ('no principal named "a"', grpc.StatusCode.NOT_FOUND),
        ('domain "x.org" does not exist: create it first', grpc.StatusCode.INVALID_ARGUMENT),
        ("the password must not be empty", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        assert status_of(DirectoryError(message)) == code, message
