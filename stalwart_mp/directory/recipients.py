"""Recipient resolution: from an envelope address to the accounts that receive it.

Order (as Stalwart resolves): the exact address or alias; the address without its
``+tag`` (plus-addressing, RFC 5233 sub-addressing; the tag can name a folder); a wildcard
alias; the domain's catch-all (``@domain``). Lists expand to their member addresses (local
ones resolved again, with a depth limit against loops); groups to their members.
Used by SMTP RCPT and LMTP (issue "SMTP inbound") and by delivery.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from stalwart_mp.directory.base import Directory, PrincipalType

MAX_EXPANSION_DEPTH = 5


class Outcome(str, Enum):
    LOCAL = "local"            # deliver to ``accounts`` (and forward to ``external``)
    UNKNOWN_USER = "unknown"   # our domain, nobody there: 550 5.1.1
    DISABLED = "disabled"      # an account that may not receive: 550 5.2.1
    NOT_LOCAL = "not-local"    # not our domain: relay decision belongs to the caller


@dataclass(slots=True)
class Resolution:
    address: str
    outcome: Outcome
    accounts: list[str] = field(default_factory=list)   # principal names
    external: list[str] = field(default_factory=list)   # list members outside our domains
    detail: str | None = None                           # the +tag, if any


def normalize(address: str) -> str:
    """Lower-case an address and strip angle brackets and a trailing dot of the domain."""
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    return f"{local}@{domain.rstrip('.')}".lower() if at else address.lower()


async def resolve(directory: Directory, address: str, *, sub_addressing: bool = True,
                  separator: str = "+") -> Resolution:
    """Resolve one address; raises DirectoryUnavailable when the directory can't answer."""
    address = normalize(address)
    local, _, domain = address.rpartition("@")
    names, detail = await _owners(directory, local, domain, sub_addressing, separator)
    if not names:
        if await directory.is_local_domain(domain):
            return Resolution(address, Outcome.UNKNOWN_USER)
        return Resolution(address, Outcome.NOT_LOCAL)
    result = Resolution(address, Outcome.LOCAL, detail=detail)
    await _expand(directory, names, result, seen={address}, depth=0)
    if not result.accounts and not result.external:
        result.outcome = Outcome.DISABLED
    return result


async def _owners(directory: Directory, local: str, domain: str, sub_addressing: bool,
                  separator: str) -> tuple[list[str], str | None]:
    address = f"{local}@{domain}"
    names = await directory.names_by_email(address)
    if names:
        return names, None
    if sub_addressing and separator in local:
        base, _, tag = local.partition(separator)
        names = await directory.names_by_email(f"{base}@{domain}")
        if names:
            return names, tag or None
    names = await directory.wildcard_names(address)
    if names:
        return names, None
    return await directory.names_by_email(f"@{domain}"), None


async def _expand(directory: Directory, names: list[str], result: Resolution,
                  seen: set[str], depth: int) -> None:
    for name in names:
        p = await directory.principal(name)
        if p is None:
            continue
        if p.type == PrincipalType.INDIVIDUAL:
            if not p.disabled and p.name not in result.accounts:
                result.accounts.append(p.name)
        elif p.type == PrincipalType.GROUP and depth < MAX_EXPANSION_DEPTH:
            await _expand(directory, await directory.members(p.name), result, seen, depth + 1)
        elif p.type == PrincipalType.LIST and depth < MAX_EXPANSION_DEPTH:
            for member in await directory.members(p.name):
                member = normalize(member)
                if member in seen:
                    continue
                seen.add(member)
                local, _, domain = member.rpartition("@")
                if await directory.is_local_domain(domain):
                    owners, _ = await _owners(directory, local, domain, True, "+")
                    await _expand(directory, owners, result, seen, depth + 1)
                elif member not in result.external:
                    result.external.append(member)
