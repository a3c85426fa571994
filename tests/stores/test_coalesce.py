"""Concurrent write batches merged into one durable commit, with per-caller assertions."""
from __future__ import annotations

import asyncio

import pytest

from stalwart_mp.store.coalesce import CoalescingDataStore
from stalwart_mp.store.data import AssertionFailed, WriteBatch
from stalwart_mp.store.registry import open_data_store


@pytest.fixture
async def store(tmp_path):
    s = CoalescingDataStore(open_data_store("d", {"type": "lmdb", "path": str(tmp_path)}))
    yield s
    await s.close()


async def test_concurrent_batches_share_commits(store):
    await asyncio.gather(*(store.write(WriteBatch().put(b"k%03d" % i, b"v").add(b"n", 1))
                           for i in range(100)))
    assert await store.counter(b"n") == 100
    assert len(await store.range(b"k", b"l")) == 100
    assert store.batches == 100 and store.commits < 20


async def test_failed_assertion_fails_only_its_batch(store):
    await store.write(WriteBatch().put(b"x", b"1"))
    ok1 = store.write(WriteBatch().put(b"a", b"1"))
    bad = store.write(WriteBatch().assert_value(b"x", b"2").put(b"b", b"1"))
    ok2 = store.write(WriteBatch().assert_value(b"x", b"1").put(b"c", b"1"))
    results = await asyncio.gather(ok1, bad, ok2, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AssertionFailed)
    assert [k for k, _ in await store.range(b"a", b"d")] == [b"a", b"c"]


async def test_later_batch_sees_earlier_batch_of_the_same_commit(store):
    first = store.write(WriteBatch().put(b"p", b"1"))
    second = store.write(WriteBatch().assert_value(b"p", b"1").put(b"q", b"2"))
    await asyncio.gather(first, second)
    assert await store.get(b"q") == b"2"
