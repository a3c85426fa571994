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


# --- update, rename, groups, lists, app passwords, usage over gRPC --------------------------


def _stub(env: Env):
    token = env.token_file.read_text().strip()
    stub = connect(env.bind, token)
    return stub, principals_pb2_grpc.PrincipalsStub(stub.channel)


def _code(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call(request, timeout=30)
    return failure.value.code(), failure.value.details()


def test_update_rename_app_passwords_and_usage(env):
    """Runs after the test above: frank exists and received one message."""
    stub, principals = _stub(env)
    with stub:
        usage = principals.GetUsage(principals_pb2.GetUsageRequest(name="frank"), timeout=30)
        assert (usage.name, usage.quota_bytes, usage.used_messages) == ("frank", 1000000, 1)
        assert 100 < usage.used_bytes < 2000

        updated = principals.UpdatePrincipal(principals_pb2.UpdatePrincipalRequest(
            name="frank", description="Frank F.", quota_bytes=0, quota_messages=50,
            add_emails=[f"frankie@{DOMAIN}"], remove_emails=[f"f@{DOMAIN}"],
            roles=principals_pb2.StringList(values=["user", "admin"]), disabled=True),
            timeout=30)
        assert (updated.description, updated.quota_bytes, updated.quota_messages,
                list(updated.emails), list(updated.roles), updated.disabled) == (
            "Frank F.", 0, 50, [f"frank@{DOMAIN}", f"frankie@{DOMAIN}"], ["user", "admin"],
            True)
        # unset fields are kept; an empty role list is a change (presence)
        kept = principals.UpdatePrincipal(principals_pb2.UpdatePrincipalRequest(
            name="frank", disabled=False, roles=principals_pb2.StringList()), timeout=30)
        assert (kept.description, kept.quota_messages, list(kept.roles), kept.disabled) == (
            "Frank F.", 50, [], False)

        # INVALID_ARGUMENT names the field; nothing of a refused request is applied
        update = principals.UpdatePrincipal
        for request, field in [
            (principals_pb2.UpdatePrincipalRequest(name="frank", description="no",
                                                   add_emails=["x@nowhere.test"]),
             "add_emails"),
            (principals_pb2.UpdatePrincipalRequest(name="frank",
                                                   remove_emails=[f"zz@{DOMAIN}"]),
             "remove_emails"),
            (principals_pb2.UpdatePrincipalRequest(name="frank", add_members=["x"]),
             "add_members"),
            (principals_pb2.UpdatePrincipalRequest(
                name="frank", roles=principals_pb2.StringList(values=["bad role"])), "roles"),
            (principals_pb2.UpdatePrincipalRequest(name=""), "name"),
        ]:
            code, details = _code(update, request)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, details
            assert details.startswith(f"{field}: "), details
        assert principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name="frank"),
                                       timeout=30).description == "Frank F."
        assert _code(update, principals_pb2.UpdatePrincipalRequest(name="nobody"))[0] == (
            grpc.StatusCode.NOT_FOUND)

        # groups and lists with members
        principals.CreatePrincipal(principals_pb2.CreatePrincipalRequest(
            name="ops", type="group", emails=[f"ops@{DOMAIN}"], members=["frank"]), timeout=30)
        assert list(principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name="frank"),
                                            timeout=30).member_of) == ["ops"]
        principals.CreatePrincipal(principals_pb2.CreatePrincipalRequest(
            name="announce", type="list", emails=[f"announce@{DOMAIN}"],
            members=["a@elsewhere.test"]), timeout=30)
        members = principals.UpdatePrincipal(principals_pb2.UpdatePrincipalRequest(
            name="announce", add_members=["B@Elsewhere.Test"],
            remove_members=["a@elsewhere.test"]), timeout=30).members
        assert list(members) == ["b@elsewhere.test"]
        lists = principals.ListPrincipals(principals_pb2.ListPrincipalsRequest(type="list"),
                                          timeout=30)
        assert [p.name for p in lists.principals] == ["announce"]
        found = principals.ListPrincipals(principals_pb2.ListPrincipalsRequest(
            search="FRANKIE@"), timeout=30)
        assert [p.name for p in found.principals] == ["frank"]

        # rename: the group follows; NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT naming new_name
        renamed = principals.RenamePrincipal(principals_pb2.RenamePrincipalRequest(
            name="frank", new_name="franklin"), timeout=30)
        assert (renamed.name, renamed.id) == ("franklin", usage_id(principals, "franklin"))
        assert list(principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name="ops"),
                                            timeout=30).members) == ["franklin"]
        rename = principals.RenamePrincipal
        assert _code(rename, principals_pb2.RenamePrincipalRequest(
            name="nobody", new_name="x"))[0] == grpc.StatusCode.NOT_FOUND
        assert _code(rename, principals_pb2.RenamePrincipalRequest(
            name="franklin", new_name="ops"))[0] == grpc.StatusCode.ALREADY_EXISTS
        code, details = _code(rename, principals_pb2.RenamePrincipalRequest(
            name="franklin", new_name="bad name!"))
        assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "new_name")
        # the mail stays with the account
        assert principals.GetUsage(principals_pb2.GetUsageRequest(name="franklin"),
                                   timeout=30).used_messages == 1

        # app passwords: the secret once, names listed, revoke
        created = principals.CreateAppPassword(principals_pb2.CreateAppPasswordRequest(
            name="franklin", label="phone"), timeout=30)
        assert created.label == "phone" and len(created.secret) == 19
        listed = principals.ListAppPasswords(principals_pb2.ListAppPasswordsRequest(
            name="franklin"), timeout=30)
        assert [a.label for a in listed.app_passwords] == ["phone"]
        assert created.secret.encode() not in listed.SerializeToString()
        assert _code(principals.CreateAppPassword, principals_pb2.CreateAppPasswordRequest(
            name="franklin", label="phone"))[0] == grpc.StatusCode.ALREADY_EXISTS
        code, details = _code(principals.CreateAppPassword,
                              principals_pb2.CreateAppPasswordRequest(name="ops", label="x"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not an account" in details
        principals.RevokeAppPassword(principals_pb2.RevokeAppPasswordRequest(
            name="franklin", label="phone"), timeout=30)
        assert _code(principals.RevokeAppPassword, principals_pb2.RevokeAppPasswordRequest(
            name="franklin", label="phone"))[0] == grpc.StatusCode.NOT_FOUND
        assert _code(principals.GetUsage, principals_pb2.GetUsageRequest(
            name="nobody"))[0] == grpc.StatusCode.NOT_FOUND


def usage_id(principals, name: str) -> int:
    return principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name=name),
                                   timeout=30).id


def test_field_of_and_peer_ip():
    from stalwart_mp.control.auth import peer_ip
    from stalwart_mp.control.principals_service import field_of
    from stalwart_mp.directory.base import DirectoryError

    assert field_of(DirectoryError('"x" is not an e-mail address')) == "emails"
    assert field_of(DirectoryError('"x" is not an e-mail address'),
                    {"emails": "add_emails"}) == "add_emails"
    assert field_of(DirectoryError("something else")) is None
    assert peer_ip("ipv4:192.0.2.1:5000") == "192.0.2.1"
    assert peer_ip("ipv6:[::ffff:192.0.2.1]:5000") == "192.0.2.1"
    assert peer_ip("ipv6:[2001:db8::1]:5000") == "2001:db8::1"
    assert peer_ip("unix:/run/x.sock") == "127.0.0.1"


def test_create_group_with_an_unknown_member_names_the_field(env):
    stub, principals = _stub(env)
    with stub:
        code, details = _code(principals.CreatePrincipal, principals_pb2.CreatePrincipalRequest(
            name="ghosts", type="group", members=["nobody-here"]))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT,
                                   'members: member "nobody-here" is not a principal')
        code, details = _code(principals.CreatePrincipal, principals_pb2.CreatePrincipalRequest(
            name="", type="group"))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "name: required")
        code, details = _code(principals.ListPrincipals, principals_pb2.ListPrincipalsRequest(
            type="robot"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("type: ")
