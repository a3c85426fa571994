"""Authentication with brute-force protection, over the internal directory."""
from __future__ import annotations

import asyncio

import pytest

from stalwart_mp.directory.auth import Authenticator, BanPolicy, Failure
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.store.lookup import open_lookup_store
from stalwart_mp.store.registry import open_data_store


@pytest.fixture
async def auth(tmp_path):
    store = open_data_store("data", {"type": "lmdb", "path": str(tmp_path / "db")})
    directory = InternalDirectory(store)
    manager = DirectoryManager(directory)
    await manager.create_domain("example.com")
    await manager.create_principal("jane", password="right-password")
    await manager.create_principal("off", password="right-password", disabled=True)
    lookup = await _maybe(open_lookup_store("data", {"type": "lmdb"}, store))
    policy = BanPolicy(ip_failures=3, ip_window=60, ban_duration=1.5, account_failures=5,
                       account_window=60, allowed_networks=("10.9.0.0/16",))
    yield Authenticator(directory, lookup, policy, manager)
    await store.close()


async def _maybe(value):
    return await value if asyncio.iscoroutine(value) else value


async def test_success_and_uniform_failures(auth):
    assert (await auth.authenticate("jane", "right-password", "192.0.2.1")).ok
    for user, pw in (("jane", "wrong"), ("nobody", "right-password"),
                     ("off", "right-password")):
        result = await auth.authenticate(user, pw, "192.0.2.2")
        assert not result.ok and result.failure == Failure.INVALID


async def test_ban_after_failures_then_unban_after_duration(auth):
    for _ in range(3):
        assert (await auth.authenticate("jane", "bad", "198.51.100.7")).failure == \
            Failure.INVALID
    assert await auth.is_banned("198.51.100.7")
    # banned: even the right password is refused
    assert (await auth.authenticate("jane", "right-password", "198.51.100.7")).failure == \
        Failure.BANNED
    assert (await auth.authenticate("jane", "right-password", "198.51.100.8")).ok
    await asyncio.sleep(2.0)
    assert not await auth.is_banned("198.51.100.7")


async def test_allowed_networks_are_never_banned(auth):
    for _ in range(5):
        await auth.authenticate("jane", "bad", "10.9.1.1")
    assert not await auth.is_banned("10.9.1.1")


async def test_account_throttle_against_distributed_guessing(auth):
    for i in range(5):  # from five addresses: no IP reaches its ban threshold
        await auth.authenticate("jane", "bad", f"203.0.113.{i}")
    result = await auth.authenticate("jane", "right-password", "203.0.113.200")
    assert result.failure == Failure.THROTTLED


async def test_old_hash_is_upgraded_to_argon2_on_login(auth):
    import base64
    import hashlib
    salt = b"12345678"
    ssha = "{SSHA}" + base64.b64encode(hashlib.sha1(b"legacy" + salt).digest() + salt).decode()
    await auth.manager.create_principal("old")
    await auth.manager._modify("old", lambda p: setattr(p, "secrets", [ssha]))
    assert (await auth.authenticate("old", "legacy", "192.0.2.9")).ok
    old = await auth.directory.principal("old")
    assert old.secrets[0].startswith("{ARGON2ID}")
    assert (await auth.authenticate("old", "legacy", "192.0.2.9")).ok
