"""Two-factor authentication (TOTP) end to end against a real `stalwart-mp serve`:
the CLI turns it on through Principals.EnableTotp (the URI and secret shown once), the
control plane then takes Basic ``admin:password$code`` and refuses the password alone, a
replayed code and a non-admin; IMAP LOGIN (imaplib) and SMTP AUTH (smtplib, submission)
follow the same rules, app passwords work alone; DisableTotp restores the password alone.
Codes are computed from the returned secret with the module, and once with the independent
implementation of the TOTP tests."""
from __future__ import annotations

import imaplib
import re
import smtplib
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from stalwart_mp.auth import totp
from stalwart_mp.control.client import connect
from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2, principals_pb2_grpc
from tests.auth.test_totp import independent_code
from tests.dns_server import DnsServer
from tests.smtp.smtp_env import mail_server

ADMIN = Path(sys.executable).parent / "stalwart-mp-admin"


class Env:
    def __init__(self, server):
        self.server = server
        self.bind = tomllib.loads(server.config_text)["control"]["bind"]
        self.token_file = server.run_dir / "control.token"

    def admin(self, *args: str) -> str:
        result = subprocess.run(
            [str(ADMIN), "--control", self.bind, "--token-file", str(self.token_file), *args],
            check=False, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def principals(self, user: str | None = None, password: str | None = None):
        if user is None:
            stub = connect(self.bind, self.token_file.read_text().strip())
        else:
            stub = connect(self.bind, user=user, password=password)
        return principals_pb2_grpc.PrincipalsStub(stub.channel)

    def basic_code(self, user: str, password: str) -> grpc.StatusCode | None:
        """The status of one GetPrincipal call with Basic credentials (None: OK)."""
        try:
            self.principals(user, password).GetPrincipal(
                principals_pb2.GetPrincipalRequest(name=user), timeout=20)
        except grpc.RpcError as exc:
            return exc.code()
        return None

    def smtp_auth(self, user: str, password: str) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], timeout=10) as client:
            client.starttls(context=ctx)
            try:
                client.login(user, password)
            except smtplib.SMTPAuthenticationError:
                return False
        return True

    def imap_login(self, user: str, password: str) -> bool:
        conn = imaplib.IMAP4("127.0.0.1", self.server.ports["imap"], timeout=10)
        try:
            conn.login(user, password)
        except imaplib.IMAP4.error:
            return False
        finally:
            conn.shutdown()
        return True


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    dns = DnsServer().start()
    server = mail_server(tmp_path_factory.mktemp("totp"), dns.port,
                         {"imap": ("imap", ""), "submission": ("submission", "")},
                         accounts=[("carol", "carol-pw", None)], workers=1)
    try:
        environment = Env(server)
        server.wait_for(environment.token_file.exists, "the control token")
        yield environment
    finally:
        server.stop()
        dns.stop()


def enable_with_cli(env: Env, name: str) -> str:
    out = env.admin("account", "totp", "enable", name)
    uri = re.search(r"otpauth URI: (\S+)", out).group(1)
    secret = re.search(r"secret:\s+([A-Z2-7]+)", out).group(1)
    assert totp.parse_uri(uri).secret == secret
    assert "PASSWORD$CODE" in out
    return uri


def code(uri: str, offset: float = 0.0) -> str:
    return totp.parse_uri(uri).code_at(time.time() + offset)


def test_admin_basic_login_needs_password_and_code(env):
    env.admin("account", "add", "boss@example.org", "--password", "boss-pw", "--admin")
    assert env.basic_code("boss@example.org", "boss-pw") is None
    uri = enable_with_cli(env, "boss@example.org")
    assert uri.startswith("otpauth://totp/") and "issuer=" in uri
    assert "two-factor    on" in env.admin("account", "show", "boss@example.org")

    p = env.principals().GetPrincipal(
        principals_pb2.GetPrincipalRequest(name="boss@example.org"), timeout=10)
    assert p.totp is True
    secret = totp.parse_uri(uri).secret
    assert secret.encode() not in p.SerializeToString() and b"otpauth" not in \
        p.SerializeToString()

    assert env.basic_code("boss@example.org", "boss-pw") == grpc.StatusCode.UNAUTHENTICATED
    now = independent_code(secret, time.time())
    assert env.basic_code("boss@example.org", f"boss-pw${now}") is None
    # the same code a second time is a replay
    assert env.basic_code("boss@example.org", f"boss-pw${now}") == \
        grpc.StatusCode.UNAUTHENTICATED

    assert "disabled for boss@example.org" in env.admin("account", "totp", "disable",
                                                         "boss@example.org")
    assert "two-factor    off" in env.admin("account", "show", "boss@example.org")
    assert env.basic_code("boss@example.org", "boss-pw") is None


def test_a_non_admin_with_a_valid_code_is_refused(env):
    uri = env.principals().EnableTotp(principals_pb2.EnableTotpRequest(name="carol"),
                                      timeout=20).otpauth_uri
    assert env.basic_code("carol", f"carol-pw${code(uri)}") == \
        grpc.StatusCode.PERMISSION_DENIED
    env.principals().DisableTotp(principals_pb2.DisableTotpRequest(name="carol"), timeout=20)


def test_imap_login_with_password_and_code_and_app_passwords(env):
    env.admin("account", "add", "dora@example.org", "--password", "dora-pw")
    stub = env.principals()
    app = stub.CreateAppPassword(principals_pb2.CreateAppPasswordRequest(
        name="dora@example.org", label="phone"), timeout=20).secret
    uri = stub.EnableTotp(principals_pb2.EnableTotpRequest(name="dora@example.org"),
                          timeout=20).otpauth_uri
    assert not env.imap_login("dora@example.org", "dora-pw")
    first = code(uri)
    assert env.imap_login("dora@example.org", f"dora-pw${first}")
    assert not env.imap_login("dora@example.org", f"dora-pw${first}")  # replay
    assert env.imap_login("dora@example.org", app)  # app passwords work alone
    assert env.imap_login("dora@example.org", app)
    # SMTP AUTH on submission goes through the same check
    assert not env.smtp_auth("dora@example.org", "dora-pw")
    assert env.smtp_auth("dora@example.org", f"dora-pw${code(uri, 30)}")
    assert env.smtp_auth("dora@example.org", app)


def test_errors(env):
    stub = env.principals()
    with pytest.raises(grpc.RpcError) as err:
        stub.DisableTotp(principals_pb2.DisableTotpRequest(name="carol"), timeout=20)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    env.admin("group", "create", "staff")
    with pytest.raises(grpc.RpcError) as err:
        stub.EnableTotp(principals_pb2.EnableTotpRequest(name="staff"), timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.EnableTotp(principals_pb2.EnableTotpRequest(name="nobody"), timeout=20)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_enable_and_disable_are_audit_logged_without_the_secret(env):
    uri = env.principals().EnableTotp(principals_pb2.EnableTotpRequest(name="carol"),
                                      timeout=20).otpauth_uri
    env.principals().DisableTotp(principals_pb2.DisableTotpRequest(name="carol"), timeout=20)
    log = (env.server.folder / "server.log").read_text(errors="replace")
    audit = [line for line in log.splitlines() if "control change" in line]
    assert any("totp.enable" in line and "carol" in line for line in audit), audit
    assert any("totp.disable" in line and "carol" in line for line in audit), audit
    assert totp.parse_uri(uri).secret not in log
