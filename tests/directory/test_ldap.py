"""The LDAP directory against a real slapd: both password modes, the mapping of entries to
principals, escaping, TLS, failover and unavailability. (The behaviour every directory
shares is in test_directory_behaviour.py.)"""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from stalwart_mp.directory.base import DirectoryUnavailable, Principal, PrincipalType
from stalwart_mp.directory.ldap import fill, is_disabled_value
from stalwart_mp.directory.recipients import Outcome, resolve
from tests.directory.backend_ldap import directory_from_table, ldap_table
from tests.directory.dataset import entry
from tests.directory.ldap_server import (
    SlapdServer,
    free_port,
    require_slapd,
    shared_server,
    stop_shared_server,
)


@pytest.fixture(scope="session")
def slapd():
    require_slapd()
    yield shared_server()
    stop_shared_server()


@pytest.fixture
def own_slapd():
    """A slapd of this test alone, which it may stop, freeze and restart."""
    require_slapd()
    server = SlapdServer().start()
    yield server
    server.cleanup()


@pytest.fixture(params=["bind", "hash"])
async def directory(request, slapd):
    d = directory_from_table(ldap_table(slapd.url, request.param))
    yield d
    await d.close()


# --- passwords --------------------------------------------------------------------------


async def test_passwords_in_both_modes(directory):
    # alice's hash is {SSHA}, bob's and dave's {CRYPT}$6$ (dave's password is not ASCII).
    for name in ("alice", "bob", "dave"):
        p = await directory.principal(name)
        assert await directory.verify_password(p, entry(name).password), name
        assert not await directory.verify_password(p, entry(name).password.upper())
        assert not await directory.verify_password(p, "")


async def test_bind_mode_never_reads_the_password_attribute(slapd):
    bind = directory_from_table(ldap_table(slapd.url, "bind"))
    hashed = directory_from_table(ldap_table(slapd.url, "hash"))
    try:
        assert (await bind.principal("alice")).secrets == []
        assert (await hashed.principal("alice")).secrets[0].startswith("{SSHA}")
        assert (await hashed.principal("bob")).secrets[0].startswith("{CRYPT}$6$")
    finally:
        await bind.close()
        await hashed.close()


async def test_empty_password_never_reaches_the_server(slapd):
    d = directory_from_table(ldap_table(slapd.url, "bind"))
    try:
        # A simple bind with a DN and no password is an "unauthenticated" bind (RFC 4513
        # §5.1.2), which servers may report as a success: it must be refused before.
        assert not await d.pool.check_password("uid=alice,ou=people,dc=example,dc=org", "")
        assert await d.pool.check_password("uid=alice,ou=people,dc=example,dc=org",
                                           entry("alice").password)
    finally:
        await d.close()


async def test_unknown_user(directory):
    assert await directory.principal("nobody-here") is None
    ghost = Principal(name="nobody-here", secrets=[])
    assert not await directory.verify_password(ghost, "anything")


async def test_service_account_with_a_wrong_secret_is_unavailable_not_unknown(slapd):
    table = ldap_table(slapd.url)
    table["bind"]["secret"] = "wrong"
    d = directory_from_table(table)
    try:
        with pytest.raises(DirectoryUnavailable, match="invalidCredentials") as info:
            await d.principal("alice")
        assert slapd.url in str(info.value)
    finally:
        await d.close()


# --- mapping ----------------------------------------------------------------------------


async def test_disabled_account(directory):
    carol = await directory.principal("carol")  # pwdAccountLockedTime: 000001010000Z
    assert carol is not None and carol.disabled
    assert not (await directory.principal("alice")).disabled
    assert (await resolve(directory, "carol@example.org")).outcome == Outcome.DISABLED


def test_disabled_values():
    assert is_disabled_value(["000001010000Z"])        # ppolicy: locked by an admin
    assert not is_disabled_value(["20250101120000Z"])  # ppolicy: temporary lockout
    assert is_disabled_value(["TRUE"]) and is_disabled_value(["yes"])  # nsAccountLock style
    assert not is_disabled_value(["FALSE"]) and not is_disabled_value([])


async def test_catch_all(directory):
    assert await directory.names_by_email("@example.net") == ["bob"]
    assert await directory.names_by_email("alice@example.net") == ["alice"]
    r = await resolve(directory, "whoever@example.net")
    assert (r.outcome, r.accounts) == (Outcome.LOCAL, ["bob"])


async def test_group_and_list(directory):
    sales = await directory.principal("sales")
    assert sales.type == PrincipalType.GROUP and sales.emails == ["sales@example.org"]
    assert sorted(await directory.members("sales")) == ["alice", "bob"]
    assert (await directory.principal("alice")).member_of == ["sales"]
    everyone = await directory.principal("everyone")
    assert everyone.type == PrincipalType.LIST
    assert sorted(await directory.members("everyone")) == [
        "alice@example.org", "bob@example.org", "external@other.test"]
    assert await directory.members("alice") == []
    assert await directory.members("nobody-here") == []


async def test_principal_fields(directory):
    alice = await directory.principal("ALICE")  # uid matches case-insensitively
    assert alice.name == "alice" and alice.description == "Alice Smith"
    assert alice.emails == ["alice@example.org", "a.smith@example.org", "alice@example.net"]
    assert alice.primary_email == "alice@example.org"
    assert alice.quota_bytes == 1 << 30 and alice.roles == ["user"]


async def test_member_dns_resolved_by_reading_the_entry(slapd):
    """With names in cn (not the RDN's uid), member DNs must be read, not parsed."""
    classes = "(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))"
    d = directory_from_table(ldap_table(
        slapd.url, attributes={"name": "cn"}, filter={
            "name": f"(&{classes}(cn=?))",
            "groups": "(&(objectClass=groupOfNames)(member=?))"}))
    try:
        assert sorted(await d.members("sales")) == ["alice", "bob"]
        assert (await d.principal("bob")).member_of == ["sales"]
    finally:
        await d.close()


async def test_local_domains(slapd):
    d = directory_from_table(ldap_table(slapd.url, domains=["extra.test"]))
    try:
        assert await d.is_local_domain("example.org")
        assert await d.is_local_domain("Example.NET.")
        assert await d.is_local_domain("extra.test")  # listed, no entry needed
        assert not await d.is_local_domain("other.test")
        assert not await d.is_local_domain("")
    finally:
        await d.close()


# --- escaping ---------------------------------------------------------------------------


def test_filter_values_are_escaped():
    assert fill("(uid=?)", "*)(uid=*") == r"(uid=\2a\29\28uid=\2a)"
    assert fill("(|(mail=?)(mailAlias=?))", "a\\b") == r"(|(mail=a\5cb)(mailAlias=a\5cb))"


async def test_filter_injection_finds_nothing(directory):
    assert await directory.principal("*)(uid=*") is None
    assert await directory.principal("*") is None
    assert await directory.principal("alice)(|(uid=*") is None
    assert await directory.names_by_email("*") == []
    assert await directory.names_by_email("*)(mail=*") == []
    assert not await directory.is_local_domain("*")
    ghost = Principal(name="*")
    assert not await directory.verify_password(ghost, entry("alice").password)


# --- connections ------------------------------------------------------------------------


async def test_starttls_with_a_self_signed_certificate(slapd):
    d = directory_from_table(ldap_table(
        slapd.url, tls={"starttls": True, "allow-invalid-certs": True}))
    try:
        assert await d.pool.run(lambda conn: conn.tls_started)
        assert (await d.principal("alice")).name == "alice"
        p = await d.principal("bob")
        assert await d.verify_password(p, entry("bob").password)  # the bind goes over TLS
        assert not await d.verify_password(p, "wrong")
    finally:
        await d.close()


async def test_untrusted_certificate_is_refused(slapd):
    d = directory_from_table(ldap_table(slapd.url, tls={"starttls": True}))
    try:
        with pytest.raises(DirectoryUnavailable) as info:
            await d.principal("alice")
        assert slapd.url in str(info.value) and "certificate" in str(info.value).lower()
    finally:
        await d.close()


async def test_ldaps(slapd):
    d = directory_from_table(ldap_table(slapd.ldaps_url, "bind",
                                        tls={"allow-invalid-certs": True}))
    try:
        assert await d.pool.run(lambda conn: conn.server.ssl)
        p = await d.principal("dave")
        assert await d.verify_password(p, entry("dave").password)
    finally:
        await d.close()


async def test_failover_to_the_next_url(slapd):
    dead = f"ldap://127.0.0.1:{free_port()}"
    d = directory_from_table(ldap_table([dead, slapd.url]))
    try:
        assert (await d.principal("alice")).name == "alice"
    finally:
        await d.close()


async def test_no_server_answers(slapd):
    dead1, dead2 = (f"ldap://127.0.0.1:{free_port()}" for _ in range(2))
    d = directory_from_table(ldap_table([dead1, dead2]))
    try:
        with pytest.raises(DirectoryUnavailable) as info:
            await d.principal("alice")
        assert dead1 in str(info.value) and dead2 in str(info.value)
    finally:
        await d.close()


async def test_stopped_server_is_unavailable_then_recovers(own_slapd):
    d = directory_from_table(ldap_table(own_slapd.url, "bind"))
    try:
        alice = await d.principal("alice")
        assert await d.verify_password(alice, entry("alice").password)
        own_slapd.stop()
        for lookup in (d.principal("alice"), d.names_by_email("alice@example.org"),
                       d.is_local_domain("example.org"), d.members("sales"),
                       d.verify_password(alice, entry("alice").password)):
            with pytest.raises(DirectoryUnavailable) as info:
                await lookup
            assert own_slapd.url in str(info.value)
        own_slapd.start()  # the broken pooled connections are replaced
        assert (await d.principal("alice")).name == "alice"
        assert await d.verify_password(alice, entry("alice").password)
    finally:
        await d.close()


async def test_hung_server_times_out_without_blocking_the_loop(own_slapd):
    d = directory_from_table(ldap_table(own_slapd.url, timeout="1s"))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    try:
        assert (await d.principal("alice")).name == "alice"
        os.kill(own_slapd.proc.pid, signal.SIGSTOP)
        task = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            with pytest.raises(DirectoryUnavailable, match=own_slapd.url):
                await d.principal("alice")
        finally:
            os.kill(own_slapd.proc.pid, signal.SIGCONT)
            task.cancel()
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 10
        assert ticks >= elapsed / 0.05 * 0.5  # the event loop kept running meanwhile
    finally:
        await d.close()


async def test_concurrent_lookups_share_the_pool(directory):
    names = ["alice", "bob", "carol", "dave", "sales", "everyone"] * 5
    found = await asyncio.gather(*(directory.principal(n) for n in names))
    assert [p.name for p in found] == names


# --- settings ---------------------------------------------------------------------------


def test_settings_are_validated():
    with pytest.raises(ValueError, match="url"):
        directory_from_table(ldap_table("http://ldap.example.org"))
    with pytest.raises(ValueError, match="filter.name"):
        directory_from_table(ldap_table("ldap://x", filter={"name": "(uid=alice)"}))
    with pytest.raises(ValueError, match="bind.auth"):
        directory_from_table(ldap_table("ldap://x", "plain"))


async def test_defaults_apply_to_a_minimal_table():
    from stalwart_mp.directory.ldap import LdapDirectory

    d = LdapDirectory.from_settings("x", {"url": "ldap://ldap.example.org",
                                          "base-dn": "dc=example,dc=org"})
    try:
        c = d.config
        assert c.urls == ["ldap://ldap.example.org"] and c.auth == "bind"
        assert c.attr_name == ("uid",) and c.attr_email_alias == ("mailAlias",)
        assert "(uid=?)" in c.filter_name and c.pool_size == 4 and c.timeout == 5.0
    finally:
        await d.close()



async def test_a_name_matching_several_entries(slapd):
    """The entry whose name is the looked-up name wins; with none or several, the
    directory answers "unavailable" rather than pick the first entry the server returns."""
    d = directory_from_table(ldap_table(slapd.url, filter={
        "name": "(&(objectClass=inetOrgPerson)(|(uid=?)(sn=alice)(sn=bob)))"}))
    try:
        bob = await d.principal("bob")  # finds alice and bob
        assert bob.name == "bob" and bob.emails[0] == "bob@example.org"
        assert await d.verify_password(bob, entry("bob").password)
        assert not await d.verify_password(bob, entry("alice").password)
        assert (await d.principal("carol")).name == "carol"  # alice, bob, carol: carol
        with pytest.raises(DirectoryUnavailable, match="several entries"):
            await d.principal("nobody")  # finds alice and bob, neither is "nobody"
        ghost = Principal(name="nobody")
        with pytest.raises(DirectoryUnavailable, match="several entries"):
            await d.verify_password(ghost, entry("alice").password)
    finally:
        await d.close()
