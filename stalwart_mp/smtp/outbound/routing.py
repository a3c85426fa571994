"""Where mail for a recipient domain goes: a configured route, a smarthost, or the MX hosts.

RFC 5321 §5.1: the MX records in preference order (equal preferences shuffled); no MX
records → the domain's own A/AAAA ("implicit MX"). RFC 7505: a single MX of "." (null MX)
means the domain accepts no mail — a permanent failure at once (556 5.1.10), no retries.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from stalwart_mp.dns.resolver import DnsTempError


@dataclass(frozen=True, slots=True)
class Hop:
    """One host to try, with its addresses."""

    host: str
    ips: list[str]
    port: int
    tls: str                   # "opportunistic" | "starttls" | "implicit" | "none"
    username: str = ""
    password: str = ""
    ca_file: str = ""          # CAs that verify this host ("" = the system's)
    dane: tuple | None = None  # usable TLSA records of an authenticated answer (dane.py)
    mx_secure: bool = False    # found through a DNSSEC-secure MX answer (or its secure absence)


@dataclass(frozen=True, slots=True)
class Route:
    """A fixed next hop (smarthost or per-domain route) by name."""

    host: str
    port: int
    tls: str
    username: str = ""
    password: str = ""
    ca_file: str = ""


class NoRoute(Exception):
    """No host can take mail for the domain. ``permanent``: do not retry."""

    def __init__(self, code: int, text: str, permanent: bool):
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.permanent = permanent


@dataclass(slots=True)
class Router:
    resolver: object            # stalwart_mp.dns.resolver.Resolver
    port: int = 25
    tls: str = "opportunistic"
    relay: Route | None = None
    routes: dict[str, Route] | None = None
    ca_file: str = ""           # CAs that verify MX hosts when verification is asked

    @classmethod
    def from_config(cls, cfg, resolver) -> Router:
        relay = None
        if cfg.get("outbound.relay.host"):
            relay = Route(cfg.get("outbound.relay.host"), cfg.get("outbound.relay.port"),
                          cfg.get("outbound.relay.tls"), cfg.get("outbound.relay.username"),
                          cfg.get("outbound.relay.password"), cfg.get("outbound.relay.ca-file"))
        routes = {}
        for domain in cfg.names("outbound.route"):
            def get(key: str, default=None, domain=domain):
                # a path, not a dotted string: the domain holds dots itself
                return cfg.get(("outbound", "route", domain, key), default)
            routes[domain.lower().rstrip(".")] = Route(
                get("host"), get("port", 25), get("tls", "opportunistic"),
                get("username", ""), get("password", ""), get("ca-file", ""))
        return cls(resolver, cfg.get("outbound.port"), cfg.get("outbound.tls"), relay, routes,
                   cfg.get("outbound.ca-file"))

    def routed(self, domain: str) -> bool:
        """Whether mail for ``domain`` goes to a configured host (not its MX)."""
        return self.relay is not None or domain.lower().rstrip(".") in (self.routes or {})

    async def hops(self, domain: str) -> list[Hop]:
        """The hosts to try in order; NoRoute when there are none."""
        domain = domain.lower().rstrip(".")
        route = (self.routes or {}).get(domain) or self.relay
        if route is not None:
            ips = await self._addresses(route.host)
            if not ips:
                raise NoRoute(451, f"4.4.4 route host {route.host} has no address", False)
            return [Hop(route.host, ips, route.port, route.tls, route.username,
                        route.password, route.ca_file)]
        try:
            answer = await self.resolver.mx_answer(domain)
        except DnsTempError as exc:
            raise NoRoute(451, f"4.4.3 {exc}", False) from None
        mx = answer.records
        if any(host == "." for _, host in mx):
            if len(mx) == 1:  # RFC 7505 §3: the only record; §4.2: 556 5.1.10
                raise NoRoute(556, f"5.1.10 {domain} does not accept mail (null MX)", True)
            mx = [(p, h) for p, h in mx if h != "."]
        hosts = _ordered(mx) if mx else [domain]  # RFC 5321 §5.1 implicit MX
        hops = []
        for host in hosts:
            ips = await self._addresses(host)
            if ips:
                hops.append(Hop(host, ips, self.port, self.tls, ca_file=self.ca_file,
                                mx_secure=answer.authentic))
        if not hops:
            if not mx:
                raise NoRoute(550, f"5.1.2 {domain} has no MX and no address", True)
            raise NoRoute(451, f"4.4.4 no MX host of {domain} has an address", False)
        return hops

    async def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]  # an address literal
        except ValueError:
            pass
        try:
            return [*await self.resolver.a(host), *await self.resolver.aaaa(host)]
        except DnsTempError:
            return []


def _ordered(mx: list[tuple[int, str]]) -> list[str]:
    """Hosts by preference, equal preferences in random order (RFC 5321 §5.1)."""
    return [h for _, _, h in sorted((p, random.random(), h) for p, h in mx)]
