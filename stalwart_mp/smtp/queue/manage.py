"""Management of the outbound queue: list, inspect, retry now, cancel.

The control plane's Queue service calls these; each change is a compare-and-set on the
stored message (``store.update``), so it is safe while delivery runners on any node work
on the same queue. A message being delivered right now (live lease) keeps its schedule:
"retry now" then has nothing to do, and a cancelled recipient is skipped when the runner
records its results.
"""
from __future__ import annotations

import time

from stalwart_mp.smtp.queue.store import (
    CANCELLED,
    QUEUED,
    QueuedMessage,
    load,
    queued,
    update,
)
from stalwart_mp.store.data import DataStore

PAGE = 500  # messages read per range while filtering


def _matches(m: QueuedMessage, sender: str | None, domain: str | None,
             status: str | None) -> bool:
    if sender is not None and m.mail_from.lower() != sender.lower():
        return False
    if domain is not None:
        want = domain.lower().rstrip(".")
        if not any(r.address.rpartition("@")[2].lower() == want for r in m.recipients):
            return False
    return status is None or status == m.status or \
        any(r.status == status for r in m.recipients)


async def list_messages(data: DataStore, *, sender: str | None = None,
                        recipient_domain: str | None = None, status: str | None = None,
                        after_id: int = 0, limit: int = 100) -> list[QueuedMessage]:
    """Queued messages with an id above ``after_id``, oldest first, filtered by envelope
    sender (exact, case-insensitive; "" = the null sender), a recipient's domain, and
    status: a message status ("scheduled", "deferred") or a recipient status ("queued",
    "delivered", "failed", "cancelled"). Page with ``after_id`` = the last id returned."""
    out: list[QueuedMessage] = []
    cursor = after_id
    while len(out) < limit:
        page = await queued(data, limit=PAGE, after_id=cursor)
        if not page:
            break
        out += [m for m in page if _matches(m, sender, recipient_domain, status)]
        cursor = page[-1].id
    return out[:limit]


async def get_message(data: DataStore, qid: int) -> QueuedMessage | None:
    message, _raw, _lease, _lease_raw = await load(data, qid)
    return message


async def retry_now(data: DataStore, qid: int) -> bool:
    """Make the message due now (False: no such message). While a runner is delivering it,
    the attempt under way is the retry."""
    def change(message: QueuedMessage, leased: bool) -> bool:
        if leased:
            return False
        message.next_attempt = time.time()
        return True

    return await update(data, qid, change) is not None


async def cancel(data: DataStore, qid: int, recipient: str | None = None) -> bool:
    """Cancel one pending recipient, or the whole message (no DSN is sent for either).
    A message left without pending recipients leaves the queue. False: no such message,
    or no such pending recipient in it."""
    found = False

    def change(message: QueuedMessage, leased: bool) -> bool:
        nonlocal found
        targets = [r for r in message.recipients if r.status == QUEUED and
                   (recipient is None or r.address.lower() == recipient.lower())]
        found = bool(targets) or recipient is None
        for r in targets:
            r.status, r.reply, r.updated_at = CANCELLED, "cancelled by an administrator", \
                time.time()
        return bool(targets)

    return await update(data, qid, change) is not None and found
