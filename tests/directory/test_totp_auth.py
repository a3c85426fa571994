"""Accounts with a TOTP second factor, through the Authenticator every protocol uses:
``password$code`` logs in, the password alone does not (and counts as a failure), app
passwords work alone, a code works once, SCRAM is refused, disabling restores the
password alone; the otpauth:// secret is never taken for a password hash."""
from __future__ import annotations

import time

import pytest

from stalwart_mp.auth import totp
from stalwart_mp.auth.sasl import derive_scram_secret
from stalwart_mp.directory.auth import Authenticator, BanPolicy, Failure
from stalwart_mp.directory.base import DirectoryError
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.directory.passwords import verify_password
from stalwart_mp.store.lookup import open_lookup_store
from stalwart_mp.store.registry import open_data_store
from tests.auth.test_totp import independent_code

IP = "192.0.2.10"


class Env:
    def __init__(self, auth: Authenticator, manager: DirectoryManager):
        self.auth, self.manager = auth, manager

    async def login(self, user: str, password: str):
        return await self.auth.authenticate(user, password, IP)


@pytest.fixture
async def env(tmp_path):
    store = open_data_store("data", {"type": "lmdb", "path": str(tmp_path / "db")})
    directory = InternalDirectory(store)
    manager = DirectoryManager(directory)
    await manager.create_principal("jane", password="jane-password")
    await manager.create_principal("team", type="group")
    lookup = await open_lookup_store("data", {"type": "lmdb"}, store)
    policy = BanPolicy(ip_failures=100, account_failures=100, allowed_networks=())
    yield Env(Authenticator(directory, lookup, policy, manager), manager)
    await store.close()


def code_for(uri: str, offset: float = 0.0) -> str:
    return totp.parse_uri(uri).code_at(time.time() + offset)


async def failures_of(env: Env, user: str) -> int:
    raw = await env.auth.lookup.get(b"authfail:acct:" + user.encode())
    return int(raw) if raw is not None else 0


async def test_password_and_code_log_in_the_password_alone_does_not(env):
    assert (await env.login("jane", "jane-password")).ok
    uri = await env.manager.enable_totp("jane", "Example Mail")
    p = await env.manager.directory.principal("jane")
    assert p.has_totp and p.totp_uri == uri
    assert uri.startswith("otpauth://totp/Example%20Mail:jane?secret=")

    refused = await env.login("jane", "jane-password")
    assert refused.failure == Failure.INVALID
    assert await failures_of(env, "jane") == 1  # counted like a wrong password
    # the code is computed by an implementation independent of the module, once
    code = independent_code(totp.parse_uri(uri).secret, time.time())
    assert (await env.login("jane", f"jane-password${code}")).ok
    # a wrong password with a valid next code, or the right password with a wrong code
    nxt = code_for(uri, 30)
    assert not (await env.login("jane", f"wrong-password${nxt}")).ok
    wrong = "000000" if nxt != "000000" else "111111"
    assert not (await env.login("jane", f"jane-password${wrong}")).ok
    assert await failures_of(env, "jane") == 3


async def test_a_code_is_refused_the_second_time(env):
    uri = await env.manager.enable_totp("jane", "Example")
    code = code_for(uri)
    assert (await env.login("jane", f"jane-password${code}")).ok
    again = await env.login("jane", f"jane-password${code}")
    assert again.failure == Failure.INVALID
    # the next step's code (within the drift) is a new code: accepted once
    nxt = code_for(uri, 30)
    if nxt != code:
        assert (await env.login("jane", f"jane-password${nxt}")).ok
        assert not (await env.login("jane", f"jane-password${nxt}")).ok


async def test_app_passwords_work_alone_but_not_with_a_code(env):
    secret = await env.manager.add_app_password("jane", "phone")
    await env.manager.enable_totp("jane", "Example")
    assert (await env.login("jane", secret)).ok
    assert (await env.login("jane", secret)).ok  # no code, so nothing to replay
    p = await env.manager.directory.principal("jane")
    assert not (await env.login("jane", f"{secret}${code_for(p.totp_uri)}")).ok


async def test_disable_restores_the_password_alone(env):
    await env.manager.enable_totp("jane", "Example")
    assert not (await env.login("jane", "jane-password")).ok
    await env.manager.disable_totp("jane")
    assert not (await env.manager.directory.principal("jane")).has_totp
    assert (await env.login("jane", "jane-password")).ok
    with pytest.raises(DirectoryError, match="no two-factor"):
        await env.manager.disable_totp("jane")


async def test_enable_replaces_the_secret_and_a_new_password_keeps_it(env):
    first = await env.manager.enable_totp("jane", "Example")
    second = await env.manager.enable_totp("jane", "Example")
    p = await env.manager.directory.principal("jane")
    assert first != second and [s for s in p.secrets if totp.is_totp_uri(s)] == [second]
    await env.manager.set_password("jane", "new-password")
    p = await env.manager.directory.principal("jane")
    assert p.totp_uri == second and len(p.secrets) == 2
    assert not (await env.login("jane", "new-password")).ok
    assert (await env.login("jane", f"new-password${code_for(second)}")).ok
    # the old secret's codes no longer work
    old = code_for(first, 30)
    if old != code_for(second, 30):
        assert not (await env.login("jane", f"new-password${old}")).ok


async def test_the_totp_secret_is_never_a_password(env):
    uri = await env.manager.enable_totp("jane", "Example")
    assert not verify_password(uri, uri)
    assert not (await env.login("jane", uri)).ok
    with pytest.raises(DirectoryError, match="not an account"):
        await env.manager.enable_totp("team", "Example")


async def test_scram_is_refused_for_an_account_with_totp(env):
    before = await env.auth.scram_secret("jane", "SCRAM-SHA-256", IP)
    assert before is not None
    assert before == derive_scram_secret("SCRAM-SHA-256", "jane-password", before.salt,
                                         before.iterations)
    await env.manager.enable_totp("jane", "Example")
    assert await env.auth.scram_secret("jane", "SCRAM-SHA-256", IP) is None
    assert not (await env.auth.scram_outcome("jane", IP, ok=True)).ok



async def test_an_sql_directory_row_with_an_otpauth_secret_gets_the_second_factor(tmp_path):
    """Stalwart's SQL directories may return the otpauth:// URI as one more secret row:
    the same rules apply to them (a read-only directory; SQLite here)."""
    import sqlite3

    from tests.directory.backend_sql import make_sql_directory

    uri = totp.new_key("alice", "Example").uri()
    # one row per secret: the password's (alice's {SSHA} of "alice-secret-1", see
    # tests/directory/dataset.py) and, when set, the otp column's
    query = ("WITH a AS (SELECT * FROM accounts WHERE name = ?) "
             "SELECT name, type, secret, description, quota, NOT active AS disabled FROM a "
             "UNION ALL SELECT name, type, otp, description, quota, NOT active FROM a "
             "WHERE otp IS NOT NULL")
    directory = await make_sql_directory("sqlite", queries={"name": query})
    with sqlite3.connect(directory._place) as conn:
        conn.execute("ALTER TABLE accounts ADD COLUMN otp TEXT")
        conn.execute("UPDATE accounts SET otp = ? WHERE name = 'alice'", (uri,))
    conn.close()
    store = open_data_store("data", {"type": "lmdb", "path": str(tmp_path / "db")})
    try:
        lookup = await open_lookup_store("data", {"type": "lmdb"}, store)
        auth = Authenticator(directory, lookup,
                             BanPolicy(ip_failures=100, allowed_networks=()))
        p = await directory.principal("alice")
        assert p.has_totp and p.totp_uri == uri and len(p.secrets) == 2
        assert not (await auth.authenticate("alice", "alice-secret-1", IP)).ok
        assert (await auth.authenticate("alice", f"alice-secret-1${code_for(uri)}", IP)).ok
        assert not (await directory.principal("bob")).has_totp
        assert (await auth.authenticate("bob", "bob-secret-2", IP)).ok
    finally:
        await directory.close()
        await store.close()
