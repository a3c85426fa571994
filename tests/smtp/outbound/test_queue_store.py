"""The queue's storage on a real SQLite store: leases, settling results, management API.

Two ``DataStore`` objects on one SQLite file stand for two queue processes: every race is
decided by the store's compare-and-set, as it would be across processes or nodes.
"""
from __future__ import annotations

import time

import pytest

from stalwart_mp.smtp.queue import manage
from stalwart_mp.smtp.queue.store import (
    CANCELLED,
    DELIVERED,
    QueuedMessage,
    QueuedRecipient,
    abandon,
    acquire,
    due,
    enqueue,
    lease_key,
    renew,
    settle,
)
from stalwart_mp.store.blob import link_key, open_blob_store
from stalwart_mp.store.registry import open_data_store


@pytest.fixture
async def stores(tmp_path):
    one = open_data_store("a", {"type": "sqlite", "path": str(tmp_path / "q.sqlite")})
    two = open_data_store("b", {"type": "sqlite", "path": str(tmp_path / "q.sqlite")})
    blobs = open_blob_store("a", {"type": "sqlite"}, one)
    yield one, two, blobs
    await one.close()
    await two.close()


async def _queue(data, blobs, sender="alice@example.org",
                 rcpts=("x@remote.test", "y@other.test")) -> int:
    blob_id = await blobs.put(b"Subject: hi\r\n\r\nbody\r\n")
    msg = QueuedMessage(0, sender, [QueuedRecipient(a) for a in rcpts], blob_id, 24,
                        time.time(), 0.0)
    return await enqueue(data, blobs, msg)


async def test_one_lease_at_a_time_and_expiry(stores):
    one, two, blobs = stores
    qid = await _queue(one, blobs)
    [(key, found)] = await due(one, time.time(), 10)
    assert found == qid
    got = await acquire(one, key, qid, "runner-1", 30)
    assert got is not None
    # the second runner saw the same due entry before the first took it: it loses
    assert await acquire(two, key, qid, "runner-2", 30) is None
    # the entry moved to the lease's expiry: not due now, due after it
    assert await due(two, time.time(), 10) == []
    later = got[2].expires + 1
    [(key2, _)] = await due(two, later, 10)
    # runner-1 "crashed": once the lease expired, runner-2 takes the message
    again = await acquire(two, key2, qid, "runner-2", 30, now=later)
    assert again is not None and again[2].owner == "runner-2"


async def test_settle_removes_delivered_message_and_blob_link(stores):
    one, _two, blobs = stores
    qid = await _queue(one, blobs, rcpts=("x@remote.test",))
    [(key, _)] = await due(one, time.time(), 10)
    message, _raw, lease = await acquire(one, key, qid, "r", 30)

    def apply(m):
        m.recipients[0].status = DELIVERED
    assert await settle(one, qid, lease, apply) is not None
    assert await manage.get_message(one, qid) is None
    assert await one.get(lease_key(qid)) is None
    assert await due(one, time.time() + 10_000, 10) == []
    assert await one.range(link_key(bytes.fromhex(message.blob_id)),
                           link_key(bytes.fromhex(message.blob_id)) + b"\xff") == []


async def test_cancel_during_delivery_is_kept_by_settle(stores):
    one, two, blobs = stores
    qid = await _queue(one, blobs)
    [(key, _)] = await due(one, time.time(), 10)
    _m, _raw, lease = await acquire(one, key, qid, "r", 30)
    # an administrator cancels y@ (through another process) while the runner works
    assert await manage.cancel(two, qid, "y@other.test") is True
    assert await manage.cancel(two, qid, "nobody@other.test") is False

    def apply(m):  # the runner failed both temporarily and reschedules
        m.next_attempt = time.time() + 60
        for r in m.recipients:
            if r.status == "queued":
                r.reply = "451 try later"
    stored = await settle(one, qid, lease, apply)
    assert [r.status for r in stored.recipients] == ["queued", CANCELLED]
    assert stored.recipients[0].reply == "451 try later"
    assert len(await due(one, time.time() + 61, 10)) == 1


async def test_list_filters_retry_now_and_cancel_whole(stores):
    one, _two, blobs = stores
    a = await _queue(one, blobs, "alice@example.org", ("x@remote.test",))
    b = await _queue(one, blobs, "bob@example.org", ("z@other.test",))
    c = await _queue(one, blobs, "", ("x@remote.test",))
    ids = lambda ms: [m.id for m in ms]
    assert ids(await manage.list_messages(one)) == [a, b, c]
    assert ids(await manage.list_messages(one, sender="BOB@example.org")) == [b]
    assert ids(await manage.list_messages(one, sender="")) == [c]
    assert ids(await manage.list_messages(one, recipient_domain="remote.test")) == [a, c]
    assert ids(await manage.list_messages(one, after_id=a, limit=1)) == [b]
    assert ids(await manage.list_messages(one, status="scheduled")) == [a, b, c]
    assert ids(await manage.list_messages(one, status="deferred")) == []
    # push b into the future, then retry now brings it back
    def later(m, leased):
        m.next_attempt = time.time() + 3600
        return True
    from stalwart_mp.smtp.queue.store import update
    await update(one, b, later)
    assert b not in [q for _, q in await due(one, time.time(), 10)]
    assert await manage.retry_now(one, b) is True
    assert b in [q for _, q in await due(one, time.time() + 0.01, 10)]
    assert await manage.retry_now(one, 999) is False
    assert await manage.cancel(one, c) is True
    assert await manage.get_message(one, c) is None
    assert c not in [q for _, q in await due(one, time.time() + 10, 10)]
    assert await manage.cancel(one, c) is False


async def test_renewed_lease_keeps_others_out_and_settles(stores):
    one, two, blobs = stores
    qid = await _queue(one, blobs, rcpts=("x@remote.test",))
    [(key, _)] = await due(one, time.time(), 10)
    _m, _raw, lease = await acquire(one, key, qid, "r1", 2)
    renewed = await renew(one, qid, lease, 60)
    assert renewed is not None and renewed.expires > lease.expires
    # past the first expiry the message is not due: the renewal moved the entry
    assert await due(two, lease.expires + 1, 10) == []
    assert await renew(one, qid, lease, 60) is None   # a stale lease cannot renew

    def apply(m):
        m.recipients[0].status = DELIVERED
    # settled with the lease first taken: the owner is what counts
    assert await settle(one, qid, lease, apply) is not None
    assert await manage.get_message(one, qid) is None
    assert await one.get(lease_key(qid)) is None
    assert await due(one, renewed.expires + 1, 10) == []


async def test_abandoned_lease_is_due_again_at_once(stores):
    one, two, blobs = stores
    qid = await _queue(one, blobs, rcpts=("x@remote.test",))
    [(key, _)] = await due(one, time.time(), 10)
    _m, _raw, lease = await acquire(one, key, qid, "r1", 900)
    assert await due(two, time.time(), 10) == []
    assert await abandon(one, qid, lease) is True
    [(key2, found)] = await due(two, time.time() + 0.01, 10)
    assert found == qid
    assert await acquire(two, key2, qid, "r2", 900) is not None
    assert await abandon(one, qid, lease) is False   # not ours any more
