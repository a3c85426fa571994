"""ARC sealing (RFC 8617) of the mail we forward to a mailing list's external members.

A forwarded message keeps its author's DKIM signature, but reaches the next receiver from
our address, so the author's SPF fails there; an ARC set lets that receiver see what our
MX found when the message arrived (our Authentication-Results, copied into
ARC-Authentication-Results) under our signature (ARC-Message-Signature over the message,
ARC-Seal over the chain), and trust it if it trusts us (RFC 8617 §7.2). The set is made
with the list domain's rsa-sha256 DKIM key (``directory/dkim_keys.py``; RFC 8617 §4.1.3
uses DKIM's key records and algorithms, and receivers support RSA). Without our own
Authentication-Results (not an inbound message) there is nothing to attest: no set.
"""
from __future__ import annotations

import asyncio
import logging

import dkim

from stalwart_mp.smtp.outbound.dkim_sign import signed_headers, signing_keys

log = logging.getLogger("stalwart_mp.outbound")


def _seal(message: bytes, selector: bytes, domain: str, private: bytes,
          authserv_id: str) -> bytes:
    fields = dkim.arc_sign(message, selector, domain.encode(), private, authserv_id.encode(),
                           include_headers=signed_headers(message), linesep=b"\r\n")
    return b"".join(fields)


async def seal(data, message: bytes, domain: str, authserv_id: str) -> bytes:
    """The ARC set to prepend to ``message`` (b"" when we hold no RSA key for ``domain``,
    the message has no Authentication-Results of ``authserv_id``, or sealing fails: the
    message is then forwarded unsealed, never held back)."""
    keys = [(sel, key) for sel, alg, key in await signing_keys(data, domain)
            if alg == b"rsa-sha256"]
    if not keys:
        return b""
    selector, private = keys[0]
    try:
        # an RSA signature and hashing the body: off the event loop
        return await asyncio.to_thread(_seal, message, selector, domain, private, authserv_id)
    except Exception:  # dkimpy raises assorted errors on odd messages
        log.warning("ARC sealing failed; forwarded unsealed", exc_info=True,
                    extra={"fields": {"domain": domain}})
        return b""
