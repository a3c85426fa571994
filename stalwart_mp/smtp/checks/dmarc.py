"""DMARC evaluation (RFC 7489): policy discovery, identifier alignment, result.

Our own code, small and async: authheaders' DMARC module treats SERVFAIL as "no record",
takes a single DKIM result and re-reads the Public Suffix List on every call. The
organizational domain (RFC 7489 §3.2) comes from the ``publicsuffixlist`` package, which
ships a current copy of the Public Suffix List (loaded once per process).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from publicsuffixlist import PublicSuffixList

from stalwart_mp.dns.resolver import DnsTempError, Resolver
from stalwart_mp.smtp.checks.dkim_verify import DkimResult
from stalwart_mp.smtp.checks.spf import SpfResult

DmarcVerdict = Literal["pass", "fail", "none", "temperror", "permerror"]
Policy = Literal["none", "quarantine", "reject"]
_POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The tags of a DMARC record that evaluation uses (RFC 7489 §6.3)."""

    p: Policy
    sp: Policy
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"
    pct: int = 100


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: DmarcVerdict
    policy: Policy  # the policy the record asks for this From domain (p=, or sp= §6.6.3)
    domain: str  # the RFC5322.From domain
    record_domain: str = ""  # where the record was found (From or organizational domain)
    spf_aligned: bool = False
    dkim_aligned: bool = False
    pct: int = 100  # RFC 7489 §6.6.4: the share of failing mail the policy applies to
    reason: str = ""


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (the domain itself if it is a suffix)."""
    domain = domain.rstrip(".").lower()
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    """RFC 7489 §3.1.1/§3.1.2: strict = same name; relaxed = same organizational domain."""
    a, b = a.rstrip(".").lower(), b.rstrip(".").lower()
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC record, or None when it is not one that can be applied (RFC 7489 §6.6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1":  # RFC 7489 §6.4: "v" first, case-sensitive
        return None
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        # §6.6.3 step 6: no valid p= but a valid rua= -> act as p=none; else no DMARC
        if "mailto:" not in tags.get("rua", "").lower():
            return None
        p = "none"
    sp = tags.get("sp", p).lower()
    if sp not in _POLICIES:
        sp = p
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    pct_text = tags.get("pct", "100")
    pct = min(100, int(pct_text)) if pct_text.isdigit() else 100
    return DmarcRecord(p, sp, adkim, aspf, pct)  # type: ignore[arg-type]


async def _lookup(domain: str, resolver: Resolver) -> DmarcRecord | None:
    texts = [t for t in await resolver.txt(f"_dmarc.{domain}") if t.startswith("v=DMARC1")]
    if len(texts) != 1:  # §6.6.3 step 3: several records -> no DMARC
        return None
    return parse_record(texts[0])


async def evaluate_dmarc(from_domain: str, spf: SpfResult | None, dkim: Sequence[DkimResult],
                         resolver: Resolver) -> DmarcResult:
    """The DMARC result for a message whose RFC5322.From domain is ``from_domain``."""
    domain = from_domain.rstrip(".").lower()
    if not domain:
        return DmarcResult("permerror", "none", "", reason="no From domain")
    org = organizational_domain(domain)
    try:
        # RFC 7489 §6.6.3: the From domain's record, else the organizational domain's
        record, record_domain = await _lookup(domain, resolver), domain
        if record is None and org != domain:
            record, record_domain = await _lookup(org, resolver), org
    except DnsTempError as exc:
        return DmarcResult("temperror", "none", domain, reason=exc.reason)
    if record is None:
        return DmarcResult("none", "none", domain)
    # §6.3 sp=: the policy for subdomains, when the record came from the org domain
    policy = record.p if record_domain == domain else record.sp
    # RFC 7489 §4.2: SPF counts when it passed for an aligned identity (MAIL FROM, or HELO
    # for a null reverse-path, §3.1.2)
    spf_ok = spf is not None and spf.result == "pass" and aligned(
        spf.domain, domain, record.aspf)
    dkim_ok = any(d.result == "pass" and aligned(d.domain, domain, record.adkim) for d in dkim)
    return DmarcResult(
        "pass" if spf_ok or dkim_ok else "fail", policy, domain, record_domain,
        spf_ok, dkim_ok, record.pct,
    )
