"""Purging what deleted principals owned.

Deleting a principal leaves a tombstone (``directory/internal.py`` 0x17) in the same commit;
the queue process removes the account's mail and then the tombstone, so a purge interrupted
by a restart is simply done again.
"""
from __future__ import annotations

import logging

from stalwart_mp.directory.internal import TAG_DELETED
from stalwart_mp.mail.store import delete_account
from stalwart_mp.store.data import WriteBatch

log = logging.getLogger("stalwart_mp.purge")


async def purge_deleted_accounts(mail) -> int:
    rows = await mail.data.range(bytes([TAG_DELETED]), bytes([TAG_DELETED + 1]))
    for key, name in rows:
        acct = int.from_bytes(key[1:], "big")
        if acct < 1 << 32:
            destroyed = await delete_account(mail, acct)
            log.info("account purged", extra={"fields": {
                "account": name.decode("utf-8", "replace"), "messages": destroyed}})
        await mail.data.write(WriteBatch().delete(key))
    return len(rows)
