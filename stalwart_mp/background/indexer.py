"""Full-text indexing, done by one process (the queue child) for every account.

Delivery and append leave a pending mark (``mail/keys.py`` 0x4F: b"i" index, b"u" remove)
in the same commit as the message; the indexer reads the message back from the blob store,
extracts its text fields and indexes them, then clears the mark — only if it is unchanged,
so a mark re-set meanwhile is processed again. One writer keeps whoosh's single-writer lock
uncontended; every worker only searches.
"""
from __future__ import annotations

import asyncio
import logging

from stalwart_mp.mail import keys
from stalwart_mp.mail.records import Email
from stalwart_mp.store.data import AssertionFailed, WriteBatch

log = logging.getLogger("stalwart_mp.indexer")

GATHER_DELAY = 0.5  # seconds: search sees new mail this much later, at a fraction of the CPU


class Indexer:
    def __init__(self, data, blobs, fts, batch: int = 100):
        self.data = data
        self.blobs = blobs
        self.fts = fts
        self.batch = batch
        self.wake = asyncio.Event()

    async def run_once(self) -> int:
        """Index up to one batch of pending messages; returns how many were processed."""
        from stalwart_mp.mail.ingest import parse_message

        start = bytes([keys.FTS_PENDING])
        rows = await self.data.range(start, bytes([keys.FTS_PENDING + 1]), limit=self.batch)
        documents, removed = [], []
        for key, mark in rows:
            acct, eid = keys.tail_u32(key[:-4]), keys.tail_u32(key)
            if mark == b"u":
                removed.append((acct, eid))
                continue
            raw_email = await self.data.get(keys.email(acct, eid))
            blob = None
            if raw_email is not None:
                blob = await self.blobs.get(Email.unpack(eid, raw_email).blob_id)
            if blob is not None:
                parsed = await asyncio.get_running_loop().run_in_executor(
                    None, parse_message, blob)
                documents.append((acct, eid, parsed.text_for_search, None))
        await self.fts.unindex_many(removed)    # one commit for the batch's removals
        await self.fts.index_many(documents)    # and one for its additions
        # Cleared all at once: the process's coalescing data store makes the batch's
        # clears one commit (one by one only if one of them finds its mark changed).
        await asyncio.gather(*(self._clear(key, mark) for key, mark in rows))
        return len(rows)

    async def _clear(self, key: bytes, mark: bytes) -> None:
        try:
            await self.data.write(WriteBatch().assert_value(key, mark).delete(key))
        except AssertionFailed:
            pass  # marked again meanwhile: the next round sees the new mark

    async def run(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except Exception:
                log.exception("indexing failed; retrying later")
                done = 0
                await asyncio.sleep(5)
            if done < self.batch:
                self.wake.clear()
                try:
                    async with asyncio.timeout(10):
                        await self.wake.wait()
                    # let a burst of deliveries accumulate: one commit indexes them all
                    await asyncio.sleep(GATHER_DELAY)
                except TimeoutError:
                    pass
