"""The outbound queue's storage: messages accepted for remote recipients.

A submitted message for remote recipients is stored durably here before the session
answers 250; the outbound delivery (its own issue: MX routing, retries, DSNs) takes them
from this storage. Layout:
  0x60 | queue id (8)              -> queued message (msgpack: envelope, recipients, blob)
  0x61 | next attempt (8, ms) | id -> b"" (the due index the delivery process scans)
The blob is linked to the queued message so it is kept until the message leaves the queue.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgpack

from stalwart_mp.store.data import DataStore, WriteBatch

TAG_MESSAGE = 0x60
TAG_DUE = 0x61
QUEUE_SEQUENCE = bytes([0x01]) + b"queue"


@dataclass(slots=True)
class QueuedRecipient:
    address: str
    notify: list[str] = field(default_factory=list)   # DSN NOTIFY (RFC 3461 §4.1)
    orcpt: str | None = None                          # DSN ORCPT (RFC 3461 §4.2)
    status: str = "queued"


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

    def pack(self) -> bytes:
        return msgpack.packb([
            self.mail_from, [[r.address, r.notify, r.orcpt, r.status] for r in self.recipients],
            self.blob_id, self.size, self.created_at, self.next_attempt, self.ret, self.envid,
            self.requiretls, self.authenticated_as])

    @classmethod
    def unpack(cls, qid: int, raw: bytes) -> QueuedMessage:
        d = msgpack.unpackb(raw)
        return cls(qid, d[0], [QueuedRecipient(*r) for r in d[1]], *d[2:])


def message_key(qid: int) -> bytes:
    return bytes([TAG_MESSAGE]) + qid.to_bytes(8, "big")


def due_key(when: float, qid: int) -> bytes:
    return bytes([TAG_DUE]) + int(when * 1000).to_bytes(8, "big") + qid.to_bytes(8, "big")


async def enqueue(data: DataStore, blobs, message: QueuedMessage) -> int:
    """Store a message for outbound delivery, durably; returns its queue id."""
    message.id = await data.assign_id(QUEUE_SEQUENCE)
    message.next_attempt = message.next_attempt or time.time()
    batch = WriteBatch()
    batch.put(message_key(message.id), message.pack())
    batch.put(due_key(message.next_attempt, message.id), b"")
    await blobs.link_into(batch, message.blob_id, b"q" + message.id.to_bytes(8, "big"))
    await data.write(batch)
    return message.id


async def queued(data: DataStore, limit: int = 1000) -> list[QueuedMessage]:
    """Messages in the queue, oldest id first."""
    rows = await data.range(bytes([TAG_MESSAGE]), bytes([TAG_MESSAGE + 1]), limit=limit)
    return [QueuedMessage.unpack(int.from_bytes(k[1:], "big"), v) for k, v in rows]
