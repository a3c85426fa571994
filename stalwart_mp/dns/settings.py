"""Settings of the DNS resolver used by the mail checks (``[resolver]``)."""
from __future__ import annotations

from typing import Any

from stalwart_mp.config.schema import (
    SCHEMA,
    Bool,
    Duration,
    Int,
    Invalid,
    ListOf,
    Setting,
    Str,
)


def parse_nameserver(value: str) -> tuple[str, int]:
    """ "192.0.2.1", "192.0.2.1:5353", "2001:db8::1" or "[2001:db8::1]:5353" -> (ip, port).

    ValueError when the text is none of those.
    """
    import ipaddress

    text = value.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(value)
        if rest:
            port = int(rest[1:]) if rest[1:].isdigit() else -1
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text) if port_text.isdigit() else -1
    ipaddress.ip_address(host)
    if not 0 < port <= 65535:
        raise ValueError(value)
    return host, port


class Nameserver(Str):
    label = 'a name server address such as "192.0.2.53", "127.0.0.1:5353" or "[::1]:53"'

    def parse(self, value: Any) -> str:
        value = super().parse(value)
        try:
            parse_nameserver(value)
        except ValueError:
            raise Invalid(f"expected {self.label}") from None
        return value


SCHEMA.add(
    Setting(
        "resolver.nameservers", ListOf(Nameserver()), [],
        "Recursive name servers asked by the mail checks (SPF, DKIM, DMARC, iprev), as IP or "
        "IP:port. Empty: the servers of /etc/resolv.conf.",
    ),
    Setting(
        "resolver.timeout", Duration(), 5.0,
        "How long to wait for one name server's answer before asking again.",
    ),
    Setting(
        "resolver.attempts", Int(min=1, max=10), 2,
        "Tries per query; a query that gets no answer within timeout x attempts is a "
        "temporary failure (never taken as 'does not exist').",
    ),
    Setting(
        "resolver.cache-size", Int(min=0, max=10_000_000), 10000,
        "Answers kept in each worker's DNS cache (least recently used first out; each for its "
        "TTL). 0 turns the cache off.",
    ),
    Setting(
        "resolver.dnssec", Bool(), False,
        "Ask for DNSSEC (EDNS0 with the DO bit, RFC 3225) and read the AD bit of answers. "
        "Needed by DANE (RFC 7672); only meaningful with a validating resolver on a trusted "
        "path, such as one on 127.0.0.1.",
    ),
)
