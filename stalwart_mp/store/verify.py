"""Compare two data stores key by key: the proof step of a backend migration.

Both stores are scanned in key order side by side (a merge of two sorted streams), so a
difference is located exactly — the first key that is missing on one side or holds another
value — without holding either store in memory. Each side also gets a count per subspace
(first key byte) and a running BLAKE2b checksum over its keys and values; equal checksums
over equal counts are what an operator can note down and compare later (e.g. after a
restore) without rescanning the source.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from stalwart_mp.store.data import DataStore
from stalwart_mp.store.progress import Progress

# The subspace reserved for store tools (0xFF), and the one key of it they use so far: the
# checkpoint of an unfinished copy. Data code uses the tags 0x00-0xFE.
RESERVED_TAG = 0xFF
CHECKPOINT_KEY = bytes([RESERVED_TAG]) + b"copy-progress"
# Greater than every key a backend can hold (LMDB keys are at most 511 bytes, MySQL's 255),
# so ``range(b"", KEY_END)`` is the whole store.
KEY_END = b"\xff" * 512


def describe_key(key: bytes) -> str:
    """A key as an operator can read it: hex (exact) and its repr (readable parts)."""
    shown = key if len(key) <= 48 else key[:48]
    more = "..." if len(key) > 48 else ""
    return f"0x{shown.hex()}{more} ({shown!r}{more})"


PAGE_BYTES = 32 << 20


def next_limit(limit: int, page: int, pairs: list[tuple[bytes, bytes | None]]) -> int:
    """Keys to ask for next so a page of values stays near ``PAGE_BYTES`` of memory.

    Starts small and doubles while pages stay small, shrinks in proportion when one was too
    big: a store whose values are message chunks of a few MiB is scanned a few keys at a
    time, one of small records ``page`` keys at a time.
    """
    size = sum(len(k) + len(v or b"") for k, v in pairs)
    if size > PAGE_BYTES:
        return max(1, len(pairs) * PAGE_BYTES // size)
    if size < PAGE_BYTES // 2 and len(pairs) == limit:
        return min(page, limit * 2)
    return limit


async def scan(
    store: DataStore, start: bytes = b"", *, page: int = 1000, keys_only: bool = False
) -> AsyncIterator[list[tuple[bytes, bytes | None]]]:
    """Pages of at most ``page`` pairs in key order from ``start``, without the checkpoint.

    The next page is requested while the caller works on the current one, so a network
    store's round trip overlaps the caller's writes or comparisons.
    """

    async def read(after: bytes, limit: int) -> list[tuple[bytes, bytes | None]]:
        return await store.range(after, KEY_END, limit=limit, keys_only=keys_only)

    limit = page if keys_only else min(page, 64)
    pending = asyncio.ensure_future(read(start, limit))
    try:
        while True:
            pairs = await pending
            if not pairs:
                return
            limit = next_limit(limit, page, pairs)
            pending = asyncio.ensure_future(read(pairs[-1][0] + b"\x00", limit))  # successor
            pairs = [p for p in pairs if p[0] != CHECKPOINT_KEY]
            if pairs:
                yield pairs
    finally:
        pending.cancel()


async def count_keys(store: DataStore, progress: Progress | None = None) -> int:
    """How many keys the store holds (keys-only scan: values are not read)."""
    total = 0
    async for pairs in scan(store, page=10_000, keys_only=True):
        total += len(pairs)
        if progress is not None:
            progress.advance(len(pairs))
    return total


@dataclass(slots=True)
class Digest:
    """Count per subspace and a checksum over one store's keys and values, in key order."""

    per_tag: Counter[int] = field(default_factory=Counter)
    count: int = 0
    _hash: hashlib.blake2b = field(default_factory=lambda: hashlib.blake2b(digest_size=32))

    def add(self, key: bytes, value: bytes) -> None:
        self.count += 1
        self.per_tag[key[0]] += 1
        # Length prefixes: (b"ab", b"c") and (b"a", b"bc") must not hash alike.
        self._hash.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(8, "big"))
        self._hash.update(value)

    @property
    def checksum(self) -> str:
        return self._hash.hexdigest()


@dataclass(slots=True)
class Comparison:
    source: Digest
    destination: Digest
    differences: int = 0
    first_difference: str | None = None  # what differs at the first differing key

    @property
    def identical(self) -> bool:
        return self.differences == 0

    def report(self, source_name: str, destination_name: str) -> str:
        """The per-subspace table and the verdict, for standard output."""
        width = max(len(source_name), len(destination_name), 11) + 2
        lines = [f"{'subspace':<10}{source_name:>{width}}{destination_name:>{width}}"]
        for tag in sorted(set(self.source.per_tag) | set(self.destination.per_tag)):
            a, b = self.source.per_tag[tag], self.destination.per_tag[tag]
            mark = "" if a == b else "   <- differs"
            lines.append(f"0x{tag:02x}{'':<6}{a:>{width},}{b:>{width},}{mark}")
        a, b = self.source.count, self.destination.count
        lines.append(f"{'total':<10}{a:>{width},}{b:>{width},}")
        lines.append("checksum (BLAKE2b-256 over keys and values, in key order):")
        name_width = max(len(source_name), len(destination_name)) + 1
        lines.append(f"  {source_name + ':':<{name_width}} {self.source.checksum}")
        lines.append(f"  {destination_name + ':':<{name_width}} {self.destination.checksum}")
        if self.identical:
            lines.append(f"identical: {self.source.count:,} keys")
        else:
            lines.append(
                f"DIFFERENT: {self.differences:,} key(s) differ; first: {self.first_difference}"
            )
        return "\n".join(lines)


async def _pairs(store: DataStore, page: int) -> AsyncIterator[tuple[bytes, bytes]]:
    async for pairs in scan(store, page=page):
        for key, value in pairs:
            yield key, value  # type: ignore[misc]  # not keys_only: values are bytes


async def compare(
    source: DataStore, destination: DataStore, *, page: int = 1000,
    progress: Progress | None = None,
) -> Comparison:
    """Scan both stores in key order and compare them key by key and value by value."""
    result = Comparison(Digest(), Digest())
    src = aiter(_pairs(source, page))
    dst = aiter(_pairs(destination, page))
    a = await anext(src, None)
    b = await anext(dst, None)

    def differ(what: str) -> None:
        result.differences += 1
        if result.first_difference is None:
            result.first_difference = what

    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            differ(f"key {describe_key(a[0])} is missing from the destination")
            result.source.add(*a)
            a = await anext(src, None)
        elif a is None or b[0] < a[0]:
            differ(f"key {describe_key(b[0])} is only in the destination")
            result.destination.add(*b)
            b = await anext(dst, None)
        else:
            if a[1] != b[1]:
                differ(
                    f"key {describe_key(a[0])} holds a different value (source "
                    f"{len(a[1])} bytes, destination {len(b[1])} bytes)"
                )
            result.source.add(*a)
            result.destination.add(*b)
            if progress is not None:
                progress.advance(1, len(a[0]) + len(a[1]))
            a, b = await anext(src, None), await anext(dst, None)
    return result
