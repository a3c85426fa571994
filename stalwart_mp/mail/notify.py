"""Change notifications of the mail model on the event bus.

Every commit publishes ``mail.<account id>`` with ``{"modseq": n}``: IMAP IDLE and JMAP
push subscribe to their account's topic, the indexer to the prefix ``mail.``. Best effort:
the state lives in the store, a lost notification only delays a client's refresh.
"""
from __future__ import annotations

import logging

log = logging.getLogger("stalwart_mp.mail")


def account_topic(acct: int) -> str:
    return f"mail.{acct}"


def change_publisher(bus):
    """An ``on_commit`` callback for ``GroupCommitter`` (None without a bus)."""
    if bus is None:
        return None

    async def publish(changes) -> None:
        for acct, change in changes:
            try:
                await bus.publish(account_topic(acct), {"modseq": change.modseq})
            except Exception:
                log.warning("could not announce a change", exc_info=True,
                            extra={"fields": {"account": acct}})

    return publish
