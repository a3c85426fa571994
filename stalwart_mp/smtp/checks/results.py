"""The Authentication-Results header field (RFC 8601) for the checks of one message."""
from __future__ import annotations

import re
from collections.abc import Sequence

from stalwart_mp.smtp.checks.dkim_verify import ArcResult, DkimResult
from stalwart_mp.smtp.checks.dmarc import DmarcResult
from stalwart_mp.smtp.checks.iprev import IprevResult
from stalwart_mp.smtp.checks.spf import SpfResult

# RFC 2045 §5.1 token; RFC 5322 §3.2.3 dot-atom for the local part of an address pvalue
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_DOT_ATOM = re.compile(r"[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+(\.[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+)*")
_DOMAIN = re.compile(r"[0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*\.?")
_FOLD = ";\r\n\t"


def _pvalue(text: str) -> str:
    """RFC 8601 §2.2 pvalue: a token, an address/domain, or else a quoted-string."""
    local, at, domain = text.rpartition("@")
    if at and _DOMAIN.fullmatch(domain) and (not local or _DOT_ATOM.fullmatch(local)):
        return text
    if _TOKEN.fullmatch(text):
        return text
    return _quoted(text)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    """RFC 5322 §3.2.2 comment, parentheses and backslashes escaped."""
    text = " ".join(text.split())
    return "(" + re.sub(r"([()\\])", r"\\\1", text) + ")"


def _iprev(r: IprevResult) -> str:
    # RFC 8601 §2.7.3: the property is policy.iprev, the address checked
    out = f"iprev={r.result} policy.iprev={_pvalue(r.ip)}"
    return out + (f" {_comment(r.ptr)}" if r.ptr else "")


def _spf(r: SpfResult) -> str:
    # RFC 8601 §2.7.2: smtp.mailfrom, or smtp.helo when the HELO identity was checked
    out = f"spf={r.result}"
    if r.result not in ("pass", "none") and r.explanation:
        out += f" reason={_quoted(r.explanation)}"
    if r.scope == "helo":
        return out + f" smtp.helo={_pvalue(r.identity.rpartition('@')[2] or r.domain)}"
    return out + f" smtp.mailfrom={_pvalue(r.identity or r.domain)}"


def _dkim(r: DkimResult) -> str:
    # RFC 8601 §2.7.1: header.d, header.s (RFC 6008 §3), header.a (RFC 8601 §2.7.1)
    out = f"dkim={r.result}"
    if r.reason and r.result != "pass":
        out += f" reason={_quoted(r.reason)}"
    out += f" header.d={_pvalue(r.domain)}" if r.domain else ""
    out += f" header.s={_pvalue(r.selector)}" if r.selector else ""
    return out + (f" header.a={_pvalue(r.algorithm)}" if r.algorithm else "")


def _arc(r: ArcResult) -> str:
    # RFC 8617 §7.2: "arc" method; header.oldest-pass is optional and not given
    return f"arc={r.chain}"


def _dmarc(r: DmarcResult) -> str:
    # RFC 7489 §11.2: dmarc method, header.from property; policy as a comment
    out = f"dmarc={r.result}"
    if r.result in ("pass", "fail"):
        out += " " + _comment(f"p={r.policy}" + (f" pct={r.pct}" if r.pct != 100 else ""))
    return out + (f" header.from={_pvalue(r.domain)}" if r.domain else "")


def authentication_results(hostname: str, spf: SpfResult | None = None,
                           dkim: Sequence[DkimResult] | None = None,
                           arc: ArcResult | None = None, dmarc: DmarcResult | None = None,
                           iprev: IprevResult | None = None,
                           helo_spf: SpfResult | None = None) -> str:
    """The value of one Authentication-Results field (after "Authentication-Results: ").

    ``hostname`` is the authserv-id (RFC 8601 §2.5). Each check given adds one resinfo per
    result, folded onto its own line; ``dkim=[]`` gives "dkim=none"; a check left out (None)
    gives nothing, and with none at all the value is "<hostname>; none" (§2.2 no-result).
    """
    parts: list[str] = []
    if iprev is not None:
        parts.append(_iprev(iprev))
    if spf is not None:
        parts.append(_spf(spf))
    if helo_spf is not None:  # RFC 7208 §2.3: the HELO identity, checked as well
        parts.append(_spf(helo_spf))
    if dkim is not None:
        parts.extend([_dkim(r) for r in dkim] or ["dkim=none"])
    if arc is not None:
        parts.append(_arc(arc))
    if dmarc is not None:
        parts.append(_dmarc(dmarc))
    return _FOLD.join([hostname, *parts]) if parts else f"{hostname}; none"
