"""A banned address is dropped by every worker at accept, before any protocol work."""
from __future__ import annotations

import asyncio
import socket

from stalwart_mp.directory.auth import ban_key
from stalwart_mp.store.lookup import open_lookup_store
from stalwart_mp.store.registry import open_data_store
from tests.harness import Server, base_config, free_port, http_get


def _set_ban(lmdb_path, present: bool) -> None:
    async def run():
        data = open_data_store("default", {"type": "lmdb", "path": str(lmdb_path)})
        lookup = await open_lookup_store("default", {"type": "lmdb"}, data)
        if present:
            await lookup.set(ban_key("127.0.0.1"), b"test", ttl=60)
        else:
            await lookup.delete(ban_key("127.0.0.1"))
        await lookup.close()
        await data.close()

    asyncio.run(run())


def test_banned_ip_is_dropped_by_every_worker(tmp_path):
    port = free_port()
    config = base_config(tmp_path, port, workers=2,
                         extra="\n[auth.ban]\nallowed-networks = []\n")
    srv = Server(tmp_path, port, config).start(wait_workers=2)
    try:
        assert http_get(port, "/healthz/live")[0] == 200
        _set_ban(tmp_path / "data" / "lmdb", True)
        for _ in range(6):  # whichever worker accepts, the connection is closed unanswered
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /healthz/live HTTP/1.0\r\n\r\n")
                try:
                    assert s.recv(100) == b""
                except ConnectionResetError:
                    pass
        _set_ban(tmp_path / "data" / "lmdb", False)
        assert http_get(port, "/healthz/live")[0] == 200
    finally:
        srv.stop()
