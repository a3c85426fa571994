"""One conformance suite for every blob-store backend: fs, s3 (moto), and blobs in each data
store (LMDB, SQLite, PostgreSQL, MySQL/MariaDB, memory), all opened through
``open_blob_store`` with their links in a data store."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stalwart_mp.store import blob as blob_module
from stalwart_mp.store.backends.data_blob import CHUNK_SIZE, DataBlobStore, head_key
from stalwart_mp.store.backends import fs_blob
from stalwart_mp.store.backends.fs_blob import TEMP_PREFIX, FsBlobStore
from stalwart_mp.store.backends.s3_blob import S3BlobStore
from stalwart_mp.store.blob import (
    BlobStore,
    blob_id_of,
    open_blob_store,
    put_at_key,
)
from stalwart_mp.store.data import AssertionFailed, DataStore, StoreError, WriteBatch
from stalwart_mp.store.registry import open_data_store
from tests.stores import backends
from tests.stores.s3_server import MotoServer

SPAWN = multiprocessing.get_context("spawn")
KINDS = ("fs", "fs-file", "s3", "data-lmdb", "data-sqlite", "data-postgresql", "data-mysql",
         "data-memory")
MULTI_PROCESS = tuple(k for k in KINDS if k != "data-memory")
MIB = 1024 * 1024


@dataclass(slots=True)
class Case:
    """How to open one blob store: its settings, and the data store holding its links."""

    kind: str
    name: str
    settings: dict[str, Any]
    links_name: str
    links_settings: dict[str, Any]

    async def open(self) -> tuple[DataStore, BlobStore]:
        links = open_data_store(self.links_name, self.links_settings)
        return links, open_blob_store(self.name, self.settings, links)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def case(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Case]:
    if kind in ("fs", "fs-file", "s3"):
        links = backends.settings_for("lmdb", tmp_path)
        if kind == "fs":   # group sync (syncfs)
            settings = {"type": "fs", "path": str(tmp_path / "blobs")}
        elif kind == "fs-file":   # every file and folder fsync'ed
            settings = {"type": "fs", "path": str(tmp_path / "blobs"), "sync": "file"}
        else:
            server: MotoServer = request.getfixturevalue("moto_server")
            settings = server.settings(server.new_bucket(), **{"key-prefix": "mail/"})
        yield Case(kind, "blobs", settings, "data", links)
        return
    # Blobs in a data store: the same store as the links (opened once, reused).
    settings = backends.settings_for(kind.removeprefix("data-"), tmp_path)
    try:
        yield Case(kind, "data", settings, "data", settings)
    finally:
        backends.drop_table(settings)


@pytest.fixture
async def blobs(case: Case) -> AsyncIterator[BlobStore]:
    links, store = await case.open()
    try:
        yield store
    finally:
        await store.close()
        await links.close()


async def stored_units(store: BlobStore, blob_id: str) -> int:
    """How many backend objects hold the blob: files, S3 objects, data-store chunk keys."""
    if isinstance(store, FsBlobStore):
        return sum(1 for p in store.blob_files() if p.name == blob_id)
    if isinstance(store, S3BlobStore):
        listed = await asyncio.to_thread(
            store._client.list_objects_v2, Bucket=store.bucket, Prefix=store.prefix
        )
        return sum(1 for o in listed.get("Contents", []) if o["Key"].endswith(blob_id))
    assert isinstance(store, DataBlobStore)
    head = head_key(blob_id)
    return len(await store.store.range(head, head + b"\xff" * 5, keys_only=True))


def chunks_of(size: int) -> int:
    return 1 + (size + CHUNK_SIZE - 1) // CHUNK_SIZE  # the length record + the chunks


# --- put / get ------------------------------------------------------------------------------


async def test_round_trip_is_byte_exact(blobs: BlobStore) -> None:
    rng = random.Random(1)
    for data in (b"", b"x", bytes(range(256)) * 3, rng.randbytes(8 * MIB)):
        blob_id = await blobs.put(data)
        assert blob_id == hashlib.sha256(data).hexdigest() == blob_id_of(data)
        assert await blobs.get(blob_id) == data
        assert await blobs.exists(blob_id)


async def test_put_accepts_bytes_like(blobs: BlobStore) -> None:
    blob_id = await blobs.put(memoryview(bytearray(b"abc")))
    assert blob_id == blob_id_of(b"abc")
    assert await blobs.get(blob_id) == b"abc"


async def test_missing_blob(blobs: BlobStore) -> None:
    absent = blob_id_of(b"never stored")
    assert await blobs.get(absent) is None
    assert await blobs.get(absent, 3, 10) is None
    assert await blobs.get(absent, 5, 5) is None
    assert not await blobs.exists(absent)
    assert not await blobs.delete(absent)
    # Malformed ids (they may come from a client) are simply absent.
    for bad in ("", "../../etc/passwd", absent.upper(), absent[:-1], absent + "0"):
        assert await blobs.get(bad) is None
        assert not await blobs.exists(bad)
        assert not await blobs.delete(bad)


async def test_same_content_is_stored_once(blobs: BlobStore) -> None:
    data = random.Random(2).randbytes(CHUNK_SIZE * 2 + 100)
    first = await blobs.put(data)
    second = await blobs.put(bytes(data))
    assert first == second
    other = await blobs.put(data + b"!")
    assert other != first
    expected = chunks_of(len(data)) if isinstance(blobs, DataBlobStore) else 1
    assert await stored_units(blobs, first) == expected
    assert await blobs.get(first) == data
    if isinstance(blobs, FsBlobStore):
        assert blobs.path_of(first).relative_to(blobs.root).parts == (
            first[:2], first[2:4], first
        )
        assert len(blobs.blob_files()) == 2


async def test_concurrent_puts_in_one_process(blobs: BlobStore) -> None:
    data = random.Random(3).randbytes(100_000)
    ids = await asyncio.gather(*(blobs.put(data) for _ in range(16)))
    assert set(ids) == {blob_id_of(data)}
    expected = chunks_of(len(data)) if isinstance(blobs, DataBlobStore) else 1
    assert await stored_units(blobs, ids[0]) == expected
    assert await blobs.get(ids[0]) == data


# --- ranges -----------------------------------------------------------------------------------


async def test_ranges(blobs: BlobStore) -> None:
    data = random.Random(4).randbytes(3 * CHUNK_SIZE + 777)
    size = len(data)
    blob_id = await blobs.put(data)
    c = CHUNK_SIZE
    ranges: list[tuple[int, int | None]] = [
        (0, None), (1, None), (c, None), (size - 1, None), (size, None), (size + 10, None),
        (0, 1), (0, 10), (5, 17), (c - 1, c), (c - 1, c + 1), (c - 10, c + 10), (c, 2 * c),
        (c + 1, 3 * c - 1), (10, size - 10), (0, size), (size - 5, size + 100),
        (2 * c, size + 1_000_000), (size, size + 5), (size + 3, size + 9),
        (0, 0), (7, 7), (c, c), (9, 3),
    ]
    for start, end in ranges:
        expected = data[start:end] if end is not None else data[start:]
        assert await blobs.get(blob_id, start, end) == expected, (start, end)
    with pytest.raises(ValueError):
        await blobs.get(blob_id, -1)


async def test_ranges_of_empty_blob(blobs: BlobStore) -> None:
    blob_id = await blobs.put(b"")
    for start, end in ((0, None), (0, 0), (0, 10), (3, None), (3, 8)):
        assert await blobs.get(blob_id, start, end) == b""


# --- delete -------------------------------------------------------------------------------------


async def test_delete(blobs: BlobStore) -> None:
    data = random.Random(5).randbytes(CHUNK_SIZE + 1)
    keep = await blobs.put(b"keep me")
    blob_id = await blobs.put(data)
    assert await blobs.delete(blob_id)
    assert await blobs.get(blob_id) is None
    assert await blobs.get(blob_id, 1, 5) is None
    assert not await blobs.exists(blob_id)
    assert not await blobs.delete(blob_id)
    assert await stored_units(blobs, blob_id) == 0
    assert await blobs.links.get(put_at_key(bytes.fromhex(blob_id))) is None
    assert await blobs.get(keep) == b"keep me"
    # Stored again after a delete.
    assert await blobs.put(data) == blob_id
    assert await blobs.get(blob_id) == data


# --- links and collection -------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Milliseconds added to the blob store's clock (``clock[0] += ...`` to age blobs)."""
    offset = [0]
    real = blob_module._now_ms
    monkeypatch.setattr(blob_module, "_now_ms", lambda: real() + offset[0])
    return offset


async def test_links(blobs: BlobStore) -> None:
    blob_id = await blobs.put(b"linked")
    assert not await blobs.linked(blob_id)
    await blobs.link(blob_id, b"\x00\x00\x00\x01msg-1")
    await blobs.link(blob_id, b"\x00\x00\x00\x02msg-2")
    await blobs.link(blob_id, b"\x00\x00\x00\x02msg-2")  # idempotent
    assert await blobs.linked(blob_id)
    # The links of a neighbouring blob id do not count.
    other = await blobs.put(b"other")
    assert not await blobs.linked(other)
    await blobs.unlink(blob_id, b"\x00\x00\x00\x01msg-1")
    assert await blobs.linked(blob_id)
    await blobs.unlink(blob_id, b"\x00\x00\x00\x02msg-2")
    assert not await blobs.linked(blob_id)
    await blobs.unlink(blob_id, b"never linked")
    with pytest.raises(StoreError, match='store "'):
        await blobs.link("not-a-blob-id", b"o")


async def test_collect_with_grace(blobs: BlobStore, clock: list[int]) -> None:
    old_unlinked = await blobs.put(b"old, unlinked")
    old_linked = await blobs.put(b"old, linked")
    await blobs.link(old_linked, b"owner")
    old_unlinked_later = await blobs.put(b"old, unlinked later")
    await blobs.link(old_unlinked_later, b"owner")
    big_old = await blobs.put(random.Random(6).randbytes(2 * CHUNK_SIZE + 3))
    assert await blobs.collect(3600) == 0  # everything is fresh
    clock[0] += 2 * 3600 * 1000  # two hours later
    fresh = await blobs.put(b"fresh, not yet linked")
    await blobs.unlink(old_unlinked_later, b"owner")
    assert await blobs.collect(3600) == 3
    for gone in (old_unlinked, old_unlinked_later, big_old):
        assert await blobs.get(gone) is None
        assert await stored_units(blobs, gone) == 0
        assert await blobs.links.get(put_at_key(bytes.fromhex(gone))) is None
    assert await blobs.get(old_linked) == b"old, linked"
    assert await blobs.get(fresh) == b"fresh, not yet linked"
    assert await blobs.collect(3600) == 0
    # The fresh one goes once its grace is over; a collected blob can be stored again.
    clock[0] += 2 * 3600 * 1000
    assert await blobs.collect(3600) == 1
    assert await blobs.put(b"old, unlinked") == old_unlinked
    assert await blobs.get(old_unlinked) == b"old, unlinked"


async def test_put_again_refreshes_grace(blobs: BlobStore, clock: list[int]) -> None:
    blob_id = await blobs.put(b"delivered twice")
    clock[0] += 10_000_000
    assert await blobs.put(b"delivered twice") == blob_id  # a new delivery, not linked yet
    assert await blobs.collect(3600) == 0
    assert await blobs.get(blob_id) == b"delivered twice"


async def test_collect_pages_through_many_blobs(
    blobs: BlobStore, clock: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_module, "_PAGE", 16)
    count = 16 * 3 + 5
    ids = [await blobs.put(b"blob %d" % i) for i in range(count)]
    for blob_id in ids[::3]:
        await blobs.link(blob_id, b"o")
    clock[0] += 10_000
    assert await blobs.collect(5) == count - len(ids[::3])
    assert [await blobs.exists(i) for i in ids] == [n % 3 == 0 for n in range(count)]


async def test_link_into_the_owners_batch(blobs: BlobStore, clock: list[int]) -> None:
    blob_id = await blobs.put(b"message")
    batch = WriteBatch().put(b"\x10email-1", b"metadata")
    await blobs.link_into(batch, blob_id, b"email-1")
    await blobs.links.write(batch)
    assert await blobs.linked(blob_id)
    # A batch prepared before a collector claimed the blob fails instead of linking it.
    orphan = await blobs.put(b"orphan")
    late = WriteBatch().put(b"\x10email-2", b"metadata")
    await blobs.link_into(late, orphan, b"email-2")
    clock[0] += 10_000
    assert await blobs.collect(1) == 1
    with pytest.raises(AssertionFailed) as info:
        await blobs.links.write(late)
    assert info.value.key == put_at_key(bytes.fromhex(orphan))
    unlink = WriteBatch()
    blobs.unlink_into(unlink, blob_id, b"email-1")
    await blobs.links.write(unlink)
    assert not await blobs.linked(blob_id)


async def test_put_waits_for_a_collector_holding_the_blob(blobs: BlobStore) -> None:
    data = b"being collected"
    blob_id = await blobs.put(data)
    key = put_at_key(bytes.fromhex(blob_id))
    lease_end = blob_module._now_ms() + 300
    claim = blob_module._stamp(blob_module._COLLECTING, lease_end)
    await blobs.links.write(WriteBatch().put(key, claim))

    async def collector_finishes() -> None:
        await asyncio.sleep(0.1)
        await blobs._erase(blob_id)
        await blobs.links.write(WriteBatch().assert_value(key, claim).delete(key))

    finishing = asyncio.create_task(collector_finishes())
    assert await blobs.put(data) == blob_id  # waited, then stored the bytes again
    await finishing
    assert await blobs.get(blob_id) == data
    # A lease left by a dead collector expires: put takes the blob over.
    await blobs.links.write(WriteBatch().put(key, claim))
    assert await blobs.put(data) == blob_id
    assert blob_module._now_ms() >= lease_end
    assert await blobs.get(blob_id) == data


# --- several processes ---------------------------------------------------------------------


def put_in_child(case: Case, data: bytes, ready: Any, go: Any, results: Any) -> None:
    """Open both stores in this process, wait for the start signal, put ``data``.

    Reports the blob id, or the error (so the test fails at once, not on a timeout).
    """

    async def run() -> str:
        links, store = await case.open()
        try:
            ready.put(os.getpid())
            await asyncio.to_thread(go.wait, 60)
            return await store.put(data)
        finally:
            await store.close()
            await links.close()

    try:
        results.put(asyncio.run(run()))
    except BaseException as exc:
        ready.put(0)
        results.put(f"{type(exc).__name__}: {exc}")
        raise


def put_then_die(case: Case, items: list[bytes]) -> None:
    """Put each blob; SIGKILL this process the moment the last put returns."""

    async def run() -> None:
        _links, store = await case.open()
        for data in items:
            await store.put(data)
        os.kill(os.getpid(), signal.SIGKILL)  # no close(), no flush, no atexit

    asyncio.run(run())


@pytest.mark.parametrize("kind", MULTI_PROCESS, indirect=True)
async def test_concurrent_puts_from_processes(case: Case, blobs: BlobStore) -> None:
    data = random.Random(7).randbytes(3 * MIB + 5)
    blob_id = blob_id_of(data)
    ready, results, go = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    procs = [
        SPAWN.Process(target=put_in_child, args=(case, data, ready, go, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        await asyncio.to_thread(ready.get, True, 90)
    go.set()
    # While they write, a reader sees the whole blob or nothing.
    while any(p.is_alive() for p in procs) and results.qsize() < len(procs):
        got = await blobs.get(blob_id)
        assert got is None or got == data
        await asyncio.sleep(0.005)
    ids = [await asyncio.to_thread(results.get, True, 90) for _ in procs]
    for p in procs:
        await asyncio.to_thread(p.join, 30)
        assert p.exitcode == 0
    assert ids == [blob_id] * 4
    assert await blobs.get(blob_id) == data
    expected = chunks_of(len(data)) if isinstance(blobs, DataBlobStore) else 1
    assert await stored_units(blobs, blob_id) == expected
    if isinstance(blobs, FsBlobStore):
        leftovers = [p for p in blobs.root.rglob(TEMP_PREFIX + "*")]
        assert leftovers == []
        assert [p.name for p in blobs.blob_files()] == [blob_id]


@pytest.mark.parametrize("kind", ["fs", "fs-file", "data-lmdb", "data-sqlite"], indirect=True)
async def test_put_is_durable_when_it_returns(case: Case) -> None:
    rng = random.Random(8)
    items = [rng.randbytes(n) for n in (0, 1, 4096, CHUNK_SIZE + 9, 2 * MIB)]
    proc = SPAWN.Process(target=put_then_die, args=(case, items))
    proc.start()
    await asyncio.to_thread(proc.join, 90)
    assert proc.exitcode == -signal.SIGKILL
    links, store = await case.open()
    try:
        for data in items:
            assert await store.get(blob_id_of(data)) == data
        if isinstance(store, FsBlobStore):
            assert list(store.root.rglob(TEMP_PREFIX + "*")) == []
    finally:
        await store.close()
        await links.close()


# --- fs specifics -------------------------------------------------------------------------------


async def test_fs_depth_and_leftover_temporaries(tmp_path: Path) -> None:
    links = open_data_store("data", {"type": "memory"})
    flat = open_blob_store("flat", {"type": "fs", "path": str(tmp_path / "flat"), "depth": 0},
                           links)
    assert isinstance(flat, FsBlobStore)
    blob_id = await flat.put(b"flat")
    assert flat.path_of(blob_id) == tmp_path / "flat" / blob_id
    # A temporary left by a writer killed mid-way is invisible, and purged once old.
    stale = tmp_path / "flat" / f"{TEMP_PREFIX}{blob_id[:16]}-x"
    stale.write_bytes(b"fl")
    os.utime(stale, (1, 1))
    fresh = tmp_path / "flat" / f"{TEMP_PREFIX}{blob_id[:16]}-y"
    fresh.write_bytes(b"f")
    assert [p.name for p in flat.blob_files()] == [blob_id]
    await flat.link(blob_id, b"o")
    assert await flat.collect(0) == 0
    assert not stale.exists() and fresh.exists()
    await flat.close()
    await links.close()


async def test_fs_group_sync_covers_every_put_that_waited(tmp_path: Path, monkeypatch) -> None:
    """Puts whose renames land while a syncfs runs are made durable by ONE next syncfs,
    started after them, never by the one already running."""
    links = open_data_store("data", {"type": "memory"})
    store = open_blob_store("g", {"type": "fs", "path": str(tmp_path / "g")}, links)
    assert isinstance(store, FsBlobStore) and store.group_sync
    release, calls = threading.Event(), []

    def slow_syncfs(fd: int) -> None:
        calls.append(len(store._sync_waiters))   # callers waiting for a LATER sync
        release.wait(30)

    monkeypatch.setattr(fs_blob, "_syncfs", slow_syncfs)
    first = asyncio.ensure_future(store.put(b"first"))
    while not calls:   # the first put's sync is running (blocked)
        await asyncio.sleep(0.01)
    others = [asyncio.ensure_future(store.put(b"other %d" % n)) for n in range(9)]
    while len(store._sync_waiters) < 9:
        await asyncio.sleep(0.01)
    assert not first.done() and not any(o.done() for o in others)
    release.set()
    ids = await asyncio.gather(first, *others)
    assert calls == [0, 0] and store.syncs == 2   # one sync for the nine that waited
    assert [await store.get(i) for i in ids] == [b"first"] + [b"other %d" % n for n in range(9)]
    await store.close()
    await links.close()


@pytest.mark.parametrize("sync", ["filesystem", "file"])
async def test_fs_rewrites_a_blob_cut_short_by_a_crash(tmp_path: Path, sync: str) -> None:
    """A final name whose data never reached the disk (renamed, then a crash before the
    sync) has the wrong size: the next put of that content writes it again."""
    links = open_data_store("data", {"type": "memory"})
    store = open_blob_store("c", {"type": "fs", "path": str(tmp_path / "c"), "sync": sync},
                            links)
    data = b"x" * 5000
    blob_id = blob_id_of(data)
    store.path_of(blob_id).parent.mkdir(parents=True)
    store.path_of(blob_id).write_bytes(b"")   # what a crash can leave
    assert await store.put(data) == blob_id
    assert store.path_of(blob_id).read_bytes() == data
    await store.close()
    await links.close()


# --- opening, errors ------------------------------------------------------------------------------


async def test_data_blob_store_reuses_the_data_store(tmp_path: Path) -> None:
    links = open_data_store("main", {"type": "lmdb", "path": str(tmp_path / "db")})
    same = open_blob_store("main", {"type": "lmdb", "path": str(tmp_path / "db")}, links)
    assert isinstance(same, DataBlobStore) and same.store is links
    blob_id = await same.put(b"in the data store")
    await same.close()  # leaves the shared data store open
    assert await links.get(head_key(blob_id)) is not None
    # A separate store of blobs, links still in the data store.
    other = open_blob_store("blobs", {"type": "sqlite", "path": str(tmp_path / "b.db")}, links)
    assert isinstance(other, DataBlobStore) and other.store is not links
    other_id = await other.put(b"in sqlite")
    assert await links.get(put_at_key(bytes.fromhex(other_id))) is not None
    assert await links.get(head_key(other_id)) is None
    assert await other.get(other_id) == b"in sqlite"
    await other.close()
    await links.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, 'store "b": "type" is required (one of lmdb'),
        ({"type": "gopher"}, "store \"b\": type = 'gopher': expected one of"),
        ({"type": "redis"}, 'store "b": a redis store cannot hold blobs; blob stores: lmdb'),
        ({"type": "whoosh", "path": "/tmp/x"}, 'store "b": a whoosh store cannot hold blobs'),
        ({"type": "memcached"}, 'store "b": a memcached store cannot hold blobs'),
        ({"type": "fs"}, 'store "b": "path" is required for a fs store'),
        ({"type": "fs", "path": "/tmp/x", "depth": 9}, "depth = 9: expected an integer"),
        ({"type": "fs", "path": "/tmp/x", "sync": "never"},
         "sync = 'never': expected one of \"filesystem\", \"file\""),
        ({"type": "s3"}, 'store "b": "bucket" is required for a s3 store'),
        ({"type": "s3", "bucket": "Bad_Bucket"}, "bucket = 'Bad_Bucket': expected a bucket"),
        ({"type": "s3", "bucket": "ok-b", "endpoint": "ftp://x"}, "endpoint = 'ftp://x'"),
        ({"type": "s3", "bucket": "ok-b", "max-retries": -1}, "max-retries = -1"),
        ({"type": "s3", "bucket": "ok-b", "timeout": "soon"}, "timeout = 'soon'"),
    ],
)
def test_invalid_settings_name_store_and_key(settings: dict[str, Any], message: str) -> None:
    links = open_data_store("data", {"type": "memory"})
    with pytest.raises(StoreError) as info:
        open_blob_store("b", settings, links)
    assert message in str(info.value)


def test_fs_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError, match=r'^store "b": cannot use folder .*file/blobs'):
        open_blob_store("b", {"type": "fs", "path": str(tmp_path / "file" / "blobs")},
                        open_data_store("data", {"type": "memory"}))


def test_s3_endpoint_down_names_store_and_endpoint() -> None:
    from tests.stores.s3_server import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    settings = {"type": "s3", "bucket": "mail", "endpoint": endpoint, "access-key": "a",
                "secret-key": "b", "timeout": 2, "max-retries": 0}
    with pytest.raises(StoreError) as info:
        open_blob_store("archive", settings, open_data_store("data", {"type": "memory"}))
    assert str(info.value).startswith(f'store "archive": cannot reach bucket mail on S3 at {endpoint}')


def test_s3_missing_bucket_is_named(moto_server: MotoServer) -> None:
    settings = moto_server.settings("no-such-bucket")
    with pytest.raises(StoreError, match=r'^store "b": cannot reach bucket no-such-bucket on S3 '):
        open_blob_store("b", settings, open_data_store("data", {"type": "memory"}))


async def test_s3_endpoint_gone_after_open(moto_server: MotoServer) -> None:
    server = MotoServer()  # a server of its own, stopped mid-test
    server.start()
    try:
        links = open_data_store("data", {"type": "memory"})
        store = open_blob_store("archive", server.settings(server.new_bucket(), timeout=2,
                                                           **{"max-retries": 0}), links)
        blob_id = await store.put(b"stored before the outage")
    finally:
        server.stop()
    for operation in (store.get(blob_id), store.put(b"during the outage"), store.exists(blob_id)):
        with pytest.raises(StoreError) as info:
            await operation
        assert str(info.value).startswith('store "archive": cannot ')
        assert f"on S3 at {server.endpoint}: " in str(info.value)
    await store.close()


def test_modules_do_not_import_drivers_until_opened() -> None:
    code = (
        "import sys\n"
        "import stalwart_mp.store.blob, stalwart_mp.store.blob_settings\n"
        "import stalwart_mp.config.registry as r; r.load_settings_modules()\n"
        "bad = [m for m in ('boto3', 'botocore', 'lmdb', 'psycopg2', 'pymysql') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def _config_errors(stores: dict[str, Any], storage: dict[str, str]) -> list[str]:
    from stalwart_mp.config.loader import ConfigInvalid, load_dict

    stores = {**stores, "fts": {"type": "whoosh", "path": "fts"}}
    data = {"server": {"hostname": "a.example"}, "store": stores,
            "storage": {"fts": "fts", **storage}}
    try:
        load_dict(data)
    except ConfigInvalid as exc:
        return [str(e) for e in exc.errors]
    return []


def test_blob_settings_in_the_config_file() -> None:
    lmdb = {"type": "lmdb", "path": "data"}
    s3 = {"type": "s3", "bucket": "mail-blobs", "endpoint": "https://s3.example.com:9000",
          "region": "eu-west-1", "access-key": "AK", "secret-key": "SK", "key-prefix": "mx1/",
          "timeout": "20s", "max-retries": 4}
    assert _config_errors({"default": lmdb, "blobs": s3}, {"blob": "blobs"}) == []
    fs = {"type": "fs", "path": "blobs", "depth": 3}
    assert _config_errors({"default": lmdb, "blobs": fs}, {"blob": "blobs"}) == []
    errors = _config_errors({"default": lmdb, "blobs": {**fs, "bucket": "mail-blobs"}}, {"blob": "blobs"})
    assert len(errors) == 1 and "store.blobs.bucket" in errors[0] and "s3" in errors[0]
    errors = _config_errors({"default": lmdb, "blobs": {"type": "s3"}}, {"blob": "blobs"})
    assert len(errors) == 1 and "store.blobs.bucket" in errors[0]
