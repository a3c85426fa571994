"""iprev (RFC 8601 §3): the client's address has a PTR name that resolves back to it."""
from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Literal

from stalwart_mp.dns.resolver import DnsTempError, Resolver

IprevVerdict = Literal["pass", "fail", "temperror"]
MAX_NAMES = 10  # as RFC 7208 §4.6.4 for "ptr": more PTR names are not looked up


@dataclass(frozen=True, slots=True)
class IprevResult:
    result: IprevVerdict
    ip: str
    ptr: str = ""  # the confirmed name (pass), else the first PTR name if any


async def check_iprev(ip: str, resolver: Resolver) -> IprevResult:
    """PTR lookup of ``ip``, then A/AAAA lookups of each name, looking for ``ip`` again."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    try:
        names = (await resolver.ptr(str(address)))[:MAX_NAMES]
    except DnsTempError:
        return IprevResult("temperror", str(address))
    if not names:
        return IprevResult("fail", str(address))
    forward = resolver.a if address.version == 4 else resolver.aaaa
    answers = await asyncio.gather(*(forward(n) for n in names), return_exceptions=True)
    temp = False
    for name, found in zip(names, answers, strict=True):
        if isinstance(found, DnsTempError):
            temp = True
        elif isinstance(found, BaseException):
            raise found
        elif any(ipaddress.ip_address(a) == address for a in found):
            return IprevResult("pass", str(address), name)
    # RFC 8601 §3: a forward lookup that could not be done leaves the answer unknown
    return IprevResult("temperror" if temp else "fail", str(address), names[0])
