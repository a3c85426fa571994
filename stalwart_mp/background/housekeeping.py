"""Periodic clean-up: mail of deleted accounts, unreferenced blobs (after a grace period),
expired lookup keys and bearer tokens."""
from __future__ import annotations

import asyncio
import logging

from stalwart_mp.background.purge import purge_deleted_accounts

log = logging.getLogger("stalwart_mp.housekeeping")


async def run_housekeeping(services, blob_grace: float, interval: float) -> None:
    tick = 0
    while True:
        try:
            await purge_deleted_accounts(services.mail)
            purged = await services.lookup.purge_expired()
            if tick % max(1, int(interval // 60)) == 0:
                blobs = await services.blobs.collect(blob_grace)
                tokens = await services.tokens.purge_expired()
                log.info("housekeeping", extra={"fields": {
                    "blobs_collected": blobs, "tokens_expired": tokens,
                    "lookup_expired": purged}})
        except Exception:
            log.exception("housekeeping failed")
        tick += 1
        await asyncio.sleep(60)
