"""Compare the records a domain needs with what the live DNS publishes.

Each record of ``dns_records.build_records`` is looked up with the resolver of the
``[resolver]`` settings (``stalwart_mp/dns``), without a cache so a record published a
minute ago is seen. The outcome per record:

- published: a record of that type at that name has the generated value (TXT values are
  compared tag by tag, whitespace ignored, RFC 6376 §3.2; an MX by its target host);
- missing: nothing of that kind there (TXT: no record of the same kind, "v=spf1",
  "v=DMARC1"...; unrelated TXT records such as site verifications are ignored);
- different: a record of that kind is there, with another value (listed in ``found``);
- error: the lookup failed (timeout, SERVFAIL): the answer is unknown.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import dns.rdatatype

from stalwart_mp.control.dns_records import DnsRecord
from stalwart_mp.dns.resolver import DnsTempError, Resolver, ResolverConfig

_SPACES = re.compile(r"\s+")


class RecordStatus(str, Enum):
    PUBLISHED = "published"
    MISSING = "missing"
    DIFFERENT = "different"
    ERROR = "error"


@dataclass(slots=True)
class RecordCheck:
    record: DnsRecord
    status: RecordStatus
    found: list[str] = field(default_factory=list)
    error: str = ""


class LiveDns(Resolver):
    """The mail checks' resolver, answering any record type in presentation form."""

    @classmethod
    def uncached(cls, cfg: Any) -> LiveDns:
        return cls(dataclasses.replace(ResolverConfig.from_config(cfg), cache_size=0))

    async def values(self, name: str, rdtype: str) -> list[str]:
        """The records at ``name`` as DnsRecord values; [] for none; DnsTempError if unknown."""
        answer = await self._query(name, rdtype)
        if answer is None or answer.rrset is None:
            return []
        if answer.rrset.rdtype != dns.rdatatype.from_text(rdtype):
            return []  # a CNAME chain ending elsewhere than at this type
        return [_presentation(rdtype, r) for r in answer]


def _presentation(rdtype: str, rdata: Any) -> str:
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == "TLSA":
        return f"{rdata.usage} {rdata.selector} {rdata.mtype} {bytes(rdata.cert).hex()}"
    return rdata.to_text().lower()


def _tags(value: str) -> dict[str, str]:
    """A tag list ("v=DKIM1; k=rsa; p=...") as a dict, whitespace removed (RFC 6376 §3.2)."""
    tags = {}
    for part in value.split(";"):
        name, eq, tag_value = part.partition("=")
        if eq:
            tags[_SPACES.sub("", name).lower()] = _SPACES.sub("", tag_value)
    return tags


def _txt_kind(value: str) -> str:
    """What a TXT record is: "spf1", "dkim1", "dmarc1", "stsv1", "tlsrptv1" or ""."""
    text = value.strip()
    if text.lower().startswith("v=spf1") and (len(text) == 6 or text[6].isspace()):
        return "spf1"
    tags = _tags(text)
    if "v" in tags:
        return tags["v"].lower()
    return "dkim1" if "p" in tags else ""  # RFC 6376 §3.6.1: v= is optional in key records


def _same(record: DnsRecord, found: str) -> bool:
    if record.type == "TXT":
        if _txt_kind(record.value) == "spf1":
            return _SPACES.sub(" ", found.strip()) == record.value
        return _tags(found) == _tags(record.value)
    if record.type == "MX":  # the target host is what matters, not the preference
        return found.split()[-1:] == record.value.lower().split()[-1:]
    return found.split() == record.value.lower().split()


async def check_records(records: Sequence[DnsRecord], resolver: LiveDns) -> list[RecordCheck]:
    """One RecordCheck per record, in order; every distinct lookup is made once, in parallel."""
    wanted = list(dict.fromkeys((r.name, r.type) for r in records))

    async def lookup(name: str, rdtype: str) -> list[str] | DnsTempError:
        try:
            return await resolver.values(name, rdtype)
        except DnsTempError as exc:
            return exc

    answers = dict(zip(wanted, await asyncio.gather(*(lookup(n, t) for n, t in wanted))))
    checks = []
    for record in records:
        answer = answers[(record.name, record.type)]
        if isinstance(answer, DnsTempError):
            checks.append(RecordCheck(record, RecordStatus.ERROR, error=str(answer)))
            continue
        if record.type == "TXT":
            kind = _txt_kind(record.value)
            answer = [v for v in answer if _txt_kind(v) == kind]
        if any(_same(record, value) for value in answer):
            status = RecordStatus.PUBLISHED
        else:
            status = RecordStatus.DIFFERENT if answer else RecordStatus.MISSING
        checks.append(RecordCheck(record, status, answer))
    return checks
