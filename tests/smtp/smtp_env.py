"""Shared set-up of the SMTP integration tests: accounts, server config and stored mail.

The server runs as a real subprocess (tests/harness.py); accounts are created in its LMDB
store before it starts, and stored messages are read back from the same stores.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from stalwart_mp.directory.base import PrincipalType
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.records import Role
from stalwart_mp.mail.store import MailStore
from stalwart_mp.smtp.queue.store import queued
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.registry import open_data_store
from tests.harness import Server, base_config, free_port

# (name, password, quota in bytes or None); the address is <name>@example.org
ACCOUNTS: list[tuple[str, str, int | None]] = [("alice", "alice-pw", None),
                                               ("bob", "bob-pw", 300)]


def _data_store(folder: Path):
    return open_data_store("default", {"type": "lmdb", "path": str(folder / "data" / "lmdb")})


def setup_accounts(folder: Path,
                   accounts: list[tuple[str, str, int | None]] = ACCOUNTS,
                   groups: dict[str, list[str]] | None = None,
                   lists: dict[str, list[str]] | None = None) -> None:
    """Create the domain example.org, the accounts, the ``groups`` (name -> member
    accounts) and the mailing ``lists`` (name -> member addresses; the list's address is
    name@example.org), before the server starts."""
    async def run() -> None:
        data = _data_store(folder)
        manager = DirectoryManager(InternalDirectory(data))
        await manager.create_domain("example.org")
        for name, password, quota in accounts:
            extra = {"quota_bytes": quota} if quota is not None else {}
            await manager.create_principal(name, password=password,
                                           emails=[f"{name}@example.org"], **extra)
        for name, members in (groups or {}).items():
            await manager.create_principal(name, type=PrincipalType.GROUP, members=members)
        for name, members in (lists or {}).items():
            await manager.create_principal(name, type=PrincipalType.LIST, members=members,
                                           emails=[f"{name}@example.org"])
        await data.close()

    asyncio.run(run())


def mailbox(folder: Path, name: str, role: str = Role.INBOX) -> tuple[list[bytes], list]:
    """The raw messages in an account's folder (UID order) and the outbound queue, read
    from the server's stores."""
    async def run() -> tuple[list[bytes], list]:
        data = _data_store(folder)
        blobs = open_blob_store("default", {"type": "lmdb"}, data)
        directory = InternalDirectory(data)
        mail = MailStore(data, GroupCommitter(data, blobs))
        p = await directory.principal(name)
        box = await mail.mailbox_by_role(p.id, role)
        out = []
        if box is not None:
            for _, eid in await mail.uid_index(p.id, box.id):
                out.append(await blobs.get((await mail.email(p.id, eid)).blob_id))
        queue = await queued(data)
        await data.close()
        return out, queue

    return asyncio.run(run())


def listener(name: str, port: int, protocol: str, extra: str = "") -> str:
    """One ``[server.listener.<name>]`` table on 127.0.0.1."""
    return (f'\n[server.listener.{name}]\nbind = ["127.0.0.1:{port}"]\n'
            f'protocol = "{protocol}"\n{extra}')


def mail_server(folder: Path, dns_port: int, listeners: dict[str, tuple[str, str]], *,
                smtp: str = "max-message-size = 20000\n", workers: int = 2,
                accounts: list[tuple[str, str, int | None]] = ACCOUNTS,
                outbound: str = "enabled = false\n",
                groups: dict[str, list[str]] | None = None,
                lists: dict[str, list[str]] | None = None) -> Server:
    """A started server with ``listeners`` (name -> (protocol, extra lines)) on free ports
    (``server.ports[name]``), the ``[smtp]`` and ``[outbound]`` settings given (outbound
    delivery off unless asked for: queued mail stays put) and the resolver on the
    loopback DNS server. Stop it with ``server.stop()``."""
    ports = {name: free_port() for name in ("http", *listeners)}
    extra = "".join(listener(name, ports[name], protocol, more)
                    for name, (protocol, more) in listeners.items())
    extra += f"""
[smtp]
{smtp}
[outbound]
{outbound}
[resolver]
nameservers = ["127.0.0.1:{dns_port}"]
timeout = 2
"""
    srv = Server(folder, ports["http"], base_config(folder, ports["http"], workers=workers,
                                                    extra=extra))
    (folder / "data").mkdir()
    setup_accounts(folder, accounts, groups, lists)
    srv.start(wait_workers=workers)
    srv.ports = ports
    return srv


def queue_with_bodies(folder: Path) -> list[tuple]:
    """The outbound queue, each message with its raw bytes."""
    async def run() -> list[tuple]:
        data = _data_store(folder)
        blobs = open_blob_store("default", {"type": "lmdb"}, data)
        out = [(m, await blobs.get(m.blob_id)) for m in await queued(data)]
        await data.close()
        return out

    return asyncio.run(run())
