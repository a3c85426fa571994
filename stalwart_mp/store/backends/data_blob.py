"""Blobs kept in a data store (LMDB, SQLite, PostgreSQL, MySQL, memory), in chunks.

Keys (subspace 0x22, next to the links' 0x20/0x21)::

    0x22 | sha256 (32 bytes)                 -> length (8, big-endian) | chunk size (4)
    0x22 | sha256 (32 bytes) | chunk no (4)  -> the chunk's bytes

Chunks keep each value small enough for every backend (a MySQL packet, a PostgreSQL
row...) and let a range read fetch only the chunks it covers. The chunk size is stored with
the blob, so changing ``CHUNK_SIZE`` later leaves old blobs readable.

Atomicity and durability: the length record is what makes a blob visible (every read and
``exists`` starts from it), and it is written in the same batch as the last chunks. A blob
of up to ``BATCH_BYTES`` (most messages) is ONE batch: all-or-nothing and durable when
``put`` returns. A larger one is written as several batches of chunks then the final one
with the length record, so no single transaction grows without bound (InnoDB refuses a
transaction whose BLOB data exceeds 10% of its redo log); readers still see it whole or not
at all, and chunks left by a writer killed half-way are invisible, overwritten by the next
put of the same content or removed by ``delete``/``collect`` (a blob is deleted in one
batch: its length record and every chunk).

Dedup: the final batch asserts the length record is absent; if another put (in any
process) stored the same content first, the assertion fails and nothing is written twice —
the chunks it rewrote hold identical bytes under identical keys.
"""

from __future__ import annotations

import struct

from stalwart_mp.store.blob import CHUNK_TAG, BlobStore
from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch

CHUNK_SIZE = 512 * 1024
BATCH_BYTES = 8 * 1024 * 1024  # chunk bytes per batch at most (the last one adds the head)
_META = struct.Struct(">QI")


def head_key(blob_id: str) -> bytes:
    return bytes([CHUNK_TAG]) + bytes.fromhex(blob_id)


def chunk_key(blob_id: str, number: int) -> bytes:
    return head_key(blob_id) + number.to_bytes(4, "big")


class DataBlobStore(BlobStore):
    def __init__(
        self,
        name: str,
        store: DataStore,
        *,
        links: DataStore,
        owns_store: bool,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        super().__init__(name, links)
        self.store = store
        self._owns_store = owns_store
        self.chunk_size = chunk_size

    async def _ensure(self, blob_id: str, data: bytes) -> None:
        head = head_key(blob_id)
        if await self.store.get(head) is not None:
            return
        size = self.chunk_size
        per_batch = max(1, BATCH_BYTES // size)
        view = memoryview(data)
        batch = WriteBatch()
        for number, offset in enumerate(range(0, len(data), size)):
            if len(batch) == per_batch:
                await self.store.write(batch)
                batch = WriteBatch()
            batch.put(chunk_key(blob_id, number), bytes(view[offset : offset + size]))
        batch.assert_value(head, None).put(head, _META.pack(len(data), size))
        try:
            await self.store.write(batch)
        except AssertionFailed:
            pass  # stored meanwhile by another put of the same content

    async def _read(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        meta = await self.store.get(head_key(blob_id))
        if meta is None:
            return None
        length, size = _META.unpack(meta)
        end = length if end is None else min(end, length)
        if start >= end:
            return b""
        first, last = start // size, (end - 1) // size
        chunks = await self.store.get_many(
            [chunk_key(blob_id, n) for n in range(first, last + 1)]
        )
        if any(c is None for c in chunks):
            return None  # deleted while we read
        offset = first * size
        return b"".join(chunks)[start - offset : end - offset]  # type: ignore[arg-type]

    async def _contains(self, blob_id: str) -> bool:
        return await self.store.get(head_key(blob_id)) is not None

    async def _erase(self, blob_id: str) -> bool:
        head = head_key(blob_id)
        meta = await self.store.get(head)
        if meta is not None:
            length, size = _META.unpack(meta)
            batch = WriteBatch().assert_value(head, meta).delete(head)
            for number in range((length + size - 1) // size):
                batch.delete(chunk_key(blob_id, number))
            try:
                await self.store.write(batch)
            except AssertionFailed:
                return False  # deleted meanwhile
            return True
        # No length record: remove chunks a killed writer may have left, unless a put
        # completes the blob meanwhile (each batch asserts the record is still absent).
        start, end = head + b"\x00\x00\x00\x00", head + b"\xff\xff\xff\xff\xff"
        while keys := await self.store.range(start, end, limit=256, keys_only=True):
            batch = WriteBatch().assert_value(head, None)
            for key, _ in keys:
                batch.delete(key)
            try:
                await self.store.write(batch)
            except AssertionFailed:
                break
        return False

    async def _close_backend(self) -> None:
        if self._owns_store:
            await self.store.close()
