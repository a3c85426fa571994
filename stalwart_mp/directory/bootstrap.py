"""The first administrator account, created by ``stalwart-mp init``."""
from __future__ import annotations

import asyncio

from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.store.configured import open_data_store

ADMIN_NAME = "admin"


def create_first_admin(cfg, password: str) -> bool:
    """Create 'admin' with ``password``; False if it already exists (nothing changed)."""
    return asyncio.run(_create(cfg, password))


async def _create(cfg, password: str) -> bool:
    store = await open_data_store(cfg)
    try:
        directory = InternalDirectory(store)
        if await directory.principal(ADMIN_NAME) is not None:
            return False
        await DirectoryManager(directory).create_principal(
            ADMIN_NAME, password=password, roles=["admin"], description="Administrator")
        return True
    finally:
        await store.close()
