"""DANE for SMTP (RFC 7672): TLSA records authenticate an MX host's certificate.

Used only when the resolver vouches for the TLSA answer (the AD bit of a validating
resolver, ``resolver.dnssec = true``): then TLS is mandatory and the certificate must match
a usable record (§2.2). Usable: DANE-EE (usage 3, §3.1.1: the server's own key or
certificate; no name or expiry checks) and DANE-TA (usage 2, §3.1.2: a trust anchor — a
certificate the server presents in its chain, or the whole anchor certificate in a "2 0 0"
record — to which the server's chain must lead, with the MX host's name, §3.2.2), each with
any selector (0 full certificate, 1 SubjectPublicKeyInfo) and matching type (0 exact,
1 SHA-256, 2 SHA-512). PKIX-TA/PKIX-EE (usages 0 and 1) are not used for SMTP (§3.1.3).
Authenticated records of which none is usable still make TLS mandatory (§2.2).
"""
from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stalwart_mp.dns.resolver import TlsaRecord

DANE_TA, DANE_EE = 2, 3
_DER = 2  # ssl/_ssl ENCODING_DER, the format argument of Certificate.public_bytes


def usable(records: list[TlsaRecord]) -> list[TlsaRecord]:
    return [r for r in records if r.mtype in (0, 1, 2) and r.selector in (0, 1)
            and r.usage in (DANE_EE, DANE_TA)]


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


def trust_anchors(records: list[TlsaRecord], chain_der: list[bytes]) -> list[x509.Certificate]:
    """§3.1.2: the DANE-TA anchors — each issuer certificate the server presented
    (``chain_der`` after the leaf) that a DANE-TA record names, and the whole
    certificates of "2 0 0" records (which the server need not present)."""
    anchors: list[x509.Certificate] = []
    for r in records:
        if r.usage != DANE_TA:
            continue
        if r.selector == 0 and r.mtype == 0:
            anchors.append(x509.load_der_x509_certificate(r.data))
            continue
        for der in chain_der[1:]:
            if _digest(r.mtype, _selected(r.selector, der)) == r.data:
                anchors.append(x509.load_der_x509_certificate(der))
    return anchors


def chains_to(anchors: list[x509.Certificate], chain_der: list[bytes], host: str) -> bool:
    """Whether the presented chain (leaf first) leads to one of the anchors, for ``host``
    (§3.2.2: with DANE-TA the name is checked, and the validity periods)."""
    if not anchors or not chain_der:
        return False
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    try:
        verifier = (PolicyBuilder().store(Store(anchors))
                    .build_server_verifier(x509.DNSName(host)))
        verifier.verify(x509.load_der_x509_certificate(chain_der[0]),
                        [x509.load_der_x509_certificate(d) for d in chain_der[1:]])
    except (VerificationError, ValueError):
        return False
    return True


def peer_chain(ssl_object) -> list[bytes]:
    """The certificates the server sent, leaf first, DER. Python 3.13 has
    ``SSLObject.get_unverified_chain()``; 3.10-3.12 have it on the C object only."""
    getter = getattr(ssl_object, "get_unverified_chain", None) or getattr(
        getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    chain = []
    if getter is not None:
        for cert in getter() or []:
            chain.append(cert if isinstance(cert, bytes) else cert.public_bytes(_DER))
    if not chain:
        leaf = ssl_object.getpeercert(binary_form=True)
        chain = [leaf] if leaf else []
    return chain


def tlsa_name(host: str, port: int) -> str:
    """§2.2.3: where an MX host's TLSA records are: _<port>._tcp.<host>."""
    return f"_{port}._tcp.{host}"
