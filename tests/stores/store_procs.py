"""Child-process bodies for the data-store tests (run with multiprocessing "spawn")."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from stalwart_mp.store.data import AssertionFailed, WriteBatch
from stalwart_mp.store.registry import open_data_store


def allocate_ids(settings: dict[str, Any], key: bytes, count: int, results: Any) -> None:
    """Open the store in this process, take ``count`` ids, report (pid, ids)."""

    async def run() -> list[int]:
        store = open_data_store("shared", settings)
        try:
            return [await store.assign_id(key) for _ in range(count)]
        finally:
            await store.close()

    results.put((os.getpid(), asyncio.run(run())))


def write_then_die(settings: dict[str, Any], items: list[tuple[bytes, bytes]]) -> None:
    """Write each item in its own batch; SIGKILL this process the moment the last returns."""

    async def run() -> None:
        store = open_data_store("durable", settings)
        for key, value in items:
            await store.write(WriteBatch().put(key, value))
        os.kill(os.getpid(), signal.SIGKILL)  # no close(), no flush, no atexit

    asyncio.run(run())


def cas_increments(
    settings: dict[str, Any], key: bytes, count: int, barrier: Any, results: Any
) -> None:
    """``count`` read-modify-write increments of a decimal value, retried on conflicts.

    Each increment reads the value, then writes value + 1 asserting the value it read: a
    lost update would need an assertion to pass on a stale read. Reports (pid, conflicts).
    """

    async def run() -> int:
        store = open_data_store("cas", settings)
        conflicts = 0
        try:
            await asyncio.to_thread(barrier.wait, 60)  # every process starts together
            for _ in range(count):
                while True:
                    old = await store.get(key)
                    new = b"%d" % (int(old) + 1)
                    try:
                        await store.write(WriteBatch().assert_value(key, old).put(key, new))
                        break
                    except AssertionFailed:
                        conflicts += 1
            return conflicts
        finally:
            await store.close()

    results.put((os.getpid(), asyncio.run(run())))


def add_counters(
    settings: dict[str, Any], keys: tuple[bytes, bytes], deltas: list[int], barrier: Any,
    results: Any,
) -> None:
    """One batch per delta: add it to ``keys[0]`` and 1 to ``keys[1]``. Reports the pid."""

    async def run() -> None:
        store = open_data_store("adds", settings)
        try:
            await asyncio.to_thread(barrier.wait, 60)
            for delta in deltas:
                await store.write(WriteBatch().add(keys[0], delta).add(keys[1], 1))
        finally:
            await store.close()

    asyncio.run(run())
    results.put(os.getpid())


def batch_key(tag: int, batch: int, index: int) -> bytes:
    return bytes([tag]) + batch.to_bytes(2, "big") + index.to_bytes(4, "big")


def write_batches_until_killed(
    settings: dict[str, Any], tag: int, batches: int, size: int, events: Any
) -> None:
    """Write big batches back to back, reporting ("start", i) and ("done", i) on ``events``
    (a Pipe end: its sends are synchronous, so no report is lost when the parent kills us).

    Every batch is built before the first write, so the process spends its time inside
    ``write`` and a SIGKILL at a random moment interrupts one.
    """

    async def run() -> None:
        store = open_data_store(settings.get("table", "killed"), settings)
        prepared = []
        for b in range(batches):
            batch = WriteBatch()
            for i in range(size):
                batch.put(batch_key(tag, b, i), b"%d:%d:" % (b, i) + b"x" * 80)
            prepared.append(batch)
        events.send(("ready", -1))
        for b, batch in enumerate(prepared):
            events.send(("start", b))
            await store.write(batch)
            events.send(("done", b))
        events.send(("finished", batches))

    asyncio.run(run())
