"""The first administrator account, created by ``stalwart-mp init``."""
from __future__ import annotations

import asyncio

from stalwart_mp.directory import internal
from stalwart_mp.directory.passwords import hash_password
from stalwart_mp.store.configured import open_data_store

ADMIN_NAME = "admin"


def create_first_admin(cfg, password: str) -> bool:
    """Create 'admin' with ``password``; False if it already exists (nothing changed)."""
    return asyncio.run(_create(cfg, password))


async def _create(cfg, password: str) -> bool:
    store = await open_data_store(cfg)
    try:
        if await internal.get_by_name(store, ADMIN_NAME) is not None:
            return False
        admin = internal.Principal(
            name=ADMIN_NAME, roles=["admin"], secrets=[hash_password(password)],
            description="Administrator",
        )
        try:
            await internal.create(store, admin)
        except internal.PrincipalExists:
            return False
        return True
    finally:
        await store.close()
