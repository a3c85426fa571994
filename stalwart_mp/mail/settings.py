"""Settings of local delivery and of the background work on mail (indexing, collection)."""
from __future__ import annotations

from stalwart_mp.config.schema import SCHEMA, Bool, Choice, Duration, Int, Setting

SCHEMA.add(
    Setting(
        "delivery.sub-addressing", Bool(), True,
        'Deliver "user+anything@domain" to "user@domain" (RFC 5233 sub-addressing).',
    ),
    Setting(
        "delivery.plus-folder", Bool(), False,
        'With sub-addressing, file "user+Folder@domain" into the folder named "Folder" when '
        "the account has one (else the inbox).",
    ),
    Setting(
        "delivery.over-quota", Choice("temporary", "permanent"), "temporary",
        "Answer to mail for a full mailbox: temporary (452 4.2.2, the sender retries) or "
        "permanent (552 5.2.2, bounced at once).",
    ),
    Setting(
        "housekeeping.blob-grace", Duration(), 86400.0,
        "A blob that no message references is deleted after this long (it covers the time "
        "between storing a message's bytes and committing its record).",
    ),
    Setting(
        "housekeeping.interval", Duration(), 3600.0,
        "How often the queue process collects unreferenced blobs and expired tokens.",
    ),
    Setting(
        "search.index-batch", Int(min=1, max=10_000), 100,
        "Messages indexed for full-text search per round by the queue process.",
    ),
    Setting(
        "queue.nice", Int(min=0, max=19), 10,
        "Scheduling priority (nice) of the queue process: its background work (indexing, "
        "collection) gives way to the workers serving clients.",
    ),
)
