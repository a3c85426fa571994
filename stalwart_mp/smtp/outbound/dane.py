"""DANE for SMTP (RFC 7672): TLSA records authenticate an MX host's certificate.

Used only when the resolver vouches for the TLSA answer (the AD bit of a validating
resolver, ``resolver.dnssec = true``): then TLS is mandatory and the certificate must match
a usable record (§2.2). Usable here: DANE-EE (usage 3, §3.1.1: the server's own key or
certificate; no name or expiry checks) with any selector (0 full certificate, 1
SubjectPublicKeyInfo) and matching type (0 exact, 1 SHA-256, 2 SHA-512); and DANE-TA
(usage 2) records that carry a whole trust-anchor certificate ("2 0 0"), checked by
verifying the chain against that anchor with the MX host name (§3.2.2). PKIX-TA/PKIX-EE
(usages 0 and 1) are not used for SMTP (§3.1.3). Authenticated records of which none is
usable still make TLS mandatory, unauthenticated (§2.2).
"""
from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stalwart_mp.dns.resolver import TlsaRecord

DANE_TA, DANE_EE = 2, 3


def usable(records: list[TlsaRecord]) -> list[TlsaRecord]:
    return [r for r in records if r.mtype in (0, 1, 2) and r.selector in (0, 1) and (
        r.usage == DANE_EE or (r.usage == DANE_TA and r.selector == 0 and r.mtype == 0))]


def _digest(mtype: int, data: bytes) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def _selected(selector: int, cert_der: bytes) -> bytes:
    if selector == 0:
        return cert_der
    cert = x509.load_der_x509_certificate(cert_der)
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def matches_ee(records: list[TlsaRecord], leaf_der: bytes) -> bool:
    """§3.1.1: the server's certificate (or key) is one a DANE-EE record names."""
    return any(r.usage == DANE_EE and _digest(r.mtype, _selected(r.selector, leaf_der))
               == r.data for r in records)


def trust_anchors_pem(records: list[TlsaRecord]) -> str:
    """The DANE-TA "2 0 0" certificates, as PEM for ``ssl`` (cadata)."""
    out = []
    for r in records:
        if r.usage == DANE_TA and r.selector == 0 and r.mtype == 0:
            cert = x509.load_der_x509_certificate(r.data)
            out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(out)


def tlsa_name(host: str, port: int) -> str:
    """§2.2.3: where an MX host's TLSA records are: _<port>._tcp.<host>."""
    return f"_{port}._tcp.{host}"
