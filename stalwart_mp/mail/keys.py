"""Key layout of the mail model in the data store.

One-byte subspace tag + big-endian fields (ARCHITECTURE.md "The four stores"), so a range
scan over a prefix lists, in order, a mailbox's UIDs or an account's changes.

  0x40 | acct(4)                  -> account state (modseq, next ids, usage)        [CAS]
  0x41 | acct(4) | mbox(4)        -> mailbox record (name, role, UIDVALIDITY, UIDNEXT) [CAS]
  0x42 | acct(4) | email(4)       -> email record (blob, thread, keywords, {mbox: uid})
  0x43 | acct(4) | email(4)       -> parsed message (envelope, bodystructure, offsets...)
  0x44 | acct(4) | mbox(4) | uid(4) -> email id (4): the mailbox's messages in UID order
  0x46 | acct(4) | id-hash(8)     -> thread id (by Message-ID, for threading replies)
  0x47 | acct(4) | modseq(8)      -> change record (emails and mailboxes created/updated/destroyed)
  0x48 | acct(4) | mbox(4) | entry -> METADATA value (RFC 5464; mbox 0 = server entries)
  0x49 | grantee(4) | owner(4) | mbox(4) -> rights: mailboxes shared with an account (ACL)
  0x4A | owner(4) | mbox(4) | grantee(4) -> b"": the same, by mailbox (cleaned at delete)
  0x4F | acct(4) | email(4)       -> b"i" (index) / b"u" (unindex): full-text work pending
Every write to an account asserts its state record, so writers from any process serialize
per account (compare-and-set, retried) while the group committer merges many accounts'
writes into one durable commit.
"""
from __future__ import annotations

import hashlib
import struct

ACCOUNT = 0x40
MAILBOX = 0x41
EMAIL = 0x42
METADATA = 0x43
UID = 0x44
THREAD = 0x46
CHANGE = 0x47
ANNOTATION = 0x48
SHARED = 0x49
SHARED_BY = 0x4A
FTS_PENDING = 0x4F

_I = struct.Struct(">I")
_Q = struct.Struct(">Q")


def u32(n: int) -> bytes:
    return _I.pack(n)


def account(acct: int) -> bytes:
    return bytes([ACCOUNT]) + u32(acct)


def mailbox(acct: int, mbox: int) -> bytes:
    return bytes([MAILBOX]) + u32(acct) + u32(mbox)


def mailbox_prefix(acct: int) -> bytes:
    return bytes([MAILBOX]) + u32(acct)


def email(acct: int, eid: int) -> bytes:
    return bytes([EMAIL]) + u32(acct) + u32(eid)


def email_prefix(acct: int) -> bytes:
    return bytes([EMAIL]) + u32(acct)


def metadata(acct: int, eid: int) -> bytes:
    return bytes([METADATA]) + u32(acct) + u32(eid)


def uid(acct: int, mbox: int, uid_: int) -> bytes:
    return bytes([UID]) + u32(acct) + u32(mbox) + u32(uid_)


def uid_prefix(acct: int, mbox: int) -> bytes:
    return bytes([UID]) + u32(acct) + u32(mbox)


def thread(acct: int, message_id: str) -> bytes:
    digest = hashlib.blake2b(message_id.encode("utf-8", "replace"), digest_size=8).digest()
    return bytes([THREAD]) + u32(acct) + digest


def change(acct: int, modseq: int) -> bytes:
    return bytes([CHANGE]) + u32(acct) + _Q.pack(modseq)


def change_prefix(acct: int) -> bytes:
    return bytes([CHANGE]) + u32(acct)


def annotation(acct: int, mbox: int, entry: str) -> bytes:
    return bytes([ANNOTATION]) + u32(acct) + u32(mbox) + entry.encode("utf-8")


def annotation_prefix(acct: int, mbox: int) -> bytes:
    return bytes([ANNOTATION]) + u32(acct) + u32(mbox)


def shared(grantee: int, owner: int, mbox: int) -> bytes:
    return bytes([SHARED]) + u32(grantee) + u32(owner) + u32(mbox)


def shared_prefix(grantee: int) -> bytes:
    return bytes([SHARED]) + u32(grantee)


def shared_by(owner: int, mbox: int, grantee: int) -> bytes:
    return bytes([SHARED_BY]) + u32(owner) + u32(mbox) + u32(grantee)


def shared_by_prefix(owner: int, mbox: int) -> bytes:
    return bytes([SHARED_BY]) + u32(owner) + u32(mbox)


def fts_pending(acct: int, eid: int) -> bytes:
    return bytes([FTS_PENDING]) + u32(acct) + u32(eid)


def tail_u32(key: bytes) -> int:
    return _I.unpack_from(key, len(key) - 4)[0]


def tail_u64(key: bytes) -> int:
    return _Q.unpack_from(key, len(key) - 8)[0]


def end_of(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix``."""
    return prefix + b"\xff" * 9
