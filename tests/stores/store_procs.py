"""Child-process bodies for the data-store tests (run with multiprocessing "spawn")."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from stalwart_mp.store.data import WriteBatch
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
