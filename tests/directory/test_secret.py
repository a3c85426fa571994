"""The server-wide secret is created once and then the same for every process."""
from __future__ import annotations

import asyncio

from stalwart_mp.directory.secret import server_secret
from stalwart_mp.store.registry import open_data_store


async def test_created_once_and_shared(tmp_path):
    data = open_data_store("d", {"type": "lmdb", "path": str(tmp_path)})
    first, second = await asyncio.gather(server_secret(data), server_secret(data))
    assert first == second and len(first) == 32
    await data.close()
    again = open_data_store("d", {"type": "lmdb", "path": str(tmp_path)})
    assert await server_secret(again) == first, "kept across restarts"
    await again.close()
