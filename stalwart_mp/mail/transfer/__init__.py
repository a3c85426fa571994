"""Moving mail in and out of an account: Maildir++ and mboxrd (``stalwart-mp mail ...``).

Both commands open the configured stores directly, the way a worker does, so they are safe
while the server runs: the data store serializes writers of every process (LMDB's writer
lock, SQL transactions) and the mail model compare-and-sets each account's state record,
so an import and a delivery to the same account simply retry one after the other. The
running server reads the store on every request, so imported mail is visible at once;
IMAP IDLE / JMAP push sessions are told through the event bus when its socket
(``<server.run-dir>/events.sock``) is there — best effort: without it, clients see the mail
at their next command.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.notify import change_publisher
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.blob import BlobStore
from stalwart_mp.store.data import DataStore

log = logging.getLogger("stalwart_mp.mail.transfer")


class TransferError(Exception):
    """The import or export cannot go on; the message says what to do."""


@dataclass(slots=True)
class Session:
    """The open stores and the account an import or export works on."""

    data: DataStore
    blobs: BlobStore
    store: MailStore
    acct: int
    principal: str


async def account_of(cfg: Any, data: DataStore, address: str) -> tuple[int, str]:
    """Account id and principal name of ``address`` (an e-mail address or a login name)."""
    from stalwart_mp.directory import ids
    from stalwart_mp.directory.configured import open_directory
    from stalwart_mp.directory.recipients import Outcome, resolve

    directory = await open_directory(cfg, data)
    try:
        names: list[str] = []
        if "@" in address:
            resolution = await resolve(directory, address, sub_addressing=False)
            if resolution.outcome == Outcome.LOCAL:
                names = resolution.accounts
        if not names and await directory.principal(address) is not None:
            names = [address]
        if not names:
            raise TransferError(f'no account has the address or name "{address}"')
        if len(names) > 1:
            raise TransferError(f'"{address}" reaches several accounts ({", ".join(names)}); '
                                "name one of them")
        principal = await directory.principal(names[0])
        if principal is None:
            raise TransferError(f'account "{names[0]}" disappeared from the directory')
        return await ids.account_id(data, principal), principal.name
    finally:
        await directory.close()


@contextlib.asynccontextmanager
async def open_session(cfg: Any, address: str) -> AsyncIterator[Session]:
    """Open the configured data and blob stores, the account, and (if the server is
    running) the event bus on which each commit is announced."""
    from stalwart_mp.store.configured import open_blob_store, open_data_store

    data = await open_data_store(cfg)
    bus = None
    try:
        blobs = open_blob_store(cfg, data)
        try:
            bus = await _event_bus(cfg)
            committer = GroupCommitter(data, blobs, _announcer(bus))
            acct, name = await account_of(cfg, data, address)
            store = MailStore(data, committer)
            await store.ensure_account(acct)
            yield Session(data, blobs, store, acct, name)
        finally:
            if bus is not None:
                await bus.close()
            await blobs.close()
    finally:
        await data.close()


async def _event_bus(cfg: Any):
    """A bus client connected to the running server's hub, or None when it is not running."""
    from stalwart_mp.events.bus import LocalEventBus

    try:
        socket_path = cfg.path("server.run-dir") / "events.sock"
    except TypeError:  # no run-dir configured
        return None
    if not socket_path.exists():
        return None
    bus = LocalEventBus(socket_path)
    await bus.start()
    if bus.connected:
        return bus
    await bus.close()
    return None


def _announcer(bus):
    """``on_commit`` of the committer: the same notifications the server publishes."""
    return change_publisher(bus)
