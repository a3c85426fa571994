"""SPF (RFC 7208) for inbound SMTP: the MAIL FROM identity, or HELO when MAIL FROM is <>.

The evaluation is pyspf's (the reference implementation by the RFC's co-author, with the
RFC 7208 §4.6.4 lookup limits, macros and explanations). pyspf is blocking, so it runs on a
thread; its DNS queries come back to the event loop and go through our ``Resolver`` (cache,
configured servers, temporary failures as ``DnsTempError`` -> "temperror").
"""
from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import spf as pyspf

from stalwart_mp.dns.resolver import DnsTempError, Resolver

SpfVerdict = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]

# RFC 7208 §4.6.4 SHOULD: at least 20 seconds for the whole check
TOTAL_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class SpfResult:
    result: SpfVerdict
    domain: str  # the domain whose policy was checked (MAIL FROM's, or HELO's)
    explanation: str = ""
    scope: Literal["mailfrom", "helo"] = "mailfrom"  # RFC 7208 §2.3 / §2.4
    identity: str = ""  # the checked identity: the MAIL FROM address or "postmaster@<helo>"


class _Query(pyspf.query):
    """pyspf's query with its DNS lookups answered by our async resolver."""

    def __init__(self, lookup: Callable[[str, str], list], **kwargs: Any):
        super().__init__(**kwargs)
        self._lookup = lookup

    def dns(self, name: str, qtype: str, cnames: Any = None, ignore_void: bool = False) -> list:
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # RFC 7208 §4.3: a malformed domain gives no result
        key = (name, qtype)
        if key not in self.cache:
            try:
                self.cache[key] = self._lookup(name, qtype)
            except DnsTempError as exc:  # RFC 7208 §5: "temperror", not "no record"
                raise pyspf.TempError(str(exc)) from None
        result = self.cache[key]
        if not result and not ignore_void:
            # RFC 7208 §4.6.4: at most 2 lookups with no answer
            self.void_lookups += 1
            if self.void_lookups > pyspf.MAX_VOID_LOOKUPS:
                raise pyspf.PermError(
                    f"Void lookup limit of {pyspf.MAX_VOID_LOOKUPS} exceeded"
                )
        return result


async def _lookup(resolver: Resolver, name: str, qtype: str) -> list:
    """One lookup in the shapes pyspf's ``query.dns`` returns."""
    if qtype == "TXT":
        return [[t.encode("utf-8", "surrogateescape")] for t in await resolver.txt(name)]
    if qtype == "A":
        return await resolver.a(name)
    if qtype == "AAAA":
        return await resolver.aaaa(name)
    if qtype == "MX":
        return [(pref, host) for pref, host in await resolver.mx(name) if host != "."]
    if qtype == "PTR":
        # pyspf asks with the reverse name; our resolver takes the address
        return await resolver.ptr(_address_of(name))
    return []  # the SPF RR type (99) is obsolete (RFC 7208 §3.1)


def _address_of(reverse: str) -> str:
    labels = reverse.split(".")
    if reverse.endswith(".in-addr.arpa"):
        return ".".join(reversed(labels[:-2]))
    nibbles = "".join(reversed(labels[:-2]))
    return str(ipaddress.IPv6Address(int(nibbles, 16)))


def _bridge(loop: asyncio.AbstractEventLoop, resolver: Resolver) -> Callable[[str, str], list]:
    def lookup(name: str, qtype: str) -> list:
        coro: Awaitable[list] = _lookup(resolver, name, qtype)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()  # type: ignore[arg-type]

    return lookup


async def check_spf(ip: str, helo: str, mail_from: str, resolver: Resolver,
                    receiver: str = "unknown") -> SpfResult:
    """The SPF result of a client at ``ip`` sending ``MAIL FROM:<mail_from>`` after ``helo``.

    With a null reverse-path (``mail_from == ""``) the HELO identity is checked
    (RFC 7208 §2.4: as the MAIL FROM "postmaster@<helo>").
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # RFC 7208 §5: the IPv4 mechanisms then apply
    mail_from = mail_from.strip("<>")
    scope: Literal["mailfrom", "helo"] = "mailfrom" if mail_from else "helo"
    if scope == "mailfrom" and "@" not in mail_from:
        mail_from = "postmaster@" + mail_from  # RFC 7208 §4.3
    identity = mail_from or f"postmaster@{helo}"
    domain = identity.rpartition("@")[2].rstrip(".").lower()
    if not domain:
        return SpfResult("none", "", "no domain to check", scope, identity)
    query = _Query(_bridge(asyncio.get_running_loop(), resolver),
                   i=str(address), s=mail_from, h=helo, receiver=receiver)
    try:
        async with asyncio.timeout(TOTAL_TIMEOUT):
            result, _code, explanation = await asyncio.to_thread(query.check)
    except TimeoutError:
        return SpfResult("temperror", domain, "SPF check took too long", scope, identity)
    return SpfResult(result, domain, explanation or "", scope, identity)
