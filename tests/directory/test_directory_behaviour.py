"""One behavioural suite for every directory: internal, SQL (SQLite, PostgreSQL, MariaDB)
and LDAP (a real slapd), each loaded with tests/directory/dataset.py."""
from __future__ import annotations

import pytest

from stalwart_mp.directory.base import Directory, PrincipalType
from stalwart_mp.directory.recipients import Outcome, resolve
from tests.directory.dataset import entry

BACKENDS = ["internal", "sqlite", "postgresql", "mysql", "ldap-bind", "ldap-hash"]


@pytest.fixture(params=BACKENDS)
async def directory(request, tmp_path):
    kind = request.param
    if kind == "internal":
        from tests.directory.backend_internal import make_internal_directory

        d: Directory = await make_internal_directory(tmp_path / "lmdb")
    elif kind.startswith("ldap"):
        from tests.directory.backend_ldap import make_ldap_directory

        d = await make_ldap_directory(kind.split("-")[1])
    else:
        from tests.directory.backend_sql import make_sql_directory

        d = await make_sql_directory(kind)
    yield d
    await d.close()


async def test_principal_lookup(directory):
    alice = await directory.principal("alice")
    assert alice is not None and alice.type == PrincipalType.INDIVIDUAL
    assert alice.name == "alice" and alice.description == "Alice Smith"
    assert set(alice.emails) == set(entry("alice").emails)
    assert alice.quota_bytes == 1 << 30
    assert "sales" in alice.member_of
    assert await directory.principal("nobody-here") is None
    sales = await directory.principal("sales")
    assert sales.type == PrincipalType.GROUP
    assert (await directory.principal("everyone")).type == PrincipalType.LIST


async def test_passwords(directory):
    for name in ("alice", "bob", "dave"):
        p = await directory.principal(name)
        assert await directory.verify_password(p, entry(name).password), name
        assert not await directory.verify_password(p, entry(name).password + "x")
        assert not await directory.verify_password(p, "")


async def test_disabled_account_is_marked(directory):
    carol = await directory.principal("carol")
    assert carol is not None and carol.disabled


async def test_addresses_and_aliases(directory):
    assert await directory.names_by_email("alice@example.org") == ["alice"]
    assert await directory.names_by_email("a.smith@example.org") == ["alice"]
    assert await directory.names_by_email("@example.net") == ["bob"]
    assert await directory.names_by_email("nobody@example.org") == []
    assert await directory.is_local_domain("example.org")
    assert await directory.is_local_domain("example.net")
    assert not await directory.is_local_domain("other.test")


async def test_members(directory):
    assert sorted(await directory.members("sales")) == ["alice", "bob"]
    assert sorted(await directory.members("everyone")) == [
        "alice@example.org", "bob@example.org", "external@other.test"]
    assert await directory.members("alice") == []


async def test_recipient_resolution(directory):
    r = await resolve(directory, "Alice@Example.ORG")
    assert (r.outcome, r.accounts) == (Outcome.LOCAL, ["alice"])
    r = await resolve(directory, "alice+invoices@example.org")
    assert (r.outcome, r.accounts, r.detail) == (Outcome.LOCAL, ["alice"], "invoices")
    r = await resolve(directory, "anything@example.net")  # catch-all
    assert (r.outcome, r.accounts) == (Outcome.LOCAL, ["bob"])
    r = await resolve(directory, "alice@example.net")  # exact beats catch-all
    assert r.accounts == ["alice"]
    assert (await resolve(directory, "nobody@example.org")).outcome == Outcome.UNKNOWN_USER
    assert (await resolve(directory, "x@other.test")).outcome == Outcome.NOT_LOCAL
    r = await resolve(directory, "everyone@example.org")
    assert (sorted(r.accounts), r.external) == (["alice", "bob"], ["external@other.test"])
    r = await resolve(directory, "sales@example.org")
    assert sorted(r.accounts) == ["alice", "bob"]
    assert (await resolve(directory, "carol@example.org")).outcome == Outcome.DISABLED
