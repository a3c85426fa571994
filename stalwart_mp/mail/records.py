"""The mail model's records and their compact msgpack form.

The model is JMAP-native (ARCHITECTURE.md "Layers"): an Email has an id, a blob, a thread,
keywords and a set of mailboxes, each with the IMAP UID it has there. The account's modseq
is both the IMAP MODSEQ (RFC 7162) and the JMAP state; an email's ``modseq`` is the value
at its last change, which CONDSTORE's FETCH MODSEQ returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import msgpack


class Role:
    """Special-use roles (RFC 6154) of the default folders, as JMAP names them."""

    INBOX = "inbox"
    DRAFTS = "drafts"
    SENT = "sent"
    JUNK = "junk"
    TRASH = "trash"
    ARCHIVE = "archive"


DEFAULT_MAILBOXES = (
    ("INBOX", Role.INBOX), ("Drafts", Role.DRAFTS), ("Sent", Role.SENT),
    ("Junk", Role.JUNK), ("Trash", Role.TRASH), ("Archive", Role.ARCHIVE),
)

# IMAP system flags map to JMAP keywords (RFC 8621 §4.1.1).
SEEN = "$seen"
FLAGGED = "$flagged"
ANSWERED = "$answered"
DRAFT = "$draft"
DELETED = "$deleted"


@dataclass(slots=True)
class AccountState:
    modseq: int = 0
    next_email_id: int = 1
    next_mailbox_id: int = 1
    used_bytes: int = 0
    used_count: int = 0

    def pack(self) -> bytes:
        return msgpack.packb([self.modseq, self.next_email_id, self.next_mailbox_id,
                              self.used_bytes, self.used_count])

    @classmethod
    def unpack(cls, raw: bytes | None) -> AccountState | None:
        return cls(*msgpack.unpackb(raw)) if raw is not None else None


@dataclass(slots=True)
class Mailbox:
    id: int
    name: str
    parent_id: int = 0          # 0 = top level
    role: str | None = None
    sort_order: int = 0
    subscribed: bool = True
    uidvalidity: int = 1
    uidnext: int = 1
    total: int = 0              # messages in the mailbox
    unseen: int = 0             # without $seen
    size: int = 0               # octets (STATUS=SIZE, RFC 8438)
    modseq: int = 0             # last change to the mailbox or its messages (HIGHESTMODSEQ)
    acl: dict[str, str] = field(default_factory=dict)

    def pack(self) -> bytes:
        return msgpack.packb([self.name, self.parent_id, self.role, self.sort_order,
                              self.subscribed, self.uidvalidity, self.uidnext, self.total,
                              self.unseen, self.size, self.modseq, self.acl])

    @classmethod
    def unpack(cls, mid: int, raw: bytes) -> Mailbox:
        return cls(mid, *msgpack.unpackb(raw))

    def clone(self) -> Mailbox:
        return Mailbox(self.id, self.name, self.parent_id, self.role, self.sort_order,
                       self.subscribed, self.uidvalidity, self.uidnext, self.total,
                       self.unseen, self.size, self.modseq, dict(self.acl))


@dataclass(slots=True)
class Email:
    id: int
    blob_id: str
    thread_id: int
    received_at: float
    size: int
    keywords: list[str] = field(default_factory=list)
    mailboxes: dict[int, int] = field(default_factory=dict)   # mailbox id -> UID
    saved_at: dict[int, float] = field(default_factory=dict)  # mailbox id -> SAVEDATE
    modseq: int = 0

    def pack(self) -> bytes:
        return msgpack.packb([self.blob_id, self.thread_id, self.received_at, self.size,
                              self.keywords, self.mailboxes, self.saved_at, self.modseq])

    @classmethod
    def unpack(cls, eid: int, raw: bytes) -> Email:
        blob, thread, received, size, kw, mboxes, saved, modseq = msgpack.unpackb(
            raw, strict_map_key=False)
        return cls(eid, blob, thread, received, size, kw, mboxes, saved, modseq)

    def clone(self) -> Email:
        return Email(self.id, self.blob_id, self.thread_id, self.received_at, self.size,
                     list(self.keywords), dict(self.mailboxes), dict(self.saved_at),
                     self.modseq)

    @property
    def seen(self) -> bool:
        return SEEN in self.keywords


@dataclass(slots=True)
class Change:
    """What one modseq changed (for JMAP /changes and IMAP QRESYNC/CONDSTORE)."""

    modseq: int
    emails_created: list[int] = field(default_factory=list)
    emails_updated: list[int] = field(default_factory=list)
    emails_destroyed: list[int] = field(default_factory=list)
    mailboxes_created: list[int] = field(default_factory=list)
    mailboxes_updated: list[int] = field(default_factory=list)
    mailboxes_destroyed: list[int] = field(default_factory=list)

    def pack(self) -> bytes:
        return msgpack.packb([self.emails_created, self.emails_updated, self.emails_destroyed,
                              self.mailboxes_created, self.mailboxes_updated,
                              self.mailboxes_destroyed])

    @classmethod
    def unpack(cls, modseq: int, raw: bytes) -> Change:
        return cls(modseq, *msgpack.unpackb(raw))

    def empty(self) -> bool:
        return not (self.emails_created or self.emails_updated or self.emails_destroyed
                    or self.mailboxes_created or self.mailboxes_updated
                    or self.mailboxes_destroyed)
