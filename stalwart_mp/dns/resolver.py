"""An async DNS resolver for the mail checks, on dnspython's ``dns.asyncresolver``.

Every lookup returns plain Python values. A name that does not exist (NXDOMAIN) or has no
record of the type asked (NODATA) gives an empty list; a lookup that could not be completed
(timeout, SERVFAIL/REFUSED from every server) raises ``DnsTempError``: the checks then answer
"temperror", never "does not exist" (RFC 7208 §5 / RFC 6376 §6.1.2 / RFC 7489 §6.6.3).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from stalwart_mp.dns.settings import parse_nameserver


class DnsTempError(Exception):
    """A lookup that could not be completed: the answer is unknown, try again later."""

    def __init__(self, name: str, rdtype: str, reason: str):
        super().__init__(f"DNS {rdtype} lookup of {name} failed temporarily: {reason}")
        self.name = name
        self.rdtype = rdtype
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """The ``[resolver]`` settings (see ``stalwart_mp.dns.settings``)."""

    nameservers: list[str] = field(default_factory=list)  # [] = /etc/resolv.conf
    timeout: float = 5.0
    attempts: int = 2
    cache_size: int = 10000
    dnssec: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> ResolverConfig:
        return cls(
            nameservers=list(cfg.get("resolver.nameservers", [])),
            timeout=float(cfg.get("resolver.timeout", 5.0)),
            attempts=int(cfg.get("resolver.attempts", 2)),
            cache_size=int(cfg.get("resolver.cache-size", 10000)),
            dnssec=bool(cfg.get("resolver.dnssec", False)),
        )


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    """One TLSA record (RFC 6698 §2.1)."""

    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """TLSA records and whether the resolver vouched for them (AD bit, RFC 4035 §3.2.3).

    DANE (RFC 7672 §2.2) may use the records only when ``authentic`` is true.
    """

    records: list[TlsaRecord]
    authentic: bool


@dataclass(frozen=True, slots=True)
class MxAnswer:
    """(preference, host) records sorted by preference, and whether the resolver vouched
    for them (AD bit)."""

    records: list[tuple[int, str]]
    authentic: bool


class Resolver:
    """Async lookups used by the mail checks; one per worker (it owns the cache)."""

    def __init__(self, config: ResolverConfig | None = None):
        self.config = config = config or ResolverConfig()
        res = dns.asyncresolver.Resolver(configure=not config.nameservers)
        if config.nameservers:
            servers: list[str | dns.nameserver.Nameserver] = []
            for text in config.nameservers:
                ip, port = parse_nameserver(text)
                servers.append(dns.nameserver.Do53Nameserver(ip, port))
            res.nameservers = servers
        # dnspython asks the servers in turn until ``lifetime`` runs out; each try waits
        # ``timeout`` at most.
        res.timeout = config.timeout
        res.lifetime = config.timeout * config.attempts
        if config.dnssec:
            # RFC 3225 DO bit, RFC 6840 §5.7 AD bit in the query
            res.use_edns(0, dns.flags.DO, 1232)
            res.flags = dns.flags.RD | dns.flags.AD
        else:
            res.use_edns(0, 0, 1232)
        # dnspython's LRU cache keeps each answer (also NODATA/NXDOMAIN) for its TTL.
        res.cache = dns.resolver.LRUCache(config.cache_size) if config.cache_size else None
        self._res = res

    @classmethod
    def from_config(cls, cfg: Any) -> Resolver:
        return cls(ResolverConfig.from_config(cfg))

    async def _query(self, name: str | dns.name.Name, rdtype: str,
                     keep_empty: bool = False) -> dns.resolver.Answer | None:
        """The answer, or None for NXDOMAIN/NODATA/an impossible name; DnsTempError else.
        ``keep_empty``: a NODATA answer is returned too (its flags tell if it is secure)."""
        try:
            qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
        except (dns.exception.DNSException, ValueError):
            return None  # empty or over-long label: a name that cannot exist
        try:
            answer = await self._res.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return None
        except dns.resolver.NoNameservers as exc:  # SERVFAIL / REFUSED from every server
            raise DnsTempError(str(qname), rdtype, _short_reason(exc)) from None
        except dns.exception.Timeout:
            raise DnsTempError(str(qname), rdtype, "timed out") from None
        except dns.exception.DNSException as exc:
            raise DnsTempError(str(qname), rdtype, _short_reason(exc)) from None
        if answer.rrset is None and not keep_empty:
            return None
        return answer

    async def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2).

        Bytes that are not UTF-8 survive as surrogates: ``s.encode("utf-8",
        "surrogateescape")`` gives the record's bytes back.
        """
        answer = await self._query(name, "TXT")
        if answer is None:
            return []
        return [
            b"".join(r.strings).decode("utf-8", "surrogateescape") for r in answer
        ]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, host) sorted by preference; a null MX (RFC 7505) is (0, ".")."""
        return (await self.mx_answer(name)).records

    async def mx_answer(self, name: str) -> MxAnswer:
        """The MX records and whether the resolver vouched for the answer, or for the
        absence of MX records (NODATA with the AD bit); an NXDOMAIN counts as not vouched
        for. DANE applies to MX hosts only from a secure answer (RFC 7672 §2.2.1)."""
        answer = await self._query(name, "MX", keep_empty=True)
        if answer is None:
            return MxAnswer([], False)
        authentic = bool(answer.response.flags & dns.flags.AD)
        if answer.rrset is None:
            return MxAnswer([], authentic)
        return MxAnswer(sorted((r.preference, _host(r.exchange)) for r in answer), authentic)

    async def a(self, name: str) -> list[str]:
        answer = await self._query(name, "A")
        return [] if answer is None else [r.address for r in answer]

    async def aaaa(self, name: str) -> list[str]:
        answer = await self._query(name, "AAAA")
        return [] if answer is None else [r.address for r in answer]

    async def ptr(self, ip: str) -> list[str]:
        """Names of ``ip`` (RFC 1035 §3.5 in-addr.arpa, RFC 3596 §2.5 ip6.arpa)."""
        address = ipaddress.ip_address(ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        answer = await self._query(dns.reversename.from_address(str(address)), "PTR")
        return [] if answer is None else [_host(r.target) for r in answer]

    async def tlsa(self, name: str) -> TlsaAnswer:
        """TLSA records at ``name`` (e.g. "_25._tcp.mx.example.com", RFC 7672 §2.2.3)."""
        answer = await self._query(name, "TLSA")
        if answer is None:
            return TlsaAnswer([], False)
        records = [TlsaRecord(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer]
        authentic = bool(answer.response.flags & dns.flags.AD)
        return TlsaAnswer(records, authentic)


def _host(name: dns.name.Name) -> str:
    if name == dns.name.root:
        return "."
    return name.to_text(omit_final_dot=True).lower()


def _short_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
