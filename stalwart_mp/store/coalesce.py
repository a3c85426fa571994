"""Group commit for any data-store writer: concurrent write batches become one commit.

Every component of a process (blob put-at marks and links, lookup counters, the mail
committer's rounds, directory changes) writes through the same ``CoalescingDataStore``.
While one commit is being made durable, the batches that arrive queue up; the next commit
applies all of them, in arrival order, as one batch — one fsync for many callers, and each
caller still returns only after its own writes are durable.

Applying batches A then B in one transaction is what running them one after the other
would do, so semantics are unchanged. If any assertion fails in the merged batch, nothing
of it was written; the batches are then committed one by one, so only the batch whose
assertion failed gets ``AssertionFailed``.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch

MAX_MERGED_OPS = 20_000  # keep one transaction's size sane (and under SQL packet limits)


class CoalescingDataStore(DataStore):
    def __init__(self, inner: DataStore):
        self.inner = inner
        self.name = inner.name
        self._queue: list[tuple[WriteBatch, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None
        self.commits = 0   # durable commits made (for benchmarks and tests)
        self.batches = 0   # caller batches written

    # --- reads go straight through ---------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return await self.inner.get_many(keys)

    async def range(self, start: bytes, end: bytes, *, reverse: bool = False,
                    limit: int | None = None, keys_only: bool = False):
        return await self.inner.range(start, end, reverse=reverse, limit=limit,
                                      keys_only=keys_only)

    async def assign_id(self, key: bytes) -> int:
        return await self.inner.assign_id(key)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.inner.close()

    # --- writes are merged -----------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        if not len(batch):
            return
        future = asyncio.get_running_loop().create_future()
        self._queue.append((batch, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._queue:
            group, size = [], 0
            while self._queue and (not group or size + len(self._queue[0][0]) <=
                                   MAX_MERGED_OPS):
                batch, future = self._queue.pop(0)
                group.append((batch, future))
                size += len(batch)
            await self._commit(group)

    async def _commit(self, group: list[tuple[WriteBatch, asyncio.Future]]) -> None:
        if len(group) == 1:
            await self._write_one(*group[0])
            return
        merged = WriteBatch()
        for batch, _ in group:
            merged.ops.extend(batch.ops)
        try:
            await self.inner.write(merged)
        except AssertionFailed:
            for batch, future in group:  # find out whose assertion it was
                await self._write_one(batch, future)
            return
        except Exception as exc:  # noqa: BLE001 - every caller of the round sees it
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        self.batches += len(group)
        for _, future in group:
            if not future.done():
                future.set_result(None)

    async def _write_one(self, batch: WriteBatch, future: asyncio.Future) -> None:
        try:
            await self.inner.write(batch)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            if not future.done():
                future.set_exception(exc)
            return
        self.commits += 1
        self.batches += 1
        if not future.done():
            future.set_result(None)
