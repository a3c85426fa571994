"""The IMAP ENVELOPE data (RFC 9051 §7.5.2) and its nested-list form for the wire writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from stalwart_mp.mail.ingest import charsets
from stalwart_mp.mail.ingest.addresses import Address, parse_address_list
from stalwart_mp.mail.ingest.headers import Header

# Placeholders Dovecot and UW-IMAP send for an address without a local part or a domain, so
# clients never see NIL there (NIL host means a group marker, RFC 9051 §7.5.2).
MISSING_MAILBOX = "MISSING_MAILBOX"
MISSING_DOMAIN = "MISSING_DOMAIN"

_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")


@dataclass(slots=True)
class Envelope:
    date: str | None = None  # the Date header as written (unfolded)
    subject: str | None = None  # RFC 2047-decoded
    subject_raw: bytes | None = None  # as written (unfolded); ENVELOPE sends this
    from_: list[Address] = field(default_factory=list)
    sender: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    in_reply_to: str | None = None  # as written
    message_id: str | None = None  # as written


def first_header(headers: Sequence[Header], lname: str) -> Header | None:
    for header in headers:
        if header.lname == lname:
            return header
    return None


def build_envelope(headers: Sequence[Header]) -> Envelope:
    """ENVELOPE from a header block; the first field of each name is used."""
    env = Envelope()
    lists: dict[str, list[Address]] = {}
    for header in headers:
        lname = header.lname
        if lname in _ADDRESS_FIELDS:
            if lname not in lists:
                lists[lname] = parse_address_list(header.text())
        elif lname == "date" and env.date is None:
            env.date = header.text()
        elif lname == "subject" and env.subject_raw is None:
            env.subject_raw = header.unfolded().strip()
            env.subject = header.decoded()
        elif lname == "in-reply-to" and env.in_reply_to is None:
            env.in_reply_to = header.text()
        elif lname == "message-id" and env.message_id is None:
            env.message_id = header.text()
    env.from_ = lists.get("from", [])
    env.to = lists.get("to", [])
    env.cc = lists.get("cc", [])
    env.bcc = lists.get("bcc", [])
    # RFC 9051 §7.5.2: an absent or empty Sender or Reply-To takes the value of From.
    env.sender = lists.get("sender") or list(env.from_)
    env.reply_to = lists.get("reply-to") or list(env.from_)
    return env


Tree: TypeAlias = "list[Tree] | str | int | None"  # nested IMAP data: list → (...), None → NIL


def address_tree(addresses: Sequence[Address]) -> list[Tree] | None:
    """RFC 9051 §7.5.2 address list: ``[[name, adl, mailbox, host], ...]`` or None (NIL)."""
    if not addresses:
        return None
    out: list[Tree] = []
    for a in addresses:
        if a.host is None:  # group markers pass through as they are
            out.append([None, None, a.mailbox, None])
            continue
        out.append([
            a.raw_name if a.raw_name is not None else a.name,
            a.route,
            a.mailbox or MISSING_MAILBOX,
            a.host or MISSING_DOMAIN,
        ])
    return out


def envelope_tree(env: Envelope) -> list[Tree]:
    """RFC 9051 §7.5.2 ENVELOPE field order: date, subject, from, sender, reply-to, to, cc,
    bcc, in-reply-to, message-id. None stands for NIL; strings are as written."""
    subject = charsets.decode_header_bytes(env.subject_raw) if env.subject_raw is not None else None
    return [
        env.date,
        subject,
        address_tree(env.from_),
        address_tree(env.sender),
        address_tree(env.reply_to),
        address_tree(env.to),
        address_tree(env.cc),
        address_tree(env.bcc),
        env.in_reply_to,
        env.message_id,
    ]
