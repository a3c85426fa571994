"""The directory contract: who exists, which addresses they own, how they authenticate.

Three kinds implement it: the internal directory (records in the data store, fully
managed through ``directory/management.py``), SQL directories and LDAP directories (both
read-only: "management happens in the external system", as the product's docs say).

Protocol code never talks to a backend: it calls ``directory/auth.py`` (authentication with
brute-force protection) and ``directory/recipients.py`` (recipient resolution with aliases,
plus-addressing, catch-all and list expansion), which use only the primitives below.
A backend that cannot answer raises ``DirectoryUnavailable`` — a temporary failure — and
never pretends a user is unknown (that would bounce mail).
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from enum import Enum

from stalwart_mp.auth.credentials import ScramSecret
from stalwart_mp.auth.totp import is_totp_uri


class DirectoryError(Exception):
    """A management request that cannot be done (the message says why)."""


class DirectoryUnavailable(Exception):
    """The backend could not be reached: answer with a temporary failure (4xx / NO [UNAVAILABLE])."""


class PrincipalType(str, Enum):
    INDIVIDUAL = "individual"
    GROUP = "group"
    LIST = "list"
    DOMAIN = "domain"


@dataclass(slots=True)
class AppPassword:
    """A named, revocable secret of an account (for mail clients), with its own hash."""

    name: str
    secret: str  # a password hash, "{ARGON2ID}..."
    created_at: float = field(default_factory=time.time)


@dataclass(slots=True)
class Principal:
    """An account, group, mailing list or domain.

    ``emails[0]`` is the primary address; the others are aliases. An address of the form
    ``@example.com`` makes the principal the catch-all of that domain; ``sales-*@example.com``
    is a wildcard alias. ``members`` holds principal names (groups) or addresses (lists).
    Quotas of 0 mean unlimited.
    """

    name: str
    type: PrincipalType = PrincipalType.INDIVIDUAL
    id: int = 0
    description: str = ""
    secrets: list[str] = field(default_factory=list)
    app_passwords: list[AppPassword] = field(default_factory=list)
    scram: list[ScramSecret] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    quota_bytes: int = 0
    quota_messages: int = 0
    roles: list[str] = field(default_factory=list)
    member_of: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    disabled: bool = False
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def primary_email(self) -> str | None:
        return next((e for e in self.emails if not e.startswith("@") and "*" not in e), None)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def totp_uri(self) -> str | None:
        """The account's TOTP secret: the ``otpauth://totp/`` entry of ``secrets`` (the way
        Stalwart keeps it), or None when it has no second factor."""
        return next((s for s in self.secrets if is_totp_uri(s)), None)

    @property
    def has_totp(self) -> bool:
        return self.totp_uri is not None


class Directory(abc.ABC):
    """Read primitives every directory answers. All names and addresses are compared
    case-insensitively (addresses are lower-cased by ``recipients.normalize``)."""

    name: str = "directory"
    read_only: bool = True

    @abc.abstractmethod
    async def principal(self, name: str) -> Principal | None:
        """The principal with this login name, with its secrets, or None."""

    @abc.abstractmethod
    async def names_by_email(self, address: str) -> list[str]:
        """Names of the principals owning exactly this address (primary or alias), including
        lists; ``@domain`` finds the catch-all of a domain. Empty when none."""

    @abc.abstractmethod
    async def is_local_domain(self, domain: str) -> bool:
        """True if mail for this domain is ours."""

    @abc.abstractmethod
    async def members(self, name: str) -> list[str]:
        """Members of a group (names) or list (addresses); empty for other principals."""

    async def wildcard_names(self, address: str) -> list[str]:
        """Names whose wildcard alias (``sales-*@example.com``) matches; only directories
        that store such aliases override this."""
        return []

    async def verify_password(self, principal: Principal, password: str) -> bool:
        """Check a password against the principal's secrets and app passwords.

        LDAP in bind mode overrides this with a bind as the user's DN.
        """
        from stalwart_mp.directory.passwords import verify_password

        secrets = principal.secrets + [a.secret for a in principal.app_passwords]
        # the otpauth:// entry is a TOTP secret, never a password (verify_password refuses it)
        return any(verify_password(stored, password) for stored in secrets)

    async def close(self) -> None:
        return None
