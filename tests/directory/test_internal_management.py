"""Managing the internal directory (the API behind the control plane and the admin UI)."""
from __future__ import annotations

import pytest

from stalwart_mp.directory.base import DirectoryError, PrincipalType
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.directory.passwords import verify_password
from stalwart_mp.directory.recipients import Outcome, resolve
from stalwart_mp.store.registry import open_data_store


@pytest.fixture
async def manager(tmp_path):
    store = open_data_store("data", {"type": "lmdb", "path": str(tmp_path / "db")})
    events = []

    async def notify(topic, data):
        events.append((topic, data))

    m = DirectoryManager(InternalDirectory(store), notify)
    m.events = events
    await m.create_domain("example.com")
    yield m
    await store.close()


async def test_domain_must_exist_before_its_addresses(manager):
    with pytest.raises(DirectoryError, match='domain "nowhere.test" does not exist'):
        await manager.create_principal("u", emails=["u@nowhere.test"])
    with pytest.raises(DirectoryError, match="is not an e-mail address"):
        await manager.create_principal("u", emails=["not an address"])
    with pytest.raises(DirectoryError, match="is not a domain name"):
        await manager.create_domain("bad domain")
    with pytest.raises(DirectoryError, match='domain "example.com" already exists'):
        await manager.create_domain("Example.COM")


async def test_names_and_addresses_are_unique(manager):
    await manager.create_principal("jane", password="pw-1", emails=["jane@example.com"])
    with pytest.raises(DirectoryError, match='a principal named "Jane" already exists'):
        await manager.create_principal("Jane")
    with pytest.raises(DirectoryError, match="address jane@example.com already belongs"):
        await manager.create_principal("other", emails=["JANE@example.com"])
    assert await manager.directory.principal("other") is None, "nothing half-created"
    await manager.create_principal("other")
    with pytest.raises(DirectoryError, match="already belongs"):
        await manager.add_email("other", "jane@example.com")


async def test_password_app_passwords_and_scram(manager):
    await manager.create_principal("jane", password="first")
    jane = await manager.directory.principal("jane")
    assert jane.secrets[0].startswith("{ARGON2ID}")
    assert {s.mechanism for s in jane.scram} == {"SCRAM-SHA-256", "SCRAM-SHA-1"}
    await manager.set_password("jane", "second")
    jane = await manager.directory.principal("jane")
    assert verify_password(jane.secrets[0], "second") and not verify_password(
        jane.secrets[0], "first")
    secret = await manager.add_app_password("jane", "phone")
    jane = await manager.directory.principal("jane")
    assert await manager.directory.verify_password(jane, secret)
    assert secret not in str(jane), "only the hash is kept"
    with pytest.raises(DirectoryError, match='already has an app password named "phone"'):
        await manager.add_app_password("jane", "phone")
    await manager.remove_app_password("jane", "phone")
    jane = await manager.directory.principal("jane")
    assert not await manager.directory.verify_password(jane, secret)


async def test_update_rename_delete(manager):
    await manager.create_principal("jane", emails=["jane@example.com"])
    await manager.create_principal("team", PrincipalType.GROUP, emails=["team@example.com"],
                                   members=[])
    await manager.add_member("team", "jane")
    assert (await manager.directory.principal("jane")).member_of == ["team"]
    p = await manager.update_principal("jane", quota_bytes=5000, description="Jane D",
                                       emails=["jd@example.com"])
    assert p.quota_bytes == 5000
    assert await manager.directory.names_by_email("jane@example.com") == []
    assert await manager.directory.names_by_email("jd@example.com") == ["jane"]
    with pytest.raises(DirectoryError, match="cannot change: secrets"):
        await manager.update_principal("jane", secrets=[])
    await manager.rename("jane", "janet")
    assert await manager.directory.principal("jane") is None
    assert await manager.directory.names_by_email("jd@example.com") == ["janet"]
    assert (await manager.directory.principal("team")).members == ["janet"]
    with pytest.raises(DirectoryError, match='domain "example.com" still has addresses'):
        await manager.delete("example.com")
    await manager.delete("janet")
    assert await manager.directory.names_by_email("jd@example.com") == []
    assert (await manager.directory.principal("team")).members == []
    await manager.delete("team")
    await manager.delete("example.com")
    assert not await manager.directory.is_local_domain("example.com")
    assert ("directory.changed", {"event": "deleted", "name": "janet"}) in manager.events


async def test_wildcard_alias_and_listing(manager):
    await manager.create_principal("sales", emails=["sales-*@example.com"])
    await manager.create_principal("zed", description="Zed Z")
    r = await resolve(manager.directory, "sales-emea@example.com")
    assert (r.outcome, r.accounts) == (Outcome.LOCAL, ["sales"])
    assert (await resolve(manager.directory, "salesx@example.com")).outcome == \
        Outcome.UNKNOWN_USER
    names = [p.name for p in await manager.directory.list_principals()]
    assert names == ["example.com", "sales", "zed"]
    assert [p.name for p in await manager.directory.list_principals(
        type=PrincipalType.INDIVIDUAL, search="zed z")] == ["zed"]
    page1 = await manager.directory.list_principals(limit=2)
    page2 = await manager.directory.list_principals(after=page1[-1].name, limit=2)
    assert [p.name for p in page1 + page2] == names
