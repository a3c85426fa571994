"""Connection and envelope policy of the MX: DNS blocklists and greylisting.

DNSBL (RFC 5782): the client address, reversed (IPv4 octets, IPv6 nibbles), is looked up
under each configured zone; an answer in 127.0.0.0/8 means listed. A zone that cannot be
reached fails open (logged): a blocklist outage must not stop mail.

Greylisting: the first delivery attempt of an unknown (client network, sender, recipient)
triplet is deferred with 451 4.7.1; a retry after ``delay`` passes, and the triplet is then
remembered for ``ttl``. Real MTAs retry; most spam engines do not. The triplets live in the
lookup store, so every worker and node shares them.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import struct
import time

from stalwart_mp.dns.resolver import DnsTempError

log = logging.getLogger("stalwart_mp.smtp")


def dnsbl_name(ip: str, zone: str) -> str:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        labels = ".".join(reversed(str(addr).split(".")))
    else:  # RFC 5782 §2.4: nibbles, least significant first
        labels = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{labels}.{zone.strip('.')}"


async def dnsbl_listing(ip: str, zones: list[str], resolver) -> str | None:
    """The first zone listing ``ip``, or None."""
    for zone in zones:
        try:
            answers = await resolver.a(dnsbl_name(ip, zone))
        except DnsTempError as exc:
            log.warning("DNSBL lookup failed; not applied", extra={"fields": {
                "zone": zone, "error": str(exc)}})
            continue
        # RFC 5782 §2.1: listed = an A record in 127.0.0.0/8 (127.0.0.1 is the test entry)
        if any(ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8") for a in answers):
            return zone
    return None


def _triplet_key(ip: str, mail_from: str, rcpt: str) -> bytes:
    addr = ipaddress.ip_address(ip)
    # a sending farm retries from another address of its network: key on /24 or /64
    net = ipaddress.ip_network(f"{ip}/{24 if addr.version == 4 else 64}", strict=False)
    digest = hashlib.blake2b(f"{net}|{mail_from.lower()}|{rcpt.lower()}".encode(),
                             digest_size=16).digest()
    return b"grey:" + digest


async def greylisted(lookup, ip: str, mail_from: str, rcpt: str, delay: float,
                     ttl: float) -> bool:
    """True when this attempt must be deferred (451 4.7.1)."""
    key = _triplet_key(ip, mail_from, rcpt)
    now = time.time()
    raw = await lookup.get(key)
    if raw is None:
        await lookup.set(key, struct.pack(">d", now), ttl=max(ttl, delay * 2))
        return True
    first_seen = struct.unpack(">d", raw)[0]
    if now - first_seen < delay:
        return True
    await lookup.set(key, raw, ttl=ttl)  # known good: remember it for another ttl
    return False
