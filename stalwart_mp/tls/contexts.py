"""Server TLS contexts: one per certificate, chosen per connection by SNI.

``server_context()`` returns a *front* context that stays the same object for the life of
the :class:`TlsContexts`: listeners (implicit TLS) and STARTTLS hand it to asyncio once, and
its ``sni_callback`` moves each connection to the context of the certificate that matches
the requested name (exact, then single-label wildcard, else the default certificate,
RFC 6125 §6.4.3). ``reload()`` swaps the per-certificate contexts and reloads the front one,
so renewed certificates are served without recreating listeners.
"""
from __future__ import annotations

import datetime
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

__all__ = ["CertificateSpec", "TlsConfigError", "TlsContexts"]

log = logging.getLogger(__name__)

_TLS_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


class TlsConfigError(ValueError):
    """A certificate or TLS option cannot be used; the message says which and why."""


@dataclass(slots=True, frozen=True)
class CertificateSpec:
    """A configured certificate. ``sni_names=None``: use the certificate's SAN DNS names."""

    name: str
    cert_path: Path
    key_path: Path
    sni_names: list[str] | None = None
    default: bool = False


@dataclass(slots=True)
class _Loaded:
    spec: CertificateSpec
    context: ssl.SSLContext
    names: list[str]
    not_after: float


class TlsContexts:
    """Server-side SSL contexts for a set of certificates, selected by SNI.

    The default certificate is the one with ``default=True``, or the first one when none
    is marked. Raises :class:`TlsConfigError` for unusable files or options.
    """

    def __init__(
        self,
        certificates: list[CertificateSpec],
        min_version: str = "TLSv1.2",
        ciphers: str | None = None,
    ) -> None:
        self._specs = list(certificates)
        self._min_version = _tls_version(min_version)
        self._ciphers = ciphers
        self._default_name = _default_spec(self._specs).name
        self._loaded: dict[str, _Loaded] = {}
        self._by_name: dict[str, str] = {}
        self._front = self._new_context()
        self._front.sni_callback = self._select
        self.reload()

    # -- public API ------------------------------------------------------------------------

    def server_context(self) -> ssl.SSLContext:
        """The context to give to listeners and STARTTLS; stable across :meth:`reload`."""
        return self._front

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The per-certificate context that serves ``server_name`` (None: the default)."""
        return self._loaded[self.certificate_for(server_name)].context

    def certificate_for(self, server_name: str | None) -> str:
        """Name of the certificate chosen for ``server_name``."""
        if server_name:
            name = server_name.rstrip(".").lower()
            match = self._by_name.get(name)
            if match is None and "." in name:
                # RFC 6125 §6.4.3: "*" stands for exactly one left-most label.
                match = self._by_name.get("*." + name.split(".", 1)[1])
            if match is not None:
                return match
        return self._default_name

    def sni_names(self) -> dict[str, str]:
        """SNI name (lower case, may be ``*.domain``) -> certificate name."""
        return dict(self._by_name)

    def not_after(self) -> dict[str, float]:
        """Certificate name -> expiry as a POSIX timestamp (for renewal and monitoring)."""
        return {name: loaded.not_after for name, loaded in self._loaded.items()}

    def reload(self) -> None:
        """Re-read every certificate and key (HUP, ACME renewal).

        All or nothing: on any error TlsConfigError is raised and the contexts in use stay.
        """
        loaded = {spec.name: self._load(spec) for spec in self._specs}
        by_name = _sni_map(loaded.values())
        default = loaded[self._default_name].spec
        # The front context serves the default certificate itself if the callback is skipped.
        _load_chain(self._front, default)
        self._loaded, self._by_name = loaded, by_name

    # -- internals -------------------------------------------------------------------------

    def _select(
        self, ssl_obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        # Called for every ClientHello; server_name is None without SNI (RFC 6066 §3), an
        # A-label otherwise. Protocol options stay those of the front context.
        ssl_obj.context = self.context_for(server_name)

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self._min_version
        # CRIME (compression) and client-initiated renegotiation DoS.
        context.options |= ssl.OP_NO_COMPRESSION
        context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
        if self._ciphers is not None:
            try:
                context.set_ciphers(self._ciphers)
            except ssl.SSLError as exc:
                reason = getattr(exc, "reason", None) or exc
                raise TlsConfigError(
                    f"tls ciphers {self._ciphers!r}: no usable cipher in this OpenSSL "
                    f"cipher string ({reason})"
                ) from None
        return context

    def _load(self, spec: CertificateSpec) -> _Loaded:
        cert = _check_files(spec)
        context = self._new_context()
        _load_chain(context, spec)
        names = spec.sni_names if spec.sni_names is not None else _certificate_names(cert)
        return _Loaded(spec, context, [_normalize(n) for n in names],
                       cert.not_valid_after_utc.timestamp())


# -- helpers --------------------------------------------------------------------------------


def _tls_version(value: str) -> ssl.TLSVersion:
    try:
        return _TLS_VERSIONS[value]
    except KeyError:
        raise TlsConfigError(
            f"tls min_version {value!r} is not one of {', '.join(_TLS_VERSIONS)}"
        ) from None


def _default_spec(specs: list[CertificateSpec]) -> CertificateSpec:
    if not specs:
        raise TlsConfigError("no TLS certificate configured; at least one is required")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise TlsConfigError(f"certificate name {spec.name!r} is used twice")
        seen.add(spec.name)
    defaults = [spec for spec in specs if spec.default]
    if len(defaults) > 1:
        names = ", ".join(repr(spec.name) for spec in defaults)
        raise TlsConfigError(f"only one certificate may be the default, found {names}")
    return defaults[0] if defaults else specs[0]


def _read(spec: CertificateSpec, what: str, path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        problem = "does not exist"
    except PermissionError:
        problem = "is not readable by this process (check owner and mode)"
    except IsADirectoryError:
        problem = "is a directory, expected a PEM file"
    except OSError as exc:
        problem = f"cannot be read: {exc.strerror}"
    raise TlsConfigError(f"certificate {spec.name!r}: {what} file {path} {problem}")


def _check_files(spec: CertificateSpec) -> x509.Certificate:
    """Parse cert and key ourselves first, for messages better than OpenSSL's."""
    cert_pem = _read(spec, "certificate", spec.cert_path)
    key_pem = _read(spec, "private key", spec.key_path)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsConfigError(
            f"certificate {spec.name!r}: {spec.cert_path} holds no PEM certificate "
            "('-----BEGIN CERTIFICATE-----')"
        ) from None
    key = _private_key(spec, key_pem)
    if key.public_key() != chain[0].public_key():
        raise TlsConfigError(
            f"certificate {spec.name!r}: private key {spec.key_path} does not match the "
            f"first certificate in {spec.cert_path}"
        )
    _warn_expiry(spec, chain[0])
    return chain[0]


def _private_key(spec: CertificateSpec, key_pem: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        problem = "is encrypted; provide an unencrypted key (mode 0600)"
    except ValueError:
        problem = "holds no usable PEM private key ('-----BEGIN ... PRIVATE KEY-----')"
    except UnsupportedAlgorithm as exc:
        problem = f"holds an unsupported private key type ({exc})"
    raise TlsConfigError(f"certificate {spec.name!r}: private key file {spec.key_path} {problem}")


def _warn_expiry(spec: CertificateSpec, cert: x509.Certificate) -> None:
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC):
        log.warning("certificate %r in %s expired on %s", spec.name, spec.cert_path,
                    cert.not_valid_after_utc.isoformat())


def _load_chain(context: ssl.SSLContext, spec: CertificateSpec) -> None:
    def no_password() -> bytes:
        # Never let OpenSSL prompt on the terminal for an encrypted key.
        raise TlsConfigError(f"certificate {spec.name!r}: private key {spec.key_path} "
                             "is encrypted; provide an unencrypted key")

    try:
        context.load_cert_chain(spec.cert_path, spec.key_path, password=no_password)
    except TlsConfigError:
        raise
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(
            f"certificate {spec.name!r}: OpenSSL cannot load {spec.cert_path} with key "
            f"{spec.key_path}: {getattr(exc, 'reason', None) or exc}"
        ) from None


def _certificate_names(cert: x509.Certificate) -> list[str]:
    """SAN dNSNames (RFC 6125 §6.4.4: the CN only when there is no SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return [str(attr.value) for attr in cert.subject.get_attributes_for_oid(
            NameOID.COMMON_NAME)]


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _sni_map(loaded: Iterable[_Loaded]) -> dict[str, str]:
    """SNI name -> certificate name; the first certificate listed wins a shared name."""
    by_name: dict[str, str] = {}
    for item in loaded:
        for name in item.names:
            by_name.setdefault(name, item.spec.name)
    return by_name
