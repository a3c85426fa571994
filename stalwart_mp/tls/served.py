"""What the workers serve: the configured certificates, the chain served for a name, and
the MTA-STS policy that follows from them.

One place for these, used by the workers (TLS contexts, the MTA-STS policy over HTTPS) and
the control plane (TLSA and MTA-STS records), so the records always describe what is
actually served.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from stalwart_mp.tls.contexts import CertificateSpec, TlsConfigError, TlsContexts

MTA_STS_MAX_AGE = 604800  # one week (RFC 8461 §3.2 suggests weeks)


def certificate_specs(cfg: Any) -> list[CertificateSpec]:
    """The ``[certificate.*]`` tables; without any, the self-signed certificate the master
    made in ``<server.data-dir>/tls``."""
    specs = [
        CertificateSpec(
            name=name,
            cert_path=cfg.path(("certificate", name, "cert")),
            key_path=cfg.path(("certificate", name, "private-key")),
            sni_names=cfg.get(("certificate", name, "sni")) or None,
            default=bool(cfg.get(("certificate", name, "default"))),
        )
        for name in cfg.names("certificate")
    ]
    if not specs:
        tls_dir = cfg.path("server.data-dir") / "tls"
        specs = [CertificateSpec("self-signed", tls_dir / "self-signed.crt",
                                 tls_dir / "self-signed.key", None, True)]
    return specs


def served_chain(cfg: Any, hostname: str) -> tuple[x509.Certificate, ...]:
    """The certificate chain the workers serve for ``hostname`` (SNI), leaf first, chosen
    as the workers choose (``TlsContexts.certificate_for``). TlsConfigError if unusable."""
    specs = certificate_specs(cfg)
    chosen = TlsContexts(specs).certificate_for(hostname)
    path = next(s.cert_path for s in specs if s.name == chosen)
    return load_chain(path)


def load_chain(path: Path) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))
    except (OSError, ValueError) as exc:
        raise TlsConfigError(f"cannot read the certificate chain {path}: {exc}") from None


def is_self_signed(chain: Sequence[x509.Certificate]) -> bool:
    return len(chain) == 1 and chain[0].issuer == chain[0].subject


def mta_sts_policy(hostname: str, chain: Sequence[x509.Certificate]) -> str:
    """The MTA-STS policy file (RFC 8461 §3.2), lines ending in CRLF.

    Mode "enforce" with a certificate a sender can validate; "testing" while the host
    serves a self-signed certificate, which senders enforcing the policy would refuse.
    """
    mode = "testing" if is_self_signed(chain) else "enforce"
    return (f"version: STSv1\r\nmode: {mode}\r\nmx: {hostname}\r\n"
            f"max_age: {MTA_STS_MAX_AGE}\r\n")


def mta_sts_id(policy: str) -> str:
    """The policy id (RFC 8461 §3.1: 1 to 32 letters and digits): a hash of the policy, so
    it changes exactly when the policy does."""
    return hashlib.sha256(policy.encode("ascii")).hexdigest()[:32]
