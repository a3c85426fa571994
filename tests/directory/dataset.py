"""One directory, described once, loaded into every backend (internal, SQL, LDAP) so the
same behavioural suite runs against each.

Passwords are given in clear here; each loader stores them hashed in the scheme its
backend uses (argon2 internal, {SSHA}/crypt in LDAP and SQL), so verification is tested too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DOMAINS = ["example.org", "example.net"]


@dataclass(frozen=True)
class Entry:
    name: str
    type: str  # individual | group | list
    password: str | None = None
    emails: tuple[str, ...] = ()
    members: tuple[str, ...] = ()  # names (groups) or addresses (lists)
    member_of: tuple[str, ...] = ()
    quota_bytes: int = 0
    description: str = ""
    disabled: bool = False
    roles: tuple[str, ...] = field(default=("user",))


ENTRIES = [
    Entry("alice", "individual", "alice-secret-1",
          ("alice@example.org", "a.smith@example.org", "alice@example.net"),
          member_of=("sales",), quota_bytes=1 << 30, description="Alice Smith"),
    Entry("bob", "individual", "bob-secret-2", ("bob@example.org", "@example.net"),
          member_of=("sales",), description="Bob Jones (catch-all of example.net)"),
    Entry("carol", "individual", "carol-secret-3", ("carol@example.org",),
          description="Carol (disabled)", disabled=True),
    Entry("dave", "individual", "dävé-ünïcödé-4", ("dave@example.org",),
          description="Dave with a non-ASCII password"),
    Entry("sales", "group", None, ("sales@example.org",), members=("alice", "bob"),
          description="Sales team"),
    Entry("everyone", "list", None, ("everyone@example.org",),
          members=("alice@example.org", "bob@example.org", "external@other.test"),
          description="Mailing list"),
]


def entry(name: str) -> Entry:
    return next(e for e in ENTRIES if e.name == name)
