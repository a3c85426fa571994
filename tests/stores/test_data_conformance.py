"""One conformance suite for every data-store backend (memory, LMDB, SQLite, PostgreSQL,
MySQL/MariaDB): the same behaviour is asserted against each, through ``open_data_store``."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stalwart_mp.store.data import (
    AssertionFailed,
    DataStore,
    StoreError,
    WriteBatch,
    decode_counter,
    encode_counter,
)
from stalwart_mp.store.registry import open_data_store
from tests.stores import backends, store_procs

SPAWN = multiprocessing.get_context("spawn")
MIB = 1024 * 1024

# memcmp order: a prefix sorts before its extensions; 0x00 and 0xff at both ends.
ORDERED_KEYS = [
    b"\x00",
    b"\x00\x00",
    b"\x00\x01",
    b"\x01",
    b"\x01\x00",
    b"\x01\x00\x00",
    b"\x01\xff",
    b"\x02",
    b"\x7f\xff",
    b"\x80",
    b"\xfe\xff\xff",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
]


@pytest.fixture(params=backends.ALL)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(kind: str, tmp_path: Path) -> Any:
    s = backends.settings_for(kind, tmp_path)
    yield s
    backends.drop_table(s)


@pytest.fixture
async def store(settings: dict[str, Any]) -> AsyncIterator[DataStore]:
    s = open_data_store("test", settings)
    try:
        yield s
    finally:
        await s.close()


async def put_all(store: DataStore, keys: list[bytes]) -> None:
    batch = WriteBatch()
    for key in keys:
        batch.put(key, b"v:" + key)
    await store.write(batch)


# --- get / get_many ---------------------------------------------------------------------


async def test_get_missing_then_put(store: DataStore) -> None:
    assert await store.get(b"\x05missing") is None
    await store.write(WriteBatch().put(b"\x05k", b"value"))
    assert await store.get(b"\x05k") == b"value"
    await store.write(WriteBatch().put(b"\x05k", b"other"))
    assert await store.get(b"\x05k") == b"other"


async def test_put_empty_and_binary_values(store: DataStore) -> None:
    binary = bytes(range(256)) * 4 + b"'\\\"\x00"
    await store.write(WriteBatch().put(b"\x05e", b"").put(b"\x05b", binary))
    assert await store.get(b"\x05e") == b""
    assert await store.get(b"\x05b") == binary


async def test_get_many_in_order_of_keys(store: DataStore) -> None:
    await put_all(store, [b"\x01a", b"\x01c"])
    got = await store.get_many([b"\x01c", b"\x01b", b"\x01a", b"\x01c"])
    assert got == [b"v:\x01c", None, b"v:\x01a", b"v:\x01c"]
    assert await store.get_many([]) == []


async def test_delete(store: DataStore) -> None:
    await put_all(store, [b"\x01a", b"\x01b"])
    await store.write(WriteBatch().delete(b"\x01a").delete(b"\x01zz"))
    assert await store.get_many([b"\x01a", b"\x01b"]) == [None, b"v:\x01b"]
    assert await store.range(b"\x01", b"\x02", keys_only=True) == [(b"\x01b", None)]


# --- range --------------------------------------------------------------------------------


async def test_range_is_memcmp_order(store: DataStore) -> None:
    shuffled = ORDERED_KEYS[:]
    random.Random(7).shuffle(shuffled)
    await put_all(store, shuffled)
    got = await store.range(b"\x00", b"\xff\xff\xff")
    assert [k for k, _ in got] == ORDERED_KEYS
    assert all(v == b"v:" + k for k, v in got)
    # An empty start is the smallest key there is.
    assert [k for k, _ in await store.range(b"", b"\x00\x01")] == [b"\x00", b"\x00\x00"]


async def test_range_boundaries(store: DataStore) -> None:
    await put_all(store, ORDERED_KEYS)

    async def keys(start: bytes, end: bytes, **kw: Any) -> list[bytes]:
        return [k for k, _ in await store.range(start, end, **kw)]

    # start inclusive, end exclusive; prefixes sort before their extensions.
    assert await keys(b"\x01", b"\x02") == [b"\x01", b"\x01\x00", b"\x01\x00\x00", b"\x01\xff"]
    assert await keys(b"\x01\x00", b"\x01\xff") == [b"\x01\x00", b"\x01\x00\x00"]
    assert await keys(b"\x00", b"\x00\x01") == [b"\x00", b"\x00\x00"]
    assert await keys(b"\xff", b"\xff\xff") == [b"\xff", b"\xff\x00"]
    assert await keys(b"\xff\xff", b"\xff\xff\xff") == [b"\xff\xff"]
    assert await keys(b"\x00\x00\x00", b"\x00\x01") == []
    assert await keys(b"\x03", b"\x7f") == []


async def test_range_empty_when_start_not_below_end(store: DataStore) -> None:
    await put_all(store, ORDERED_KEYS)
    assert await store.range(b"\x01", b"\x01") == []
    assert await store.range(b"\x02", b"\x01") == []
    assert await store.range(b"\x02", b"\x01", reverse=True) == []
    assert await store.range(b"\x00", b"\xff", limit=0) == []


async def test_range_reverse_and_limit(store: DataStore) -> None:
    await put_all(store, ORDERED_KEYS)
    every = await store.range(b"\x00", b"\xff\xff\xff", reverse=True)
    assert [k for k, _ in every] == ORDERED_KEYS[::-1]
    assert all(v == b"v:" + k for k, v in every)
    part = await store.range(b"\x01", b"\x02", reverse=True, limit=2)
    assert [k for k, _ in part] == [b"\x01\xff", b"\x01\x00\x00"]
    first = await store.range(b"\x01", b"\x02", limit=3)
    assert [k for k, _ in first] == [b"\x01", b"\x01\x00", b"\x01\x00\x00"]
    # end is exclusive in reverse too; a limit larger than the range is harmless.
    tail = await store.range(b"\xfe", b"\xff\xff", reverse=True, limit=100)
    assert [k for k, _ in tail] == [b"\xff\x00", b"\xff", b"\xfe\xff\xff"]
    # Reverse from an end past every key, and from an end below every key.
    assert [k for k, _ in await store.range(b"\xff\x01", b"\xff\xff\xff\xff", reverse=True)] == [
        b"\xff\xff"
    ]
    assert await store.range(b"", b"\x00", reverse=True) == []


async def test_range_keys_only(store: DataStore) -> None:
    await put_all(store, ORDERED_KEYS)
    got = await store.range(b"\x01", b"\x02", keys_only=True)
    assert got == [
        (b"\x01", None),
        (b"\x01\x00", None),
        (b"\x01\x00\x00", None),
        (b"\x01\xff", None),
    ]
    rev = await store.range(b"\x01", b"\x02", keys_only=True, reverse=True, limit=1)
    assert rev == [(b"\x01\xff", None)]


# --- batches ------------------------------------------------------------------------------


async def test_batch_applies_every_op(store: DataStore) -> None:
    await put_all(store, [b"\x02old"])
    await store.write(
        WriteBatch().put(b"\x02a", b"1").delete(b"\x02old").add(b"\x02n", 3).put(b"\x02b", b"2")
    )
    assert await store.range(b"\x02", b"\x03") == [
        (b"\x02a", b"1"),
        (b"\x02b", b"2"),
        (b"\x02n", encode_counter(3)),
    ]


async def test_failed_assertion_writes_nothing(store: DataStore) -> None:
    await put_all(store, [b"\x02keep"])
    batch = (
        WriteBatch()
        .put(b"\x02new", b"x")
        .delete(b"\x02keep")
        .add(b"\x02cnt", 1)
        .assert_value(b"\x02keep", b"not the value")
    )
    with pytest.raises(AssertionFailed) as info:
        await store.write(batch)
    assert info.value.key == b"\x02keep"
    assert await store.range(b"\x02", b"\x03") == [(b"\x02keep", b"v:\x02keep")]


async def test_assert_value_compare_and_set(store: DataStore) -> None:
    await store.write(WriteBatch().put(b"\x02k", b"v1"))
    await store.write(WriteBatch().assert_value(b"\x02k", b"v1").put(b"\x02k", b"v2"))
    assert await store.get(b"\x02k") == b"v2"
    with pytest.raises(AssertionFailed):
        await store.write(WriteBatch().assert_value(b"\x02k", b"v1").put(b"\x02k", b"v3"))
    assert await store.get(b"\x02k") == b"v2"


async def test_assert_absent(store: DataStore) -> None:
    await store.write(WriteBatch().assert_value(b"\x02k", None).put(b"\x02k", b"first"))
    with pytest.raises(AssertionFailed):
        await store.write(WriteBatch().assert_value(b"\x02k", None).put(b"\x02k", b"second"))
    assert await store.get(b"\x02k") == b"first"
    # An empty value is present, not absent.
    await store.write(WriteBatch().put(b"\x02e", b""))
    with pytest.raises(AssertionFailed):
        await store.write(WriteBatch().assert_value(b"\x02e", None))


async def test_ops_apply_in_order(store: DataStore) -> None:
    # An assertion sees the writes before it in the same batch.
    await store.write(
        WriteBatch()
        .put(b"\x02k", b"a")
        .assert_value(b"\x02k", b"a")
        .delete(b"\x02k")
        .assert_value(b"\x02k", None)
        .add(b"\x02c", 2)
        .assert_value(b"\x02c", encode_counter(2))
        .put(b"\x02k", b"b")
    )
    assert await store.get_many([b"\x02k", b"\x02c"]) == [b"b", encode_counter(2)]


async def test_concurrent_create_if_absent_has_one_winner(store: DataStore) -> None:
    async def claim(i: int) -> bool:
        try:
            await store.write(
                WriteBatch().assert_value(b"\x02lock", None).put(b"\x02lock", b"%d" % i)
            )
        except AssertionFailed:
            return False
        return True

    wins = await asyncio.gather(*(claim(i) for i in range(24)))
    assert wins.count(True) == 1
    assert await store.get(b"\x02lock") == b"%d" % wins.index(True)


async def test_concurrent_compare_and_set_loses_no_update(store: DataStore) -> None:
    await store.write(WriteBatch().put(b"\x02v", b"0"))

    async def increment() -> None:
        while True:
            old = await store.get(b"\x02v")
            new = b"%d" % (int(old) + 1)
            try:
                await store.write(WriteBatch().assert_value(b"\x02v", old).put(b"\x02v", new))
                return
            except AssertionFailed:
                continue

    await asyncio.gather(*(increment() for _ in range(30)))
    assert await store.get(b"\x02v") == b"30"


async def test_readers_never_see_half_a_batch(store: DataStore) -> None:
    # Money moves between two keys; every read of both must see a total of 100.
    await store.write(
        WriteBatch().put(b"\x03a", encode_counter(100)).put(b"\x03b", encode_counter(0))
    )
    done = asyncio.Event()

    async def mover() -> None:
        for i in range(60):
            amount = (i % 7) - 3
            await store.write(WriteBatch().add(b"\x03a", -amount).add(b"\x03b", amount))
            await asyncio.sleep(0)  # let the readers in even where writes never suspend
        done.set()

    async def reader() -> int:
        seen = 0
        while not done.is_set():
            a, b = await store.get_many([b"\x03a", b"\x03b"])
            assert decode_counter(a) + decode_counter(b) == 100
            pairs = await store.range(b"\x03", b"\x04")
            assert sum(decode_counter(v) for _, v in pairs) == 100
            seen += 1
            await asyncio.sleep(0)
        return seen

    _, *seen = await asyncio.gather(mover(), reader(), reader())
    assert all(n > 0 for n in seen)


# --- counters -----------------------------------------------------------------------------


async def test_add_counters(store: DataStore) -> None:
    assert await store.counter(b"\x04c") == 0
    await store.write(WriteBatch().add(b"\x04c", 5))
    assert await store.get(b"\x04c") == b"\x00\x00\x00\x00\x00\x00\x00\x05"
    await store.write(WriteBatch().add(b"\x04c", -7))
    assert await store.counter(b"\x04c") == -2
    assert await store.get(b"\x04c") == (-2).to_bytes(8, "big", signed=True)
    await store.write(WriteBatch().add(b"\x04c", 10).add(b"\x04c", 1))
    assert await store.counter(b"\x04c") == 9
    await store.write(WriteBatch().add(b"\x04neg", -3))
    assert await store.counter(b"\x04neg") == -3
    await store.write(WriteBatch().add(b"\x04big", 2**62).add(b"\x04big", 2**62 - 1))
    assert await store.counter(b"\x04big") == 2**63 - 1


async def test_add_rejects_non_counter_and_overflow(store: DataStore) -> None:
    await store.write(
        WriteBatch().put(b"\x04s", b"text").put(b"\x04max", encode_counter(2**63 - 1))
    )
    with pytest.raises(StoreError):
        await store.write(WriteBatch().put(b"\x04x", b"1").add(b"\x04s", 1))
    with pytest.raises(StoreError):
        await store.write(WriteBatch().add(b"\x04max", 1))
    assert await store.get_many([b"\x04s", b"\x04x"]) == [b"text", None]
    assert await store.counter(b"\x04max") == 2**63 - 1


async def test_concurrent_adds(store: DataStore) -> None:
    await asyncio.gather(*(store.write(WriteBatch().add(b"\x04n", d)) for d in range(-50, 100)))
    assert await store.counter(b"\x04n") == sum(range(-50, 100))


# --- ids ------------------------------------------------------------------------------------


async def test_assign_id_sequences(store: DataStore) -> None:
    assert [await store.assign_id(b"\x06seq") for _ in range(3)] == [1, 2, 3]
    assert await store.assign_id(b"\x06other") == 1
    assert await store.counter(b"\x06seq") == 3


async def test_assign_id_concurrent(store: DataStore) -> None:
    ids = await asyncio.gather(*(store.assign_id(b"\x06seq") for _ in range(200)))
    assert sorted(ids) == list(range(1, 201))


@pytest.mark.parametrize("kind", backends.MULTI_PROCESS, indirect=True)
async def test_assign_id_across_processes(store: DataStore, settings: dict[str, Any]) -> None:
    assert await store.assign_id(b"\x06seq") == 1  # this process uses the store too
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=store_procs.allocate_ids, args=(settings, b"\x06seq", 100, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    reports = [await asyncio.to_thread(results.get, True, 90) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert len({pid for pid, _ in reports}) == 4
    ids = [i for _, got in reports for i in got]
    assert sorted(ids) == list(range(2, 402))  # 400 distinct ids, none lost
    assert await store.counter(b"\x06seq") == 401


# --- large values and durability ------------------------------------------------------------


async def test_large_values(store: DataStore) -> None:
    # 8 MiB: beyond one MySQL packet of 16 MiB once PyMySQL hex-encodes it. Zeros too: the
    # worst case of any escaping scheme, and a value compression would make look small.
    rng = random.Random(5)
    big = rng.randbytes(8 * MIB)
    zeros = bytes(8 * MIB)
    await store.write(WriteBatch().put(b"\x07big", big).put(b"\x07small", b"s"))
    await store.write(WriteBatch().put(b"\x07zero", zeros))
    assert await store.get(b"\x07big") == big
    assert await store.range(b"\x07", b"\x08") == [
        (b"\x07big", big),
        (b"\x07small", b"s"),
        (b"\x07zero", zeros),
    ]
    bigger = rng.randbytes(8 * MIB + 1)
    await store.write(WriteBatch().assert_value(b"\x07big", big).put(b"\x07big", bigger))
    assert await store.get_many([b"\x07big", b"\x07zero"]) == [bigger, zeros]
    with pytest.raises(AssertionFailed):
        await store.write(WriteBatch().assert_value(b"\x07big", big).put(b"\x07big", b"x"))
    assert await store.get(b"\x07big") == bigger


@pytest.mark.parametrize("kind", ["mysql"], indirect=True)
async def test_mysql_value_beyond_max_allowed_packet_is_refused(store: DataStore) -> None:
    limit = store._max_packet  # type: ignore[attr-defined]  # the server's setting
    if limit > 64 * MIB:
        pytest.skip(f"max_allowed_packet is {limit} bytes: too large a value to build here")
    with pytest.raises(StoreError, match=f"max_allowed_packet = {limit} bytes"):
        await store.write(WriteBatch().put(b"\x07ok", b"1").put(b"\x07huge", bytes(limit)))
    assert await store.range(b"\x07", b"\x08") == []


# --- several processes ------------------------------------------------------------------------


def run_processes(target: Any, args: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned process per argument tuple (each gets a shared Barrier and a
    results Queue appended), wait for all, and return what each put on the queue."""
    barrier = SPAWN.Barrier(len(args))
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*a, barrier, results)) for a in args]
    for p in procs:
        p.start()
    try:
        reports = [results.get(True, 90) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.exitcode is None:
                p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return reports


@pytest.mark.parametrize("kind", backends.MULTI_PROCESS, indirect=True)
async def test_compare_and_set_across_processes(
    store: DataStore, settings: dict[str, Any]
) -> None:
    await store.write(WriteBatch().put(b"\x02v", b"0"))
    args = [(settings, b"\x02v", 50)] * 4
    reports = await asyncio.to_thread(run_processes, store_procs.cas_increments, args)
    assert len({pid for pid, _ in reports}) == 4
    assert await store.get(b"\x02v") == b"200"  # 4 x 50: no increment lost


@pytest.mark.parametrize("kind", backends.MULTI_PROCESS, indirect=True)
async def test_counters_across_processes(store: DataStore, settings: dict[str, Any]) -> None:
    await store.write(WriteBatch().add(b"\x04sum", 1000))
    keys = (b"\x04sum", b"\x04n")
    deltas = [[(p * 1000 + i) * (-1) ** i for i in range(50)] for p in range(4)]
    args = [(settings, keys, d) for d in deltas]
    pids = await asyncio.to_thread(run_processes, store_procs.add_counters, args)
    assert len(set(pids)) == 4
    assert await store.counter(b"\x04sum") == 1000 + sum(map(sum, deltas))
    assert await store.counter(b"\x04n") == 200


def batch_counts(pairs: list[tuple[bytes, Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for key, _ in pairs:
        number = int.from_bytes(key[1:3], "big")
        counts[number] = counts.get(number, 0) + 1
    return counts


@pytest.mark.parametrize("kind", backends.MULTI_PROCESS, indirect=True)
async def test_killed_writer_leaves_no_partial_batch(settings: dict[str, Any]) -> None:
    """SIGKILL a process inside ``write`` of a 20 000-put batch: all of it or none is there."""
    size, batches = 20_000, 6
    parent_end, child_end = SPAWN.Pipe(duplex=False)
    proc = SPAWN.Process(
        target=store_procs.write_batches_until_killed,
        args=(settings, 0x0D, batches, size, child_end),
    )
    proc.start()
    events: list[tuple[str, int]] = []

    def until(kind: str) -> float:
        while True:
            if not parent_end.poll(90):
                raise AssertionError(f"no {kind!r} from the writer; got {events}")
            events.append(parent_end.recv())
            if events[-1][0] == kind:
                return time.monotonic()

    try:
        await asyncio.to_thread(until, "start")
        child_end.close()  # only now: the child has surely received its end
        await asyncio.to_thread(until, "done")
        # Time a warm write (batch 1: the first one may grow the store's files, and so be
        # slower than the next), then kill the writer somewhere inside batch 2.
        started = await asyncio.to_thread(until, "start")
        one_batch = await asyncio.to_thread(until, "done") - started
        await asyncio.sleep(random.uniform(0.05, 0.7) * one_batch)
        proc.kill()
        await asyncio.to_thread(proc.join, 30)
    finally:
        if proc.exitcode is None:
            proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    while parent_end.poll(0):  # the reports sent before the kill (then end of file)
        try:
            events.append(parent_end.recv())
        except EOFError:
            break
    assert events[-1][0] == "start", f"the kill missed every write: {events}"
    in_flight = events[-1][1]

    store = open_data_store("after-kill", settings)
    try:
        counts = [batch_counts(await store.range(b"\x0d", b"\x0e", keys_only=True))]
        await asyncio.to_thread(backends.wait_for_writers, settings)  # the server settled
        counts.append(batch_counts(await store.range(b"\x0d", b"\x0e", keys_only=True)))
        for seen in counts:
            assert all(n == size for n in seen.values()), f"partial batch visible: {seen}"
            committed = set(range(in_flight))  # acknowledged: durable
            assert committed <= set(seen) <= committed | {in_flight}
        assert set(counts[0]) <= set(counts[1])
        # The other batches' data is intact, value for value.
        first = await store.range(b"\x0d\x00\x00", b"\x0d\x00\x01")
        assert first == [
            (store_procs.batch_key(0x0D, 0, i), b"0:%d:" % i + b"x" * 80) for i in range(size)
        ]
    finally:
        await store.close()


@pytest.mark.parametrize("kind", backends.EMBEDDED, indirect=True)
async def test_write_is_durable_when_it_returns(settings: dict[str, Any]) -> None:
    items = [(b"\x08k%03d" % i, os.urandom(64 + i * 97)) for i in range(40)]
    proc = SPAWN.Process(target=store_procs.write_then_die, args=(settings, items))
    proc.start()
    await asyncio.to_thread(proc.join, 90)
    assert proc.exitcode == -signal.SIGKILL
    store = open_data_store("after-crash", settings)
    try:
        assert await store.range(b"\x08", b"\x09") == items
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["lmdb"], indirect=True)
async def test_lmdb_map_grows(store: DataStore, settings: dict[str, Any]) -> None:
    assert settings["map-size"] == 1 << 20
    values = [os.urandom(700 * 1024) for _ in range(8)]  # ~5.6 MB into a 1 MiB map
    for i, value in enumerate(values):
        await store.write(WriteBatch().put(b"\x09%d" % i, value))
    assert [v for _, v in await store.range(b"\x09", b"\x0a")] == values
    # Another process grows the map further; this one adopts the new size (MapResizedError).
    big = [(b"\x0a", os.urandom(12 * 1024 * 1024))]
    proc = SPAWN.Process(target=store_procs.write_then_die, args=(settings, big))
    proc.start()
    await asyncio.to_thread(proc.join, 90)
    assert proc.exitcode == -signal.SIGKILL
    assert await store.get(b"\x0a") == big[0][1]
    await store.write(WriteBatch().put(b"\x0b", os.urandom(4 * 1024 * 1024)))
    assert len(await store.range(b"\x09", b"\x0c", keys_only=True)) == 10


async def test_two_handles_on_one_store(settings: dict[str, Any]) -> None:
    # e.g. the data and lookup roles naming the same store in one process.
    first = open_data_store("one", settings)
    second = first if settings["type"] == "memory" else open_data_store("two", settings)
    try:
        await first.write(WriteBatch().put(b"\x0c", b"shared"))
        assert await second.get(b"\x0c") == b"shared"
        assert await second.assign_id(b"\x0cid") == 1
        assert await first.assign_id(b"\x0cid") == 2
    finally:
        if second is not first:
            await second.close()
        assert await first.get(b"\x0c") == b"shared"  # closing one leaves the other usable
        await first.close()


async def test_closed_store_refuses(settings: dict[str, Any]) -> None:
    store = open_data_store("closing", settings)
    await store.close()
    with pytest.raises(StoreError, match='store "closing"'):
        await store.get(b"\x01")
