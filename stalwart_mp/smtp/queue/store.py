"""The outbound queue's storage: messages accepted for remote recipients, and their leases.

A submitted message for remote recipients is stored durably here before the session
answers 250; the delivery runner (``smtp/outbound/runner.py``) takes them from here.
Layout in the data store:

  0x60 | queue id (8)              -> queued message (msgpack: envelope, recipients with
                                      their status, attempt history, schedule state)
  0x61 | due (8, ms) | id          -> b"" (the due index the runners scan)
  0x62 | queue id (8)              -> lease (msgpack: owner, expiry in ms)

Leases. A runner takes a message with one compare-and-set batch: the due key it found must
still be there and the lease key must still hold what it read (absent or expired). The same
batch moves the due key to the lease's expiry, so a runner that crashes mid-delivery leaves
a message that becomes due again exactly when its lease runs out, and any runner (on any
node sharing the store) picks it up. Two runners never hold one message at once: the second
batch fails its assertion (``AssertionFailed``) and that runner skips the message.

Every later change of a message (the runner's results, cancel, retry now) is also a
compare-and-set on the message's stored value, re-read and re-applied when it lost a race.
The blob is linked to the queued message so it is kept until the message leaves the queue.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgpack

from stalwart_mp.store.blob import link_key
from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch

TAG_MESSAGE = 0x60
TAG_DUE = 0x61
TAG_LEASE = 0x62
QUEUE_SEQUENCE = bytes([0x01]) + b"queue"

# recipient states
WAKE_TOPIC = "queue.due"   # event published after enqueueing; wakes the queue runner

QUEUED = "queued"          # not delivered yet (never tried, or temporarily failed)
DELIVERED = "delivered"
FAILED = "failed"          # permanent failure (or expired): a failure DSN was due
CANCELLED = "cancelled"    # removed by an administrator: no DSN
FINAL = (DELIVERED, FAILED, CANCELLED)

MAX_HISTORY = 50  # attempts kept per message (the oldest are dropped)


@dataclass(slots=True)
class QueuedRecipient:
    address: str
    notify: list[str] = field(default_factory=list)   # DSN NOTIFY (RFC 3461 §4.1)
    orcpt: str | None = None   # DSN ORCPT (RFC 3461 §4.2), "addr-type;address", decoded
    status: str = QUEUED
    reply: str = ""           # the last reply (or local error) for this recipient
    remote_mta: str = ""      # the host that gave it
    updated_at: float = 0.0

    @property
    def pending(self) -> bool:
        return self.status == QUEUED

    def wants(self, kind: str) -> bool:
        """Whether this recipient asked for a DSN of ``kind`` (SUCCESS, DELAY, FAILURE).

        RFC 3461 §4.1: without NOTIFY the MTA reports failures (and may report delays);
        NOTIFY=NEVER asks for nothing.
        """
        notify = [n.upper() for n in self.notify]
        if not notify:
            return kind in ("FAILURE", "DELAY")
        return kind in notify and "NEVER" not in notify


@dataclass(slots=True)
class Attempt:
    """One delivery attempt to one host, for one or more recipients."""

    at: float
    host: str
    recipients: list[str]
    reply: str

    def pack(self) -> list:
        return [self.at, self.host, self.recipients, self.reply]


@dataclass(slots=True)
class QueuedMessage:
    id: int
    mail_from: str
    recipients: list[QueuedRecipient]
    blob_id: str
    size: int
    created_at: float
    next_attempt: float
    ret: str | None = None           # DSN RET=FULL|HDRS
    envid: str | None = None         # DSN ENVID
    requiretls: bool = False         # RFC 8689
    authenticated_as: str | None = None
    attempts: int = 0                # delivery rounds made
    delays_sent: int = 0             # delay DSNs sent (index into the delay schedule)
    priority: int = 0                # higher first (reserved for the control plane)
    history: list[Attempt] = field(default_factory=list)

    @property
    def pending(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if r.pending]

    @property
    def status(self) -> str:
        """"scheduled" (never tried), "deferred" (tried, recipients left) or "done"."""
        if not self.pending:
            return "done"
        return "deferred" if self.attempts else "scheduled"

    def recipient(self, address: str) -> QueuedRecipient | None:
        low = address.lower()
        return next((r for r in self.recipients if r.address.lower() == low), None)

    def pack(self) -> bytes:
        return msgpack.packb([
            self.mail_from,
            [[r.address, r.notify, r.orcpt, r.status, r.reply, r.remote_mta, r.updated_at]
             for r in self.recipients],
            self.blob_id, self.size, self.created_at, self.next_attempt, self.ret, self.envid,
            self.requiretls, self.authenticated_as, self.attempts, self.delays_sent,
            self.priority, [a.pack() for a in self.history]])

    @classmethod
    def unpack(cls, qid: int, raw: bytes) -> QueuedMessage:
        d = msgpack.unpackb(raw)
        m = cls(qid, d[0], [QueuedRecipient(*r) for r in d[1]], *d[2:10])
        if len(d) > 10:  # records written before attempts were kept have 10 fields
            m.attempts, m.delays_sent, m.priority = d[10], d[11], d[12]
            m.history = [Attempt(*a) for a in d[13]]
        return m


@dataclass(frozen=True, slots=True)
class Lease:
    owner: str
    expires: float   # seconds since the epoch

    def pack(self) -> bytes:
        return msgpack.packb([self.owner, int(self.expires * 1000)])

    @classmethod
    def unpack(cls, raw: bytes | None) -> Lease | None:
        if raw is None:
            return None
        owner, ms = msgpack.unpackb(raw)
        return cls(owner, ms / 1000)

    def live(self, now: float) -> bool:
        return self.expires > now


def message_key(qid: int) -> bytes:
    return bytes([TAG_MESSAGE]) + qid.to_bytes(8, "big")


def due_key(when: float, qid: int) -> bytes:
    return bytes([TAG_DUE]) + int(when * 1000).to_bytes(8, "big") + qid.to_bytes(8, "big")


def lease_key(qid: int) -> bytes:
    return bytes([TAG_LEASE]) + qid.to_bytes(8, "big")


def blob_owner(qid: int) -> bytes:
    return b"q" + qid.to_bytes(8, "big")


def current_due_key(message: QueuedMessage, lease: Lease | None) -> bytes:
    """Where the message's due entry is now: at its lease's expiry while (or after) it was
    leased, else at its next attempt."""
    if lease is not None:
        return due_key(lease.expires, message.id)
    return due_key(message.next_attempt, message.id)


async def enqueue(data: DataStore, blobs, message: QueuedMessage) -> int:
    """Store a message for outbound delivery, durably; returns its queue id."""
    message.id = await data.assign_id(QUEUE_SEQUENCE)
    message.next_attempt = message.next_attempt or time.time()
    batch = WriteBatch()
    batch.put(message_key(message.id), message.pack())
    batch.put(due_key(message.next_attempt, message.id), b"")
    await blobs.link_into(batch, message.blob_id, blob_owner(message.id))
    await data.write(batch)
    return message.id


async def queued(data: DataStore, limit: int = 1000, after_id: int = 0
                 ) -> list[QueuedMessage]:
    """Messages in the queue, oldest id first."""
    rows = await data.range(message_key(after_id + 1), bytes([TAG_MESSAGE + 1]), limit=limit)
    return [QueuedMessage.unpack(int.from_bytes(k[1:], "big"), v) for k, v in rows]


async def load(data: DataStore, qid: int
               ) -> tuple[QueuedMessage | None, bytes | None, Lease | None, bytes | None]:
    """(message, its stored value, lease, the lease's stored value) — for compare-and-set."""
    raw, lease_raw = await data.get_many([message_key(qid), lease_key(qid)])
    message = QueuedMessage.unpack(qid, raw) if raw is not None else None
    return message, raw, Lease.unpack(lease_raw), lease_raw


async def due(data: DataStore, now: float, limit: int) -> list[tuple[bytes, int]]:
    """Due entries (key, queue id), earliest first."""
    end = bytes([TAG_DUE]) + (int(now * 1000) + 1).to_bytes(8, "big")
    rows = await data.range(bytes([TAG_DUE]), end, limit=limit, keys_only=True)
    return [(k, int.from_bytes(k[9:17], "big")) for k, _ in rows]


async def next_due(data: DataStore) -> float | None:
    """When the earliest entry of the due index falls due (None: the queue is empty)."""
    rows = await data.range(bytes([TAG_DUE]), bytes([TAG_DUE + 1]), limit=1, keys_only=True)
    if not rows:
        return None
    return int.from_bytes(rows[0][0][1:9], "big") / 1000


async def acquire(data: DataStore, found_key: bytes, qid: int, owner: str,
                  duration: float, now: float | None = None
                  ) -> tuple[QueuedMessage, bytes, Lease] | None:
    """Lease the message whose due entry ``found_key`` was seen; None when another runner
    has it (or it is gone). Returns the message, its stored value and our lease."""
    now = time.time() if now is None else now
    message, raw, lease, lease_raw = await load(data, qid)
    batch = WriteBatch().assert_value(found_key, b"")
    if message is None:  # an orphan entry (message removed): drop it
        try:
            await data.write(batch.delete(found_key))
        except AssertionFailed:
            pass
        return None
    if lease is not None and lease.live(now) and lease.owner != owner:
        return None
    ours = Lease(owner, now + duration)
    batch.assert_value(lease_key(qid), lease_raw).assert_value(message_key(qid), raw)
    batch.delete(found_key).put(due_key(ours.expires, qid), b"").put(lease_key(qid), ours.pack())
    try:
        await data.write(batch)
    except AssertionFailed:
        return None
    return message, raw, ours


async def renew(data: DataStore, qid: int, lease: Lease, duration: float,
                now: float | None = None) -> Lease | None:
    """Extend a lease still held (a long delivery); None when it was lost meanwhile."""
    now = time.time() if now is None else now
    ours = Lease(lease.owner, now + duration)
    batch = WriteBatch().assert_value(lease_key(qid), lease.pack())
    batch.delete(due_key(lease.expires, qid)).put(due_key(ours.expires, qid), b"")
    batch.put(lease_key(qid), ours.pack())
    try:
        await data.write(batch)
    except AssertionFailed:
        return None
    return ours


async def abandon(data: DataStore, qid: int, lease: Lease, now: float | None = None) -> bool:
    """Give a lease up without results (the process is stopping): the message is due
    again at once, for any runner, instead of when the lease would have run out."""
    now = time.time() if now is None else now
    current = Lease.unpack(await data.get(lease_key(qid)))
    if current is None or current.owner != lease.owner:
        return False
    batch = WriteBatch().assert_value(lease_key(qid), current.pack())
    batch.delete(due_key(current.expires, qid)).delete(lease_key(qid))
    batch.put(due_key(now, qid), b"")
    try:
        await data.write(batch)
    except AssertionFailed:
        return False
    return True


async def settle(data: DataStore, qid: int, lease: Lease, apply) -> QueuedMessage | None:
    """Record a runner's results and give its lease up, in one compare-and-set.

    ``apply(message)`` writes the results into a freshly read message (recipients that an
    administrator cancelled meanwhile stay cancelled) and sets the schedule. A message
    without pending recipients leaves the queue (record, due entry, blob link). When the
    stored message changed during the delivery the batch fails; it is re-read and applied
    again. Returns the message as stored (None: it was removed meanwhile)."""
    for _ in range(20):
        message, raw, current, lease_raw = await load(data, qid)
        # ours: the owner names one runner of one process (a renewal may have moved the
        # expiry since the caller last saw it)
        ours = current is not None and current.owner == lease.owner
        batch = WriteBatch().assert_value(message_key(qid), raw)
        batch.assert_value(lease_key(qid), lease_raw)
        if ours:
            batch.delete(due_key(current.expires, qid)).delete(lease_key(qid))
        if message is None:
            if not ours:
                return None
        else:
            apply(message)
            if ours:
                _finish_into(batch, message)
            elif message.pending:  # our lease expired and another runner has it now
                batch.put(message_key(qid), message.pack())
            else:
                batch.delete(current_due_key(message, current))
                _finish_into(batch, message)
        try:
            await data.write(batch)
        except AssertionFailed:
            continue
        return message
    raise AssertionFailed(message_key(qid))


def _finish_into(batch: WriteBatch, message: QueuedMessage) -> None:
    if message.pending:
        batch.put(message_key(message.id), message.pack())
        batch.put(due_key(message.next_attempt, message.id), b"")
    else:
        batch.delete(message_key(message.id))
        # the link key of BlobStore.unlink_into; the collector reclaims the blob later
        batch.delete(link_key(bytes.fromhex(message.blob_id), blob_owner(message.id)))


async def update(data: DataStore, qid: int, change, now: float | None = None
                 ) -> QueuedMessage | None:
    """Apply ``change(message, leased) -> bool`` (False: nothing to write) with
    compare-and-set, retried on a race; the new message, or None when there is none.

    ``leased`` is True while another runner holds a live lease: ``change`` must then not
    move the schedule (the runner will), only recipients' states."""
    for _ in range(20):
        now_ = time.time() if now is None else now
        message, raw, lease, lease_raw = await load(data, qid)
        if message is None:
            return None
        leased = lease is not None and lease.live(now_)
        old_due = current_due_key(message, lease)
        if not change(message, leased):
            return message
        batch = WriteBatch().assert_value(message_key(qid), raw)
        batch.assert_value(lease_key(qid), lease_raw)
        if leased and message.pending:
            batch.put(message_key(qid), message.pack())   # the runner keeps the schedule
        else:
            batch.delete(old_due)
            if not leased:
                batch.delete(lease_key(qid))
            _finish_into(batch, message)
        try:
            await data.write(batch)
        except AssertionFailed:
            continue
        return message
    raise AssertionFailed(message_key(qid))


def orcpt_text(value: object) -> str | None:
    """An ORCPT as "addr-type;address" (RFC 3461 §4.2, decoded), from that text or from an
    (addr-type, address) pair: queue entries written before 2026-11-26 hold the pair."""
    if not value:
        return None
    if isinstance(value, str):
        return value
    kind, address = value
    return f"{kind};{address}"
