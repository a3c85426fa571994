"""TLS for every listener: server contexts selected by SNI, and a first-start certificate."""
from stalwart_mp.tls.contexts import CertificateSpec, TlsConfigError, TlsContexts
from stalwart_mp.tls.selfsigned import ensure_self_signed

__all__ = ["CertificateSpec", "TlsConfigError", "TlsContexts", "ensure_self_signed"]
