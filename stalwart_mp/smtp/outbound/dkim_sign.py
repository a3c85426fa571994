"""DKIM signing of mail submitted by our users (RFC 6376, RFC 8463).

Signed once, at submission, before the message is stored: the queued blob is what every
remote MX gets, however many retries or domains, and key rotation while a message waits
cannot change it. Every key of the signing domain signs (``directory/dkim_keys.py``: one
ed25519-sha256 and one rsa-sha256), each over the message as submitted, so a verifier that
does not know Ed25519 still finds a valid RSA signature (RFC 8463 §3).

The signing domain is the RFC 5322.From domain (DMARC alignment, RFC 7489 §3.1.1) when we
hold keys for it, else the envelope sender's.
"""
from __future__ import annotations

import asyncio
import logging
import time

import dkim

from stalwart_mp.directory.base import DirectoryError
from stalwart_mp.directory.dkim_keys import domain_keys

log = logging.getLogger("stalwart_mp.outbound")

# RFC 6376 §5.4.1: the fields that matter to the reader, plus those a forwarder must not
# alter; "From" is required. Oversigning (From listed twice) blocks an added second From.
HEADERS = [b"from", b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
           b"in-reply-to", b"references", b"mime-version", b"content-type",
           b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post"]
CACHE_SECONDS = 60.0

_cache: dict[str, tuple[float, list[tuple[bytes, bytes, bytes]]]] = {}


async def signing_keys(data, domain: str) -> list[tuple[bytes, bytes, bytes]]:
    """(selector, algorithm, dkimpy private key) of the domain, cached for a minute."""
    hit = _cache.get(domain)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    try:
        keys = [(k.selector.encode(), k.algorithm.encode(), k.dkimpy_private_key())
                for k in await domain_keys(data, domain)]
    except DirectoryError:  # not a domain name we could hold keys for
        keys = []
    _cache[domain] = (now + CACHE_SECONDS, keys)
    return keys


def _from_domain(message: bytes) -> str | None:
    try:
        headers, _body = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, ValueError):
        return None
    for name, value in headers:
        if name.lower() == b"from":
            text = value.decode("utf-8", "replace")
            _, _, host = text.rpartition("@")
            host = host.strip().rstrip(">").strip().lower()
            return host.split(">")[0].strip() or None
    return None


def signed_headers(message: bytes) -> list[bytes]:
    """The fields of HEADERS that ``message`` has, From always (oversigned)."""
    present = {name.lower() for name, _ in dkim.rfc822_parse(message)[0]}
    return [h for h in HEADERS if h in present or h == b"from"]


def _sign_all(message: bytes, domain: str, keys: list[tuple[bytes, bytes, bytes]]) -> bytes:
    include = signed_headers(message)
    out = b""
    for selector, algorithm, private in keys:
        out += dkim.sign(message, selector, domain.encode(), private,
                         canonicalize=(b"relaxed", b"relaxed"),
                         signature_algorithm=algorithm, include_headers=include,
                         linesep=b"\r\n")
    return out


async def sign(data, message: bytes, envelope_sender: str) -> bytes:
    """The DKIM-Signature fields to prepend to ``message`` (b"" when we hold no key for
    its From or envelope domain)."""
    candidates = [d for d in (_from_domain(message),
                              envelope_sender.rpartition("@")[2].lower() or None) if d]
    for domain in dict.fromkeys(candidates):
        keys = await signing_keys(data, domain)
        if keys:
            # hashing a large body and an RSA signature: off the event loop
            return await asyncio.to_thread(_sign_all, message, domain, keys)
    return b""
