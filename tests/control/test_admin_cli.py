"""``stalwart-mp-admin`` against a running server: output, exit codes, credentials.

The real console script runs as a subprocess against a real `stalwart-mp serve`
(tests/harness.py via tests/smtp/smtp_env.py, which creates example.org before the start).
Credentials come from the options, the environment and the client config file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_server import DnsServer
from tests.harness import Server, free_port
from tests.smtp.smtp_env import mail_server

ADMIN = Path(sys.executable).parent / "stalwart-mp-admin"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("STALWART_MP_")}


class Env:
    def __init__(self, server: Server, home: Path):
        self.server = server
        self.bind = tomllib.loads(server.config_text)["control"]["bind"]
        self.token_file = server.run_dir / "control.token"
        self.home = home  # no client config unless a test writes one

    def run(self, *args: str, env: dict | None = None, stdin: str | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([str(ADMIN), *args], check=False, capture_output=True, text=True,
                              input=stdin, timeout=90,
                              env={**CLEAN_ENV, "HOME": str(self.home), **(env or {})})

    def token(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """As the holder of the control token."""
        return self.run("--server", self.bind, "--token-file", str(self.token_file), *args,
                        stdin=stdin)

    def as_user(self, user: str, password: str, *args: str) -> subprocess.CompletedProcess:
        """With an account's credentials from the environment."""
        return self.run(*args, env={"STALWART_MP_SERVER": self.bind, "STALWART_MP_USER": user,
                                    "STALWART_MP_PASSWORD": password})


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    dns = DnsServer().start()
    server = mail_server(tmp_path_factory.mktemp("admin-cli"), dns.port,
                         {"mx": ("smtp", "")}, accounts=[])
    try:
        environment = Env(server, tmp_path_factory.mktemp("home"))
        server.wait_for(environment.token_file.exists, "the control token")
        ok(environment.token("account", "create", "admin@example.org", "--password",
                             "admin-pw", "--admin"))
        yield environment
    finally:
        server.stop()
        dns.stop()


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


def fails(result: subprocess.CompletedProcess, status: int, needle: str) -> None:
    assert result.returncode == status, (
        f"exit {result.returncode}, wanted {status}: {result.stdout}{result.stderr}")
    assert needle in result.stderr + result.stdout, result.stderr


def test_account_create_with_address_login_and_admin_credentials(env):
    out = ok(env.token("account", "create", "alice@example.org", "--password", "alice-pw",
                       "--quota", "5000", "--name", "Alice Liddell"))
    assert out == "account alice@example.org created (alice@example.org)\n"
    shown = json.loads(ok(env.as_user("admin@example.org", "admin-pw", "account", "show",
                                      "alice@example.org", "--json")))
    assert (shown["name"], shown["emails"], shown["description"], shown["quota_bytes"]) == (
        "alice@example.org", ["alice@example.org"], "Alice Liddell", 5000)
    assert shown["usage"] == {"name": "alice@example.org", "quota_bytes": 5000,
                              "used_bytes": 0, "quota_messages": 0, "used_messages": 0}
    text = ok(env.as_user("admin@example.org", "admin-pw", "account", "show",
                          "alice@example.org"))
    assert "used          0 B in 0 messages (0%)" in text
    listing = ok(env.as_user("admin@example.org", "admin-pw", "account", "list")).splitlines()
    assert listing[0].split() == ["NAME", "EMAILS", "QUOTA", "ROLES", "STATE"]
    assert [line.split()[0] for line in listing[1:]] == ["admin@example.org",
                                                         "alice@example.org"]
    # `account add` is kept as an alias; a name that is no address needs --email
    ok(env.token("account", "add", "carol", "--email", "carol@example.org"))
    fails(env.token("account", "create", "dave"), 2, "is not an address")

    fails(env.as_user("alice@example.org", "alice-pw", "account", "list"), 5,
          '"alice@example.org" is not an administrator')
    fails(env.as_user("admin@example.org", "wrong", "server", "status"), 4,
          "invalid user name or password")
    fails(env.token("account", "create", "alice@example.org", "--password", "x"), 1,
          "already exists")
    fails(env.token("account", "show", "nobody@example.org"), 1, "NOT_FOUND")


def test_update_rename_and_aliases(env):
    ok(env.token("account", "create", "bob@example.org", "--password", "bob-pw"))
    assert ok(env.token("account", "update", "bob@example.org", "--quota", "2000000",
                        "--add-email", "robert@example.org", "--roles", "user,admin",
                        "--disable", "--name", "Bob B.")) == "account bob@example.org updated\n"
    shown = json.loads(ok(env.token("account", "show", "bob@example.org", "--json")))
    assert (shown["quota_bytes"], shown["emails"], shown["roles"], shown["disabled"],
            shown["description"]) == (2000000, ["bob@example.org", "robert@example.org"],
                                      ["user", "admin"], True, "Bob B.")
    fails(env.token("account", "update", "bob@example.org"), 2, "nothing to change")
    fails(env.token("account", "update", "bob@example.org", "--add-email", "b@nowhere.test"),
          1, "INVALID_ARGUMENT: add_emails:")
    fails(env.token("account", "update", "bob@example.org", "--remove-email",
                    "zz@example.org"), 1, "remove_emails:")

    assert ok(env.token("alias", "add", "bob@example.org", "bobby@example.org")).startswith(
        "bobby@example.org added to bob@example.org")
    aliases = ok(env.token("alias", "list", "bob@example.org")).splitlines()
    assert aliases[0].split() == ["ALIAS", "NAME", "PRIMARY"]
    assert {line.split()[0] for line in aliases[1:]} == {"robert@example.org",
                                                         "bobby@example.org"}
    every = json.loads(ok(env.token("alias", "list", "--json")))
    assert {"alias": "bobby@example.org", "name": "bob@example.org",
            "primary": "bob@example.org"} in every
    ok(env.token("alias", "remove", "bob@example.org", "bobby@example.org"))
    fails(env.token("alias", "add", "alice@example.org", "robert@example.org"), 1,
          "already belongs")

    assert ok(env.token("account", "rename", "bob@example.org", "rob@example.org")) == (
        "account bob@example.org renamed to rob@example.org\n")
    shown = json.loads(ok(env.token("account", "show", "rob@example.org", "--json")))
    assert shown["emails"] == ["bob@example.org", "robert@example.org"]
    fails(env.token("account", "rename", "rob@example.org", "alice@example.org"), 1,
          "already exists")
    fails(env.token("account", "delete", "rob@example.org"), 2, "--yes")
    ok(env.token("account", "delete", "rob@example.org", "--yes"))
    fails(env.token("account", "show", "rob@example.org"), 1, "no principal named")


def test_groups_and_mailing_lists(env):
    ok(env.token("account", "create", "erin@example.org", "--password", "erin-pw"))
    assert ok(env.token("group", "create", "team@example.org", "--member",
                        "erin@example.org")) == "group team@example.org created (1 members)\n"
    ok(env.token("group", "update", "team@example.org", "--add-member", "alice@example.org"))
    shown = ok(env.token("group", "show", "team@example.org"))
    assert "members       erin@example.org, alice@example.org" in shown
    assert "team@example.org" in ok(env.token("account", "show", "erin@example.org"))
    fails(env.token("group", "update", "team@example.org", "--add-member", "ghost"), 1,
          "add_members:")
    fails(env.token("group", "show", "erin@example.org"), 1, "is a individual, not a group")

    ok(env.token("list", "create", "news@example.org", "--member", "x@elsewhere.test",
                 "--description", "Newsletter"))
    ok(env.token("list", "update", "news@example.org", "--add-member", "Y@Elsewhere.Test"))
    lists = ok(env.token("list", "list")).splitlines()
    assert lists[0].split() == ["NAME", "EMAILS", "MEMBERS", "DESCRIPTION"]
    assert lists[1].split() == ["news@example.org", "news@example.org", "2", "Newsletter"]
    groups = json.loads(ok(env.token("group", "list", "--json")))
    assert [g["name"] for g in groups] == ["team@example.org"]

    ok(env.token("group", "update", "team@example.org", "--remove-member", "erin@example.org"))
    assert "member of     -" in ok(env.token("account", "show", "erin@example.org"))
    assert ok(env.token("group", "delete", "team@example.org")) == (
        "group team@example.org deleted\n")
    assert "member of     -" in ok(env.token("account", "show", "alice@example.org"))
    assert ok(env.token("group", "list")) == "no groups\n"


def test_app_passwords_log_in_and_are_revoked(env):
    out = ok(env.token("app-password", "create", "admin@example.org", "cli"))
    first, second = out.splitlines()
    secret = first.rsplit(": ", 1)[1]
    assert first.startswith("app password cli of admin@example.org: ") and len(secret) == 19
    assert "shown once" in second
    # the app password is an admin credential like the password
    assert "processes" in ok(env.as_user("admin@example.org", secret, "server", "status"))
    listed = ok(env.token("app-password", "list", "admin@example.org")).splitlines()
    assert listed[0].split() == ["NAME", "CREATED"] and listed[1].startswith("cli ")
    fails(env.token("app-password", "create", "admin@example.org", "cli"), 1, "already has")
    ok(env.token("app-password", "revoke", "admin@example.org", "cli"))
    fails(env.as_user("admin@example.org", secret, "server", "status"), 4, "invalid")
    fails(env.token("app-password", "revoke", "admin@example.org", "cli"), 1, "NOT_FOUND")
    assert ok(env.token("app-password", "list", "admin@example.org")) == (
        "admin@example.org has no app passwords\n")


def test_config_get_set_validate_reload(env):
    assert ok(env.token("config", "get", "--stored")) == "no stored settings\n"
    out = ok(env.token("config", "set", "smtp.max-recipients", "25"))
    assert out.splitlines() == ["stored smtp.max-recipients = 25",
                                "apply with: stalwart-mp-admin config reload"]
    rows = ok(env.token("config", "get", "smtp.max-recipients")).splitlines()
    assert rows[1].split() == ["smtp.max-recipients", "25", "stored"]
    assert json.loads(ok(env.token("config", "get", "--stored", "--json"))) == {
        "smtp.max-recipients": 25}

    invalid = env.token("config", "validate", "server.workers=0", "logging.level=chatty")
    assert invalid.returncode == 1
    assert invalid.stdout.splitlines()[0] == "2 error(s):"
    assert "server.workers = 0: expected an integer >= 1" in invalid.stdout
    assert 'logging.level = "chatty"' in invalid.stdout
    assert ok(env.token("config", "validate", "logging.level=debug")) == "valid\n"
    fails(env.token("config", "set", "control.bind=127.0.0.1:1"), 1, "bootstrap setting")

    generation = env.server.status()["generation"]
    assert ok(env.token("config", "reload")) == (
        f"reload applied: configuration generation {generation + 1}\n")
    out = ok(env.token("config", "unset", "smtp.max-recipients"))
    assert out.startswith("removed smtp.max-recipients")
    assert ok(env.token("server", "status")).startswith("stalwart-mp ")


def test_client_config_file_and_exit_codes(env, tmp_path):
    config = env.home / ".config" / "stalwart-mp" / "admin.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'server = "{env.bind}"\nuser = "admin@example.org"\n'
                      'password = "admin-pw"\n')
    config.chmod(0o600)
    assert "processes" in ok(env.run("server", "status"))  # everything from the file
    assert "processes" in ok(env.run("status"))  # `status` is kept
    config.chmod(0o644)
    fails(env.run("server", "status"), 2, "chmod 600")
    other = tmp_path / "admin.toml"
    other.write_text(f'server = "{env.bind}"\ntoken-file = "{env.token_file}"\n')
    assert "processes" in ok(env.run("--client-config", str(other), "server", "status"))
    config.unlink()

    fails(env.run("server", "status"), 2, "no credentials")
    port = free_port()
    fails(env.run("--server", f"127.0.0.1:{port}", "--token-file", str(env.token_file),
                  "server", "status"), 3, "cannot reach the control plane")
    help_text = ok(env.run("--help"))
    for code in ("0  success", "1  the server answered", "2  bad arguments",
                 "3  the control plane cannot be reached", "4  the control plane refused",
                 "5  the account is not an administrator"):
        assert code in help_text


def test_credentials_precedence_options_environment_file(tmp_path):
    from stalwart_mp.admin_cli import build_parser, resolve_connection

    token = tmp_path / "control.token"
    token.write_text("t" * 43 + "\n")
    token.chmod(0o600)
    file = tmp_path / "admin.toml"
    file.write_text('server = "unix:/run/x.sock"\nuser = "fileuser"\npassword = "filepw"\n')
    file.chmod(0o600)

    def resolve(*argv: str, **env: str) -> dict:
        args = build_parser().parse_args([*argv, "server", "status"])
        return resolve_connection(args, {"STALWART_MP_ADMIN_CONFIG": str(file), **env})

    assert resolve() == {"server": "unix:/run/x.sock", "user": "fileuser",
                         "password": "filepw"}
    assert resolve(STALWART_MP_USER="envuser", STALWART_MP_PASSWORD="envpw",
                   STALWART_MP_SERVER="h:1") == {"server": "h:1", "user": "envuser",
                                                  "password": "envpw"}
    # an option beats the environment, even of another kind
    assert resolve("--token-file", str(token), STALWART_MP_USER="envuser",
                   STALWART_MP_PASSWORD="envpw") == {"server": "unix:/run/x.sock",
                                                     "token": "t" * 43}
    assert resolve("--user", "opt", "--password", "optpw", "--server", "o:2",
                   STALWART_MP_TOKEN_FILE=str(token)) == {"server": "o:2", "user": "opt",
                                                          "password": "optpw"}
    assert resolve(STALWART_MP_TOKEN_FILE=str(token), STALWART_MP_CONTROL="old:3") == {
        "server": "old:3", "token": "t" * 43}
