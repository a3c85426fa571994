"""The per-worker directory cache, cleared in every process when the directory changes."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from stalwart_mp.directory.cache import CachedDirectory
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.events.bus import LocalEventBus
from stalwart_mp.store.registry import open_data_store
from tests.events.test_hub import HubThread


async def test_change_in_one_process_clears_the_cache_of_another(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="dircache", dir="/tmp"))  # short socket path
    hub = HubThread(folder / "hub.sock").start()
    data = open_data_store("d", {"type": "lmdb", "path": str(tmp_path / "lmdb")})
    # two buses stand for two worker processes (each has its own cache)
    admin_bus = LocalEventBus(folder / "hub.sock")
    worker_bus = LocalEventBus(folder / "hub.sock")
    await admin_bus.start()
    await worker_bus.start()
    try:
        manager = DirectoryManager(InternalDirectory(data), admin_bus.publish)
        await manager.create_domain("example.com")
        await manager.create_principal("jane", emails=["jane@example.com"])
        cached = CachedDirectory(InternalDirectory(data), ttl=3600)
        cached.attach(worker_bus)
        await worker_bus.sync()
        assert await cached.names_by_email("jane@example.com") == ["jane"]
        await manager.remove_email("jane", "jane@example.com")
        for _ in range(100):  # the event crosses the hub to the other "process"
            if await cached.names_by_email("jane@example.com") == []:
                break
            await asyncio.sleep(0.02)
        assert await cached.names_by_email("jane@example.com") == []
    finally:
        await admin_bus.close()
        await worker_bus.close()
        await data.close()
        hub.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_ttl_bounds_staleness(tmp_path):
    data = open_data_store("d", {"type": "lmdb", "path": str(tmp_path / "lmdb")})
    manager = DirectoryManager(InternalDirectory(data))
    await manager.create_domain("example.com")
    await manager.create_principal("jane", emails=["jane@example.com"])
    cached = CachedDirectory(InternalDirectory(data), ttl=0.2)
    assert not await cached.is_local_domain("example.net")  # cached answer: no
    await manager.create_domain("example.net")  # no event bus here: only the TTL helps
    assert not await cached.is_local_domain("example.net"), "still the cached answer"
    await asyncio.sleep(0.3)
    assert await cached.is_local_domain("example.net")
    await data.close()
