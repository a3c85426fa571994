"""One conformance suite for every lookup-store backend: in-memory, the data store (on
memory, LMDB, SQLite, PostgreSQL, MySQL/MariaDB), Redis and memcached — the same behaviour
asserted against each, opened through ``open_lookup_store``."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stalwart_mp.config.loader import ConfigInvalid, load_dict
from stalwart_mp.store.backends.data_lookup import (
    EXPIRY_TAG,
    VALUE_TAG,
    DataLookup,
    stored_key,
)
from stalwart_mp.store.backends.memcached_lookup import memcached_key
from stalwart_mp.store.backends.memory import MemoryStore
from stalwart_mp.store.backends.memory_lookup import MemoryLookup
from stalwart_mp.store.data import DataStore, StoreError
from stalwart_mp.store.lookup import LockToken, LookupStore, open_lookup_store
from stalwart_mp.store.registry import open_data_store
from tests.services import require_service
from tests.stores import backends, lookup_services

SPAWN = multiprocessing.get_context("spawn")

DATA = ("data-memory", "data-lmdb", "data-sqlite", "data-postgresql", "data-mysql")
ALL = ("memory", *DATA, "redis", "memcached")
SHARED = ("data-lmdb", "data-sqlite", "data-postgresql", "data-mysql", "redis", "memcached")


@dataclass(frozen=True)
class Timing:
    """A key stored for ``ttl`` seconds lives at least ``ttl`` and at most ``ttl + late``."""

    ttl: float
    late: float

    @property
    def gone_after(self) -> float:
        return self.ttl + self.late + 0.1


FAST = Timing(ttl=0.5, late=0.05)  # millisecond expiry
SECONDS = Timing(ttl=1.0, late=1.0)  # memcached: whole seconds, rounded up (+1)


def timing(backend: str) -> Timing:
    return SECONDS if backend == "memcached" else FAST


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def memcached_addr() -> Iterator[str | None]:
    """One private memcached for the module (tests use distinct prefixes); None if absent."""
    server = lookup_services.memcached_server()
    try:
        addr = server.__enter__()
    except RuntimeError:
        yield None
        return
    try:
        yield addr
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(backend: str, tmp_path: Path, memcached_addr: str | None) -> Iterator[dict[str, Any]]:
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    if backend == "memory":
        yield {"type": "memory"}
    elif backend.startswith("data-"):
        s = backends.settings_for(backend[5:], tmp_path)
        yield s
        backends.drop_table(s)
    elif backend == "redis":
        require_service("redis", lookup_services.check_redis)
        yield {"type": "redis", "url": lookup_services.REDIS_URL, "prefix": prefix,
               "timeout": 5, "pool-size": 8}
        lookup_services.delete_redis_prefix(prefix)
    else:
        require_service("memcached", lambda: _memcached_up(memcached_addr))
        yield {"type": "memcached", "servers": [memcached_addr], "prefix": prefix,
               "timeout": 5, "pool-size": 4}


def _memcached_up(addr: str | None) -> None:
    if addr is None:
        raise RuntimeError("could not start /usr/bin/memcached")


@pytest.fixture
async def data_store(backend: str, settings: dict[str, Any]) -> AsyncIterator[DataStore | None]:
    """The data store under a data-backed lookup store (None for the others)."""
    if not backend.startswith("data-"):
        yield None
        return
    store = MemoryStore("lookup") if backend == "data-memory" else open_data_store(
        "lookup", settings
    )
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(
    backend: str, settings: dict[str, Any], data_store: DataStore | None
) -> AsyncIterator[LookupStore]:
    if backend == "data-memory":
        assert data_store is not None
        s: LookupStore = DataLookup(data_store, owns_store=False)
    else:
        # A data-backed lookup store named like the data store reuses it.
        s = await open_lookup_store("lookup", settings, data_store)
    try:
        yield s
    finally:
        await s.close()


# --- set / get / delete ----------------------------------------------------------------------


async def test_set_get_delete(store: LookupStore) -> None:
    assert await store.get(b"k") is None
    await store.set(b"k", b"value")
    assert await store.get(b"k") == b"value"
    await store.set(b"k", b"other")
    assert await store.get(b"k") == b"other"
    await store.set(b"empty", b"")
    assert await store.get(b"empty") == b""
    assert await store.delete(b"k") is True
    assert await store.get(b"k") is None
    assert await store.delete(b"k") is False
    assert await store.get(b"empty") == b""


BINARY_KEYS = [
    b"\x00",
    b"\x00\x00",
    b"\xff",
    b"\xff\x00\xffkey",
    b"with space",
    b"k",
    b"k\x00",
    b"~looks-hashed",
    b"\x7f\n\r\t",
    b"a" * 200,
    b"a" * 201,
    b"a" * 250,
    b"\xff" * 300,
    b"\xff" * 299 + b"\x00",
    b"x" * 300,
    b"x" * 300 + b"y",
]


async def test_binary_and_long_keys_are_distinct(store: LookupStore) -> None:
    for i, key in enumerate(BINARY_KEYS):
        await store.set(key, b"%d" % i)
    for i, key in enumerate(BINARY_KEYS):
        assert await store.get(key) == b"%d" % i, key
    assert await store.delete(b"\xff" * 300) is True
    assert await store.get(b"\xff" * 300) is None
    assert await store.get(b"\xff" * 299 + b"\x00") == b"%d" % BINARY_KEYS.index(
        b"\xff" * 299 + b"\x00"
    )


async def test_binary_values(store: LookupStore) -> None:
    value = bytes(range(256)) * 8
    await store.set(b"bin", value)
    assert await store.get(b"bin") == value


async def test_invalid_arguments(store: LookupStore) -> None:
    with pytest.raises(ValueError):
        await store.get(b"")
    with pytest.raises(ValueError):
        await store.set(b"k", b"v", ttl=0)
    with pytest.raises(TypeError):
        await store.set(b"k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.incr(b"k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.try_lock(b"k", -1)
    with pytest.raises(ValueError):
        await store.rate_limit(b"k", 0, 1)


# --- TTL -----------------------------------------------------------------------------------------


async def test_ttl_expiry(store: LookupStore, backend: str) -> None:
    t = timing(backend)
    await store.set(b"short", b"1", ttl=t.ttl)
    await store.set(b"long", b"2", ttl=600)
    await store.set(b"forever", b"3")
    assert await store.get(b"short") == b"1"
    await asyncio.sleep(t.gone_after)
    assert await store.get(b"short") is None
    assert await store.delete(b"short") is False
    assert await store.get(b"long") == b"2"
    assert await store.get(b"forever") == b"3"


async def test_set_replaces_expiry(store: LookupStore, backend: str) -> None:
    t = timing(backend)
    await store.set(b"k", b"short", ttl=t.ttl)
    await store.set(b"k", b"kept")  # no ttl: lives on
    await store.set(b"j", b"long")
    await store.set(b"j", b"short", ttl=t.ttl)
    await asyncio.sleep(t.gone_after)
    assert await store.get(b"k") == b"kept"
    assert await store.get(b"j") is None


# --- counters -----------------------------------------------------------------------------------


async def test_incr_from_missing_and_negative(store: LookupStore) -> None:
    assert await store.incr(b"c") == 1
    assert await store.incr(b"c", 5) == 6
    assert await store.get(b"c") == b"6"
    assert await store.incr(b"c", -10) == -4
    assert await store.get(b"c") == b"-4"
    assert await store.incr(b"c", 0) == -4
    assert await store.incr(b"neg", -3) == -3
    assert await store.incr(b"neg", 3) == 0
    assert await store.incr(b"\xff" * 300, 2) == 2
    assert await store.delete(b"c") is True
    assert await store.incr(b"c", 2) == 2


async def test_incr_on_a_value_is_an_error(store: LookupStore) -> None:
    await store.set(b"text", b"hello")
    with pytest.raises(StoreError):
        await store.incr(b"text")
    assert await store.get(b"text") == b"hello"


async def test_incr_keeps_initial_ttl(store: LookupStore, backend: str) -> None:
    t = timing(backend)
    ttl = t.ttl + t.late  # long enough that the second increment lands before expiry
    pause = t.late + 0.2
    assert await store.incr(b"c", 1, ttl=ttl) == 1
    await asyncio.sleep(pause)
    assert await store.incr(b"c", 1, ttl=ttl) == 2  # ttl ignored: the counter exists
    # Gone once the first ttl ran out, though an extended one would still run.
    await asyncio.sleep(ttl + t.late + 0.1 - pause)
    assert await store.get(b"c") is None
    assert await store.incr(b"c", 1, ttl=600) == 1  # a new counter after expiry


async def test_concurrent_incr_in_one_process(store: LookupStore) -> None:
    got = await asyncio.gather(*(store.incr(b"n", 1, ttl=60) for _ in range(40)))
    assert sorted(got) == list(range(1, 41))


@pytest.mark.parametrize("backend", SHARED, indirect=True)
async def test_incr_from_processes_sums_exactly(
    store: LookupStore, settings: dict[str, Any]
) -> None:
    assert await store.incr(b"shared", 1, ttl=600) == 1
    results = SPAWN.Queue()
    start = SPAWN.Barrier(4)
    procs = [
        SPAWN.Process(
            target=lookup_services.count_up, args=(settings, b"shared", 30, start, results)
        )
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    reports = [await asyncio.to_thread(results.get, True, 90) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert len({pid for pid, _ in reports}) == 4
    seen = sorted(v for _, values in reports for v in values)
    assert seen == list(range(2, 122))  # every increment saw its own total: none lost
    assert await store.get(b"shared") == b"121"


# --- rate limits ---------------------------------------------------------------------------


async def test_rate_limit_allows_limit_then_denies_then_resets(store: LookupStore) -> None:
    window = 0.6
    # Start just after a window boundary so the burst fits in one window.
    await asyncio.sleep(window - time.time() % window + 0.01)
    for i in range(1, 4):
        r = await store.rate_limit(b"rl", 3, window)
        assert (r.allowed, r.count, r.retry_after) == (True, i, 0.0)
    denied = await store.rate_limit(b"rl", 3, window)
    assert not denied.allowed
    assert denied.count == 4
    assert 0 < denied.retry_after <= window
    other = await store.rate_limit(b"rl-other", 3, window)  # keys are independent
    assert (other.allowed, other.count) == (True, 1)
    await asyncio.sleep(denied.retry_after + 0.01)
    again = await store.rate_limit(b"rl", 3, window)
    assert (again.allowed, again.count) == (True, 1)


# --- locks ---------------------------------------------------------------------------------


async def test_lock_excludes_and_only_the_holder_unlocks(store: LookupStore) -> None:
    token = await store.try_lock(b"lock", 30)
    assert token is not None
    assert await store.try_lock(b"lock", 30) is None
    assert await store.unlock(b"lock", LockToken(b"not the token")) is False
    assert await store.unlock(b"lock", LockToken(b"\x00" * 16)) is False
    assert await store.try_lock(b"lock", 30) is None  # still held
    assert await store.unlock(b"lock", token) is True
    assert await store.unlock(b"lock", token) is False
    second = await store.try_lock(b"lock", 30)
    assert second is not None and second != token
    assert await store.unlock(b"lock", token) is False  # an old token is worthless
    assert await store.unlock(b"lock", second) is True
    assert await store.unlock(b"never-locked", token) is False


async def test_expired_lock_can_be_retaken(store: LookupStore, backend: str) -> None:
    t = timing(backend)
    first = await store.try_lock(b"lock", t.ttl)
    assert first is not None
    await asyncio.sleep(t.gone_after)
    second = await store.try_lock(b"lock", 30)
    assert second is not None
    assert await store.unlock(b"lock", first) is False  # the expired holder cannot release
    assert await store.try_lock(b"lock", 30) is None
    assert await store.unlock(b"lock", second) is True


async def test_concurrent_try_lock_in_one_process(store: LookupStore) -> None:
    tokens = await asyncio.gather(*(store.try_lock(b"lock", 30) for _ in range(20)))
    assert sum(t is not None for t in tokens) == 1


@pytest.mark.parametrize("backend", SHARED, indirect=True)
async def test_lock_race_across_processes_has_one_winner(
    store: LookupStore, settings: dict[str, Any]
) -> None:
    results = SPAWN.Queue()
    start = SPAWN.Barrier(4)
    procs = [
        SPAWN.Process(
            target=lookup_services.race_for_lock, args=(settings, b"race", start, results)
        )
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    reports = [await asyncio.to_thread(results.get, True, 90) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert [won for _, won in reports].count(True) == 1
    assert await store.try_lock(b"race", 30) is None  # the winner still holds it


# --- purge -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ("memory", *DATA), indirect=True)
async def test_purge_expired(
    store: LookupStore, backend: str, data_store: DataStore | None
) -> None:
    t = timing(backend)
    await store.set(b"gone", b"1", ttl=t.ttl)
    await store.incr(b"gone-counter", 1, ttl=t.ttl)
    await store.set(b"\xff" * 300, b"long key", ttl=t.ttl)
    await store.set(b"stays", b"2", ttl=600)
    await store.set(b"forever", b"3")
    lock = await store.try_lock(b"lock", 600)
    assert lock is not None
    assert await store.purge_expired() == 0
    await asyncio.sleep(t.gone_after)
    assert await store.purge_expired() == 3
    assert await store.purge_expired() == 0
    assert await store.get(b"stays") == b"2"
    assert await store.get(b"forever") == b"3"
    assert await store.unlock(b"lock", lock) is True
    if data_store is None:
        return
    # Nothing left of the expired keys, neither records nor index entries.
    records = await data_store.range(VALUE_TAG, EXPIRY_TAG, keys_only=True)
    assert sorted(k for k, _ in records) == [VALUE_TAG + b"forever", VALUE_TAG + b"stays"]
    index = await data_store.range(EXPIRY_TAG, EXPIRY_TAG + b"\xff" * 9, keys_only=True)
    assert [k[9:] for k, _ in index] == [b"stays"]


@pytest.mark.parametrize("backend", ("data-memory",), indirect=True)
async def test_purge_in_batches(store: LookupStore, data_store: DataStore) -> None:
    await asyncio.gather(*(store.set(b"k%04d" % i, b"v", ttl=0.05) for i in range(600)))
    await store.set(b"keep", b"v", ttl=60)
    await asyncio.sleep(0.1)
    assert await store.purge_expired() == 600
    index = await data_store.range(EXPIRY_TAG, EXPIRY_TAG + b"\xff" * 9, keys_only=True)
    assert [k[9:] for k, _ in index] == [b"keep"]


@pytest.mark.parametrize("backend", ("redis", "memcached"), indirect=True)
async def test_servers_expire_keys_themselves(store: LookupStore) -> None:
    assert await store.purge_expired() == 0


# --- key mapping -----------------------------------------------------------------------------


def test_data_key_mapping_is_one_to_one_and_fits() -> None:
    long_keys = [b"a" * 201, b"a" * 202, b"a" * 169 + b"b" * 32, b"\xff" * 500]
    mapped = [stored_key(k) for k in [b"a" * 200, *long_keys]]
    assert mapped[0] == b"a" * 200
    assert len(set(mapped)) == len(mapped)
    assert all(len(m) == 201 for m in mapped[1:])
    assert max(1 + 8 + len(m) for m in mapped) <= 255  # MySQL VARBINARY(255) primary key


def test_memcached_key_mapping() -> None:
    assert memcached_key(b"p:", b"user@example.org") == b"p:user@example.org"
    for key in (b"with space", b"\x00", b"~x", b"a" * 249, "é".encode()):
        mapped = memcached_key(b"p:", key)
        assert mapped.startswith(b"p:~") and len(mapped) <= 250
        assert all(0x21 <= c <= 0x7E for c in mapped)
    assert memcached_key(b"p:", b"a" * 248) == b"p:" + b"a" * 248
    assert memcached_key(b"p:", b"\x00") != memcached_key(b"q:", b"\x00")


# --- opening -----------------------------------------------------------------------------------


async def test_open_memory_is_its_own_backend() -> None:
    store = await open_lookup_store("m", {"type": "memory"}, MemoryStore("m"))
    assert isinstance(store, MemoryLookup)
    await store.close()


async def test_open_reuses_the_data_store_of_the_same_name(tmp_path: Path) -> None:
    settings = {"type": "lmdb", "path": str(tmp_path / "db")}
    data = open_data_store("default", settings)
    try:
        lookup = await open_lookup_store("default", settings, data)
        await lookup.set(b"k", b"v")
        await lookup.close()  # must not close the shared data store
        assert await data.get(VALUE_TAG + b"k") == b"\x00" * 8 + b"v"
        separate = await open_lookup_store("other", {"type": "sqlite",
                                                     "path": str(tmp_path / "l.db")}, data)
        assert await separate.get(b"k") is None
        await separate.close()
    finally:
        await data.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, 'store "look": "type" is required'),
        ({"type": "gopher"}, "store \"look\": type = 'gopher': expected one of"),
        ({"type": "fs", "path": "/tmp"}, 'store "look": a fs store cannot hold lookup keys'),
        ({"type": "s3"}, 'store "look": a s3 store cannot hold lookup keys'),
        ({"type": "whoosh"}, 'store "look": a whoosh store cannot hold lookup keys'),
        ({"type": "redis"}, 'store "look": "url" is required for a redis store'),
        ({"type": "redis", "url": "http://x"}, "url = 'http://x': expected a Redis URL"),
        ({"type": "memcached"}, 'store "look": "servers" is required for a memcached store'),
        ({"type": "memcached", "servers": []}, "servers = []: expected a list"),
        ({"type": "memcached", "servers": ["a b:1"]}, "item 1: expected an address"),
        ({"type": "redis", "url": "redis://x", "prefix": "a b"}, "prefix = 'a b': expected a"),
    ],
)
async def test_open_errors_name_the_store(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreError) as info:
        await open_lookup_store("look", settings)
    assert message in str(info.value)


async def test_unreachable_redis_is_named() -> None:
    with pytest.raises(StoreError) as info:
        await open_lookup_store(
            "look", {"type": "redis", "url": "redis://:secret@127.0.0.1:1/0", "timeout": 2}
        )
    assert str(info.value).startswith('store "look": cannot connect to Redis at 127.0.0.1:1: ')
    assert "secret" not in str(info.value)


async def test_unreachable_memcached_is_named() -> None:
    with pytest.raises(StoreError) as info:
        await open_lookup_store(
            "look", {"type": "memcached", "servers": ["127.0.0.1:1"], "timeout": 2}
        )
    assert str(info.value).startswith('store "look": cannot connect to memcached at 127.0.0.1:1')


def test_lookup_stores_in_a_configuration() -> None:
    config = {
        "server": {"hostname": "a.example"},
        "store": {
            "default": {"type": "lmdb", "path": "data"},
            "fts": {"type": "whoosh", "path": "fts"},
            "cache": {"type": "redis", "url": "redis://10.0.0.1:6379/2", "prefix": "mx1:"},
            "mc": {"type": "memcached", "servers": ["10.0.0.5", "[::1]:11211"]},
        },
        "storage": {"fts": "fts", "lookup": "cache"},
    }
    cfg = load_dict(config)
    assert cfg.get(("store", "cache", "prefix")) == "mx1:"
    assert cfg.get(("store", "mc", "servers")) == ["10.0.0.5", "[::1]:11211"]
    config["store"]["default"]["prefix"] = "x"  # a redis/memcached key only
    with pytest.raises(ConfigInvalid) as info:
        load_dict(config)
    assert "store.default.prefix" in str(info.value.errors[0])


def test_master_does_not_import_drivers() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import stalwart_mp.store.lookup; "
        "bad = [m for m in ('redis', 'pymemcache', 'lmdb', 'psycopg2', 'pymysql') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
