"""DKIM (RFC 6376, RFC 8463 Ed25519, RFC 8301) and ARC (RFC 8617) verification.

The crypto and canonicalization are dkimpy's. The DNS part is ours: the keys named by every
signature are fetched first, concurrently, through our async ``Resolver``; then dkimpy
verifies on a thread with a ``dnsfunc`` that only reads those prefetched keys. So a key that
could not be fetched is "temperror", a key that does not exist is "permerror" (RFC 6376
§6.1.2), and the event loop never waits on hashing a large body.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from stalwart_mp.dns.resolver import DnsTempError, Resolver

DkimVerdict = Literal["pass", "fail", "neutral", "policy", "temperror", "permerror", "none"]
ArcVerdict = Literal["pass", "fail", "none", "temperror"]

_ARC_SIGNED = (b"arc-seal", b"arc-message-signature")
_TEMP = object()  # marks a key whose lookup failed temporarily


@dataclass(frozen=True, slots=True)
class DkimResult:
    domain: str  # d=
    selector: str  # s=
    result: DkimVerdict
    algorithm: str = ""  # a=, e.g. "rsa-sha256", "ed25519-sha256"
    reason: str = ""  # why it is not "pass", for the Authentication-Results comment


@dataclass(frozen=True, slots=True)
class ArcResult:
    chain: ArcVerdict  # RFC 8617 §4.4 cv= (temperror: a key could not be fetched)
    instances: int = 0  # number of ARC sets
    reason: str = ""


def _header_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    headers, _body = dkim.rfc822_parse(raw)
    return headers


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        return parse_tag_value(value)
    except InvalidTagValueList:
        return None


def _key_name(tags: dict[bytes, bytes]) -> str | None:
    selector, domain = tags.get(b"s"), tags.get(b"d")
    if not selector or not domain:
        return None
    return (selector + b"._domainkey." + domain + b".").decode("ascii", "replace").lower()


async def _fetch_keys(names: set[str], resolver: Resolver) -> dict[str, object]:
    """name -> key record text, None (no key), or _TEMP (lookup failed)."""
    async def one(name: str) -> object:
        try:
            records = await resolver.txt(name)
        except DnsTempError:
            return _TEMP
        # RFC 6376 §3.6.2.2: several TXT records -> the verifier may use any; take the first
        return records[0] if records else None

    ordered = sorted(names)
    values = await asyncio.gather(*(one(n) for n in ordered))
    return dict(zip(ordered, values, strict=True))


def _dnsfunc(keys: dict[str, object]):
    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        value = keys.get(text.lower())
        if isinstance(value, str):
            return value.encode("utf-8", "surrogateescape")
        return None

    return lookup


def _verify_one(raw: bytes, idx: int, tags: dict[bytes, bytes] | None,
                keys: dict[str, object]) -> DkimResult:
    domain = (tags or {}).get(b"d", b"").decode("ascii", "replace").lower()
    selector = (tags or {}).get(b"s", b"").decode("ascii", "replace")
    algorithm = (tags or {}).get(b"a", b"").decode("ascii", "replace").lower()

    def result(verdict: DkimVerdict, reason: str = "") -> DkimResult:
        return DkimResult(domain, selector, verdict, algorithm, reason)

    if tags is None:
        return result("permerror", "malformed DKIM-Signature")
    try:  # RFC 6376 §6.1.1: required tags, v=1, d= vs i=, expiry (x=)
        dkim.validate_signature_fields(tags)
    except dkim.DKIMException as exc:
        return result("permerror", str(exc)[:100])
    if algorithm == "rsa-sha1":
        # RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 signatures valid
        return result("policy", "rsa-sha1 not accepted (RFC 8301)")
    name = _key_name(tags)
    key = keys.get(name) if name else None
    if key is _TEMP:
        return result("temperror", "key lookup failed")
    if name and key is None:
        return result("permerror", "no key")  # RFC 6376 §6.1.2 step 3
    if isinstance(key, str):
        try:  # dkimpy's verify() would take a bad key record as a plain "fail"
            dkim.evaluate_pk(name, key.encode("utf-8", "surrogateescape"))
        except (dkim.DKIMException, ValueError) as exc:
            # RFC 6376 §3.6.1: an empty p= is a revoked key; §6.1.2 step 5: bad record
            return result("permerror", f"bad key: {str(exc)[:80]}")
    verifier = dkim.DKIM(raw, minkey=1024)
    try:
        ok = verifier.verify(idx=idx, dnsfunc=_dnsfunc(keys))
    except dkim.ValidationError as exc:  # body hash mismatch and kin
        return result("fail", str(exc)[:100])
    except dkim.KeyFormatError as exc:  # revoked (empty p=), unparsable or too-small key
        return result("permerror", str(exc)[:100])
    except dkim.DKIMException as exc:  # missing tags, expired (x=), bad canonicalization
        return result("permerror", str(exc)[:100])
    return result("pass") if ok else result("fail", "signature did not verify")


async def verify_dkim(raw: bytes, resolver: Resolver) -> list[DkimResult]:
    """One result per DKIM-Signature header field, top to bottom; [] when there is none."""
    sigs = [v for k, v in _header_fields(raw) if k.lower() == b"dkim-signature"]
    if not sigs:
        return []
    tags = [_tags(v) for v in sigs]
    names = {n for t in tags if t is not None and (n := _key_name(t))}
    keys = await _fetch_keys(names, resolver)

    def run() -> list[DkimResult]:
        return [_verify_one(raw, i, t, keys) for i, t in enumerate(tags)]

    return await asyncio.to_thread(run)


async def verify_arc(raw: bytes, resolver: Resolver) -> ArcResult:
    """The ARC chain validation status (RFC 8617 §5.2)."""
    fields = [(k.lower(), v) for k, v in _header_fields(raw)]
    arc = [v for k, v in fields if k in _ARC_SIGNED]
    if not arc and not any(k == b"arc-authentication-results" for k, _ in fields):
        return ArcResult("none")
    names = {n for v in arc if (t := _tags(v)) is not None and (n := _key_name(t))}
    keys = await _fetch_keys(names, resolver)
    instances = sum(1 for k, _ in fields if k == b"arc-seal")
    if any(v is _TEMP for v in keys.values()):
        return ArcResult("temperror", instances, "key lookup failed")

    def run() -> tuple[bytes, str]:
        try:
            cv, _results, comment = dkim.arc_verify(raw, dnsfunc=_dnsfunc(keys))
        except dkim.DKIMException as exc:
            return dkim.CV_Fail, str(exc)[:100]
        return cv, comment or ""

    cv, comment = await asyncio.to_thread(run)
    chain: ArcVerdict = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    return ArcResult(chain, instances, "" if chain == "pass" else comment)
