"""The stores and directory a process works with, opened once per process after fork.

Workers, the control child and (later) the queue child each call ``Services.open``; every
component (protocol sessions, delivery, the control plane) takes what it needs from here
instead of opening stores itself, so one process has one connection pool per store.
"""
from __future__ import annotations

from dataclasses import dataclass

from stalwart_mp.directory.auth import Authenticator, BanPolicy
from stalwart_mp.directory.cache import CachedDirectory
from stalwart_mp.directory.tokens import TokenStore
from stalwart_mp.store.data import DataStore


@dataclass(slots=True)
class Services:
    data: DataStore
    lookup: object            # stalwart_mp.store.lookup.LookupStore
    directory: CachedDirectory
    auth: Authenticator
    tokens: TokenStore
    manager: object | None    # DirectoryManager when the directory is the internal one
    blobs: object             # stalwart_mp.store.blob.BlobStore
    mail: object              # stalwart_mp.mail.store.MailStore (writes group-committed)
    delivery: object          # stalwart_mp.mail.delivery.Delivery
    secret: bytes             # server-wide secret (directory/secret.py)

    @classmethod
    async def open(cls, cfg, events=None) -> Services:
        from stalwart_mp.directory.configured import open_directory
        from stalwart_mp.directory.internal import InternalDirectory
        from stalwart_mp.directory.management import DirectoryManager
        from stalwart_mp.directory.secret import server_secret
        from stalwart_mp.mail.commit import GroupCommitter
        from stalwart_mp.mail.delivery import Delivery, DeliverySettings
        from stalwart_mp.mail.notify import change_publisher
        from stalwart_mp.mail.store import MailStore
        from stalwart_mp.store.coalesce import CoalescingDataStore
        from stalwart_mp.store.configured import (
            open_blob_store,
            open_data_store,
            open_lookup_store,
        )

        # every write of this process goes through one coalescer: group commit
        data = CoalescingDataStore(await open_data_store(cfg))
        lookup = await open_lookup_store(cfg, data)
        directory = await open_directory(cfg, data)
        manager = None
        if isinstance(directory.inner, InternalDirectory):
            manager = DirectoryManager(directory.inner,
                                       events.publish if events is not None else None)
        if events is not None:
            directory.attach(events)
        auth = Authenticator(directory, lookup, BanPolicy.from_config(cfg), manager)
        blobs = open_blob_store(cfg, data)
        committer = GroupCommitter(data, blobs, change_publisher(events))
        mail = MailStore(data, committer)
        delivery = Delivery(mail, blobs, directory, DeliverySettings.from_config(cfg))
        return cls(data, lookup, directory, auth, TokenStore(data), manager, blobs, mail,
                   delivery, await server_secret(data))

    async def close(self) -> None:
        await self.blobs.close()
        await self.directory.close()
        if self.lookup is not self.data:
            await self.lookup.close()
        await self.data.close()

