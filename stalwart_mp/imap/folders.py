"""Mailbox names and hierarchy as IMAP sees them (RFC 9051 §5.1).

The model stores a tree (name + parent id); IMAP names are paths joined by "/". The inbox
is "INBOX" in any case (RFC 9051 §5.1); its children are "INBOX/...". LIST patterns
(RFC 9051 §6.3.9: "*" matches anything, "%" anything but the delimiter) become regexes.
"""
from __future__ import annotations

import re

from stalwart_mp.imap.protocol.writer import Atom
from stalwart_mp.mail.records import Mailbox, Role

DELIMITER = "/"

# RFC 6154 §2 special-use attributes of the model's roles
ROLE_ATTRS = {Role.DRAFTS: "\\Drafts", Role.SENT: "\\Sent", Role.JUNK: "\\Junk",
              Role.TRASH: "\\Trash", Role.ARCHIVE: "\\Archive", "all": "\\All",
              "flagged": "\\Flagged", "important": "\\Important"}
ATTR_ROLES = {v.lower(): k for k, v in ROLE_ATTRS.items()}


class Folders:
    """A snapshot of an account's mailboxes with their IMAP paths."""

    def __init__(self, mailboxes: list[Mailbox]):
        self.by_id = {m.id: m for m in mailboxes}
        self.paths: dict[int, str] = {}
        for m in mailboxes:
            self.paths[m.id] = self._path(m)
        self.by_path = {self._key(p): mid for mid, p in self.paths.items()}
        self.children: dict[int, list[int]] = {}
        for m in mailboxes:
            self.children.setdefault(m.parent_id, []).append(m.id)

    def _path(self, m: Mailbox) -> str:
        parts = []
        seen = set()
        cur: Mailbox | None = m
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            parts.append("INBOX" if cur.role == Role.INBOX and not cur.parent_id else cur.name)
            cur = self.by_id.get(cur.parent_id) if cur.parent_id else None
        return DELIMITER.join(reversed(parts))

    @staticmethod
    def _key(path: str) -> str:
        if path.upper() == "INBOX" or path.upper().startswith("INBOX" + DELIMITER):
            return "INBOX" + path[5:]
        return path

    def find(self, path: str) -> Mailbox | None:
        mid = self.by_path.get(self._key(normalize(path)))
        return self.by_id.get(mid) if mid is not None else None

    def path(self, mid: int) -> str:
        return self.paths[mid]

    def has_children(self, mid: int) -> bool:
        return bool(self.children.get(mid))

    def sorted(self) -> list[Mailbox]:
        return sorted(self.by_id.values(), key=lambda m: (self.paths[m.id] != "INBOX",
                                                           self.paths[m.id]))

    def attributes(self, m: Mailbox, *, special_use: bool = True,
                   subscribed: bool = False) -> list[Atom]:
        """LIST attributes (RFC 9051 §7.3.1, RFC 3348 CHILDREN, RFC 6154 SPECIAL-USE)."""
        attrs = [Atom("\\HasChildren" if self.has_children(m.id) else "\\HasNoChildren")]
        if subscribed and m.subscribed:
            attrs.append(Atom("\\Subscribed"))
        if special_use and m.role in ROLE_ATTRS:
            attrs.append(Atom(ROLE_ATTRS[m.role]))
        return attrs


def normalize(path: str) -> str:
    """Drop a trailing delimiter (RFC 9051 §6.3.4) and write INBOX in capitals."""
    if path.endswith(DELIMITER) and len(path) > 1:
        path = path.rstrip(DELIMITER)
    if path.upper() == "INBOX" or path.upper().startswith("INBOX" + DELIMITER):
        path = "INBOX" + path[5:]
    return path


def valid_name(path: str) -> str | None:
    """Why ``path`` cannot name a new mailbox, or None."""
    if not path or any(not part for part in path.split(DELIMITER)):
        return "empty hierarchy level in the name"
    if any(ch in path for ch in "%*") or any(ord(ch) < 0x20 or ord(ch) == 0x7F
                                              for ch in path):
        return "wildcards and control characters are not allowed in mailbox names"
    if len(path) > 1000:
        return "name too long"
    return None


def pattern_regex(reference: str, pattern: str) -> re.Pattern:
    """RFC 9051 §6.3.9: the reference and the pattern are joined; "*" and "%" wildcards.
    INBOX matches in any case."""
    if pattern.startswith(DELIMITER) or not reference:
        full = pattern
    elif reference.endswith(DELIMITER):
        full = reference + pattern
    else:
        full = reference + DELIMITER + pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    rx = "".join(out)
    if full[:5].upper() == "INBOX":
        rx = "(?i:INBOX)" + "".join(out[5:]) if len(full) >= 5 and not any(
            c in full[:5] for c in "*%") else rx
    return re.compile(rx + r"\Z", re.DOTALL)
