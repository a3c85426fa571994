"""The internal directory on a real LMDB data store, loaded with the shared dataset."""
from __future__ import annotations

from stalwart_mp.directory.base import PrincipalType
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.store.registry import open_data_store
from tests.directory.dataset import DOMAINS, ENTRIES


async def make_internal_directory(path) -> InternalDirectory:
    store = open_data_store("data", {"type": "lmdb", "path": str(path)})
    directory = InternalDirectory(store)
    manager = DirectoryManager(directory)
    for domain in DOMAINS:
        await manager.create_domain(domain)
    individuals = [e for e in ENTRIES if e.type == "individual"]
    for e in individuals:
        await manager.create_principal(
            e.name, PrincipalType.INDIVIDUAL, password=e.password, emails=list(e.emails),
            description=e.description, quota_bytes=e.quota_bytes, roles=list(e.roles),
            disabled=e.disabled)
    for e in ENTRIES:
        if e.type != "individual":
            await manager.create_principal(
                e.name, PrincipalType(e.type), emails=list(e.emails),
                members=list(e.members), description=e.description, roles=[])
            if e.type == "group":  # membership recorded on both sides
                for m in e.members:
                    await manager.add_member(e.name, m)
    return directory
