"""Message authentication for inbound SMTP: SPF, DKIM, ARC, DMARC, iprev and the
Authentication-Results header field that reports them (RFC 8601).

Every check is a coroutine taking a ``stalwart_mp.dns.Resolver``; DNS that fails
temporarily gives "temperror", never "does not exist".
"""
from __future__ import annotations

from stalwart_mp.smtp.checks.dkim_verify import ArcResult, DkimResult, verify_arc, verify_dkim
from stalwart_mp.smtp.checks.dmarc import DmarcResult, evaluate_dmarc, organizational_domain
from stalwart_mp.smtp.checks.iprev import IprevResult, check_iprev
from stalwart_mp.smtp.checks.results import authentication_results
from stalwart_mp.smtp.checks.spf import SpfResult, check_spf

__all__ = [
    "ArcResult",
    "DkimResult",
    "DmarcResult",
    "IprevResult",
    "SpfResult",
    "authentication_results",
    "check_iprev",
    "check_spf",
    "evaluate_dmarc",
    "organizational_domain",
    "verify_arc",
    "verify_dkim",
]
