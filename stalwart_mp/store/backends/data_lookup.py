"""Lookup keys kept in a data store (LMDB, SQLite, PostgreSQL, MySQL, memory).

The embedded default: with LMDB every worker process shares the keys through the same
environment, with no server to run. Layout, in two subspaces of the data store:

* ``0x30 | key`` → ``expiry (8 bytes, big-endian ms since the epoch; 0 = never) | value``
* ``0x31 | expiry | key`` → empty: the expiry index, so ``purge_expired`` is one range scan
  from the start of the subspace to "now" instead of a walk over every key.

Expired keys are invisible to reads at once (the expiry is checked on read) and their space
is freed by ``purge_expired``, which the server runs periodically.

Every change is read, then written in a batch that asserts the value read is still there:
concurrent writers (other coroutines, other processes, other servers on PostgreSQL/MySQL)
make the batch fail with AssertionFailed and the operation is retried on the fresh value.
So increments from several processes sum exactly, only one contender takes a lock, and a
value and its index entry never disagree.

Keys longer than ``MAX_RAW_KEY`` bytes are stored as a 169-byte prefix of the key followed by
its 32-byte BLAKE2b digest (201 bytes, a length no raw key has, so the mapping stays
one-to-one): MySQL's primary key holds 255 bytes, LMDB's 511, and the index key adds 9.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from stalwart_mp.store.data import AssertionFailed, DataStore, StoreError, WriteBatch
from stalwart_mp.store.lookup import (
    LockToken,
    LookupStore,
    add_counter,
    check_delta,
    check_key,
    check_ttl,
    check_value,
    new_token,
    parse_counter,
)

T = TypeVar("T")

VALUE_TAG = b"\x30"
EXPIRY_TAG = b"\x31"
NEVER = 0
MAX_RAW_KEY = 200
_HASHED_PREFIX = 169
PURGE_BATCH = 256
MAX_ATTEMPTS = 10_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def expiry_of(ttl: float | None) -> int:
    """Absolute expiry in ms for ``ttl`` seconds from now (NEVER for None); at least now+1."""
    if ttl is None:
        return NEVER
    return now_ms() + max(1, round(ttl * 1000))


def stored_key(key: bytes) -> bytes:
    if len(key) <= MAX_RAW_KEY:
        return key
    return key[:_HASHED_PREFIX] + hashlib.blake2b(key, digest_size=32).digest()


def index_key(expiry: int, skey: bytes) -> bytes:
    return EXPIRY_TAG + expiry.to_bytes(8, "big") + skey


def split_raw(raw: bytes | None, now: int) -> tuple[int, bytes] | None:
    """(expiry, value) of a stored record, or None when absent or expired at ``now``."""
    if raw is None:
        return None
    expiry = int.from_bytes(raw[:8], "big")
    if expiry != NEVER and expiry <= now:
        return None
    return expiry, raw[8:]


class DataLookup(LookupStore):
    """Lookup keys in ``store``; closes it on ``close`` only if ``owns_store``."""

    def __init__(self, store: DataStore, *, owns_store: bool) -> None:
        self.name = store.name
        self._store = store
        self._owns_store = owns_store

    async def _retry(self, key: bytes, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until its batch's assertions hold (backing off under contention)."""
        for n in range(MAX_ATTEMPTS):
            try:
                return await attempt()
            except AssertionFailed:
                if n >= 3:
                    await asyncio.sleep(random.uniform(0, 0.001 * min(n, 20)))
        raise StoreError(
            f'store "{self.name}": lookup key {key!r} still contended after {MAX_ATTEMPTS} tries'
        )

    def _replace(
        self, skey: bytes, raw: bytes | None, expiry: int, value: bytes | None
    ) -> WriteBatch:
        """A batch replacing ``raw`` (asserted unchanged) by ``value`` (None: delete)."""
        vkey = VALUE_TAG + skey
        batch = WriteBatch().assert_value(vkey, raw)
        if raw is not None:
            old_expiry = int.from_bytes(raw[:8], "big")
            if old_expiry != NEVER and (value is None or old_expiry != expiry):
                batch.delete(index_key(old_expiry, skey))
        if value is None:
            batch.delete(vkey)
            return batch
        batch.put(vkey, expiry.to_bytes(8, "big") + value)
        if expiry != NEVER:
            batch.put(index_key(expiry, skey), b"")
        return batch

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        check_key(key)
        check_value(value)
        check_ttl(ttl)
        skey = stored_key(key)

        async def attempt() -> None:
            raw = await self._store.get(VALUE_TAG + skey)
            await self._store.write(self._replace(skey, raw, expiry_of(ttl), value))

        await self._retry(key, attempt)

    async def get(self, key: bytes) -> bytes | None:
        check_key(key)
        live = split_raw(await self._store.get(VALUE_TAG + stored_key(key)), now_ms())
        return None if live is None else live[1]

    async def delete(self, key: bytes) -> bool:
        check_key(key)
        skey = stored_key(key)

        async def attempt() -> bool:
            raw = await self._store.get(VALUE_TAG + skey)
            if raw is None:
                return False
            await self._store.write(self._replace(skey, raw, NEVER, None))
            return split_raw(raw, now_ms()) is not None

        return await self._retry(key, attempt)

    async def incr(self, key: bytes, delta: int = 1, ttl: float | None = None) -> int:
        check_key(key)
        check_delta(delta)
        check_ttl(ttl)
        skey = stored_key(key)

        async def attempt() -> int:
            raw = await self._store.get(VALUE_TAG + skey)
            live = split_raw(raw, now_ms())
            if live is None:  # missing or expired: a new counter with this ttl
                expiry, total = expiry_of(ttl), add_counter(key, 0, delta)
            else:
                expiry, total = live[0], add_counter(key, parse_counter(key, live[1]), delta)
            await self._store.write(self._replace(skey, raw, expiry, b"%d" % total))
            return total

        return await self._retry(key, attempt)

    async def try_lock(self, key: bytes, ttl: float) -> LockToken | None:
        check_key(key)
        check_ttl(ttl, required=True)
        skey = stored_key(key)
        token = new_token()

        async def attempt() -> LockToken | None:
            raw = await self._store.get(VALUE_TAG + skey)
            if split_raw(raw, now_ms()) is not None:
                return None
            await self._store.write(self._replace(skey, raw, expiry_of(ttl), token))
            return token

        return await self._retry(key, attempt)

    async def unlock(self, key: bytes, token: LockToken) -> bool:
        check_key(key)
        skey = stored_key(key)

        async def attempt() -> bool:
            raw = await self._store.get(VALUE_TAG + skey)
            live = split_raw(raw, now_ms())
            if live is None or live[1] != token:
                return False
            await self._store.write(self._replace(skey, raw, NEVER, None))
            return True

        return await self._retry(key, attempt)

    async def purge_expired(self) -> int:
        """Delete every key expired by now (and its index entry), ``PURGE_BATCH`` at a time.

        Each batch asserts the values it deletes, so a key rewritten meanwhile (set again
        with a new expiry) survives: the batch fails and is redone on fresh reads.
        """
        removed = 0
        while True:
            done, count = await self._retry(b"<purge>", self._purge_batch)
            removed += count
            if done:
                return removed

    async def _purge_batch(self) -> tuple[bool, int]:
        now = now_ms()
        entries = await self._store.range(
            EXPIRY_TAG + b"\x00" * 8,
            EXPIRY_TAG + (now + 1).to_bytes(8, "big"),
            limit=PURGE_BATCH,
            keys_only=True,
        )
        if not entries:
            return True, 0
        skeys = [(int.from_bytes(k[1:9], "big"), k[9:]) for k, _ in entries]
        raws = await self._store.get_many([VALUE_TAG + skey for _, skey in skeys])
        batch = WriteBatch()
        # Assertions first: an assertion sees the deletes before it in the same batch.
        for (_, skey), raw in zip(skeys, raws, strict=True):
            batch.assert_value(VALUE_TAG + skey, raw)
        count = 0
        for (expiry, skey), raw, (ikey, _) in zip(skeys, raws, entries, strict=True):
            batch.delete(ikey)
            # An index entry left without its record (or pointing at another expiry) goes
            # alone; the record itself is deleted only if this entry is its expiry.
            if raw is not None and int.from_bytes(raw[:8], "big") == expiry:
                batch.delete(VALUE_TAG + skey)
                count += 1
        await self._store.write(batch)
        return len(entries) < PURGE_BATCH, count

    async def close(self) -> None:
        if self._owns_store:
            await self._store.close()
