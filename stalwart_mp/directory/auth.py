"""Authentication for every protocol, with brute-force protection.

One path for all: a protocol's SASL exchange (``stalwart_mp/auth/sasl.py``) calls back into
``Authenticator``. Failures are counted in the lookup store (shared by every worker and,
with Redis or a shared database, every node): too many from one IP within a window ban the
IP (the worker then drops its connections at accept); too many against one account throttle
that account. Wrong password, unknown user and disabled account take the same time and give
the same answer, so a client cannot tell which it was.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, replace
from enum import Enum

from stalwart_mp.auth import totp
from stalwart_mp.directory.base import Directory, Principal, ScramSecret
from stalwart_mp.directory.passwords import hash_password, needs_rehash, verify_password

log = logging.getLogger("stalwart_mp.auth")

# Verified against when the user does not exist, so that unknown users cost the same time.
_DUMMY_HASH = hash_password("stalwart-mp timing equaliser")


class Failure(str, Enum):
    INVALID = "invalid-credentials"   # wrong password, unknown user or disabled: one answer
    BANNED = "banned"                 # the client IP is banned: drop the connection
    THROTTLED = "throttled"           # too many failures for this account: try later
    UNAVAILABLE = "unavailable"       # the directory cannot answer: temporary failure


@dataclass(slots=True)
class AuthResult:
    principal: Principal | None = None
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.principal is not None


@dataclass(slots=True)
class BanPolicy:
    """``auth.ban.*`` and ``auth.account.*`` settings."""

    ip_failures: int = 10
    ip_window: float = 600.0
    ban_duration: float = 3600.0
    account_failures: int = 20
    account_window: float = 600.0
    allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    rehash: bool = True

    @classmethod
    def from_config(cls, cfg) -> BanPolicy:
        return cls(
            ip_failures=cfg.get("auth.ban.failures"), ip_window=cfg.get("auth.ban.window"),
            ban_duration=cfg.get("auth.ban.duration"),
            account_failures=cfg.get("auth.account.failures"),
            account_window=cfg.get("auth.account.window"),
            allowed_networks=tuple(cfg.get("auth.ban.allowed-networks")),
            rehash=cfg.get("auth.rehash"),
        )


def ban_key(ip: str) -> bytes:
    return b"ban:ip:" + ip.encode()


class Authenticator:
    def __init__(self, directory: Directory, lookup, policy: BanPolicy | None = None,
                 manager=None):
        self.directory = directory
        self.lookup = lookup
        self.policy = policy or BanPolicy()
        self.manager = manager  # DirectoryManager of the internal directory, for rehash
        self._allowed = [ipaddress.ip_network(n, strict=False)
                         for n in self.policy.allowed_networks]

    # --- bans -----------------------------------------------------------------------

    def _exempt(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in self._allowed)

    async def is_banned(self, ip: str) -> bool:
        return not self._exempt(ip) and await self.lookup.get(ban_key(ip)) is not None

    async def ban(self, ip: str, reason: str) -> None:
        await self.lookup.set(ban_key(ip), reason.encode(), ttl=self.policy.ban_duration)
        log.warning("ip banned", extra={"fields": {"ip": ip, "reason": reason,
                                                    "seconds": self.policy.ban_duration}})

    async def unban(self, ip: str) -> bool:
        return await self.lookup.delete(ban_key(ip))

    async def _record_failure(self, ip: str, username: str) -> None:
        p = self.policy
        if not self._exempt(ip):
            count = await self.lookup.incr(b"authfail:ip:" + ip.encode(), 1, ttl=p.ip_window)
            if count >= p.ip_failures:
                await self.ban(ip, f"{count} failed authentications")
        await self.lookup.incr(b"authfail:acct:" + username.lower().encode(), 1,
                               ttl=p.account_window)

    async def _throttled(self, username: str) -> bool:
        raw = await self.lookup.get(b"authfail:acct:" + username.lower().encode())
        return raw is not None and int(raw) >= self.policy.account_failures

    # --- password authentication ----------------------------------------------------

    async def authenticate(self, username: str, password: str, ip: str) -> AuthResult:
        from stalwart_mp.directory.base import DirectoryUnavailable

        if await self.is_banned(ip):
            return AuthResult(failure=Failure.BANNED)
        if await self._throttled(username):
            log.info("authentication throttled", extra={"fields": {"user": username,
                                                                   "ip": ip}})
            return AuthResult(failure=Failure.THROTTLED)
        try:
            principal = await self.directory.principal(username)
            if principal is None:
                verify_password(_DUMMY_HASH, password)  # same cost as a real check
                ok = False
            elif principal.has_totp:
                ok, password = await self._verify_with_totp(principal, password)
            else:
                ok = await self.directory.verify_password(principal, password)
        except DirectoryUnavailable as exc:
            log.error("directory unavailable", extra={"fields": {"error": str(exc)}})
            return AuthResult(failure=Failure.UNAVAILABLE)
        if not ok or principal is None or principal.disabled:
            await self._record_failure(ip, username)
            log.info("authentication failed", extra={"fields": {"user": username, "ip": ip}})
            return AuthResult(failure=Failure.INVALID)
        await self._maybe_rehash(principal, password)
        return AuthResult(principal=principal)

    async def _verify_with_totp(self, principal: Principal, password: str
                                ) -> tuple[bool, str]:
        """An account with a second factor: an app password alone (what mail clients
        use), or ``<password>$<code>`` (Stalwart's convention) with a TOTP code of the
        current time step ±1 (RFC 6238 §5.2) not used before. The password alone fails.
        Returns (ok, the password part, for the rehash)."""
        if any(verify_password(a.secret, password) for a in principal.app_passwords):
            return True, password
        split = totp.split_code(password)
        if split is None:
            verify_password(_DUMMY_HASH, password)  # the cost of a wrong password
            return False, password
        base, code = split
        # the account's own secrets only: an app password followed by a code is no login
        if not await self.directory.verify_password(replace(principal, app_passwords=[]),
                                                    base):
            return False, base
        try:
            key = totp.parse_uri(principal.totp_uri or "")
        except ValueError:
            log.error("unusable totp secret", extra={"fields": {"user": principal.name}})
            return False, base
        step = key.verify(code, time.time())
        return (step is not None and await self._claim_step(principal.name, key, step)), base

    async def _claim_step(self, name: str, key: totp.TotpKey, step: int) -> bool:
        """Replay protection (RFC 6238 §5.2: a verifier MUST NOT accept an OTP a second
        time): a step at or before the last one accepted for the account is refused, and
        the per-step counter (atomic ``incr`` in the lookup store, shared by every worker)
        lets only the first of two concurrent logins with one code through."""
        account = name.lower().encode()
        ttl = key.period * (2 * totp.DRIFT + 2)  # longer than a code stays acceptable
        last = await self.lookup.get(b"totp:last:" + account)
        if last is not None and step <= int(last):
            log.warning("totp code replayed", extra={"fields": {"user": name}})
            return False
        if await self.lookup.incr(b"totp:used:" + account + b":" + str(step).encode(), 1,
                                  ttl=ttl) != 1:
            log.warning("totp code replayed", extra={"fields": {"user": name}})
            return False
        await self.lookup.set(b"totp:last:" + account, str(step).encode(), ttl=ttl)
        return True

    async def _maybe_rehash(self, principal: Principal, password: str) -> None:
        """Upgrade an old hash (imported accounts) to argon2id after a good login."""
        if not (self.policy.rehash and self.manager is not None):
            return
        for stored in principal.secrets:
            if verify_password(stored, password) and needs_rehash(stored):
                await self.manager.replace_secret(principal.name, stored,
                                                  hash_password(password))
                return

    # --- SASL callbacks -------------------------------------------------------------

    async def scram_secret(self, username: str, mechanism: str, ip: str
                           ) -> ScramSecret | None:
        """The stored SCRAM keys; None for unknown/disabled users and banned clients (the
        SASL module then runs the exchange with made-up keys, RFC 5802 §5.1)."""
        if await self.is_banned(ip) or await self._throttled(username):
            return None
        principal = await self.directory.principal(username)
        if principal is None or principal.disabled:
            return None
        if principal.has_totp:
            # SCRAM cannot carry the TOTP code and SCRAM keys exist for the password only
            # (app passwords have none): an account with a second factor cannot use it.
            return None
        return next((s for s in principal.scram if s.mechanism == mechanism), None)

    async def scram_outcome(self, username: str, ip: str, ok: bool) -> AuthResult:
        """Account for a finished SCRAM exchange (proof verified by the SASL module)."""
        if not ok:
            await self._record_failure(ip, username)
            return AuthResult(failure=Failure.INVALID)
        principal = await self.directory.principal(username)
        if principal is None or principal.disabled or principal.has_totp:
            return AuthResult(failure=Failure.INVALID)
        return AuthResult(principal=principal)
