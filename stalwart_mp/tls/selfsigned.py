"""A self-signed certificate for the first start, before a real one (ACME or files) exists.

Key type: RSA-2048. ECDSA P-256 is smaller and faster, but mail peers are a long tail of
old MTAs, appliances and clients; RSA works with every TLS stack that still speaks TLS 1.2,
and generating it once takes well under a second.

Concurrency: several processes may call :func:`ensure_self_signed` at once (workers, the
control process, a CLI). An ``fcntl.flock`` on ``<key file>.lock`` in the same directory
serializes creation; every file is written to a temp file in the same directory, fsynced
and renamed into place, then the directory is fsynced (write temp, fsync, rename: the
Dovecot/Postfix pattern). A reader can see a missing file but never a key that does not
match the certificate next to it: when only one of the pair survived, it is removed before
the new pair is renamed in, key first, then certificate.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ensure_self_signed", "generate_self_signed"]

RSA_KEY_BITS = 2048
# Backdate a little so peers with a slow clock accept the certificate right away.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


def ensure_self_signed(cert_path: Path, key_path: Path, hostname: str, days: int = 825) -> bool:
    """Create a self-signed certificate and key unless both files exist.

    825 days is the longest validity Apple clients accept for a server certificate. The
    key is written with mode 0600, the certificate 0644. If ``cert_path == key_path`` one
    PEM file holds the key followed by the certificate (mode 0600).
    Returns True if files were created, False if both already existed.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    if cert_path.exists() and key_path.exists():
        return False
    for folder in {cert_path.parent, key_path.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    with _locked(key_path.with_name(key_path.name + ".lock")):
        # Another process may have finished while we waited for the lock.
        if cert_path.exists() and key_path.exists():
            return False
        key_pem, cert_pem = generate_self_signed(hostname, days)
        _install(cert_path, key_path, key_pem, cert_pem)
    return True


def generate_self_signed(hostname: str, days: int = 825) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for ``hostname``; SAN = hostname, localhost, 127.0.0.1, ::1."""
    if days < 1:
        raise ValueError(f"certificate validity must be at least 1 day, got {days}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    name = _normalize_hostname(hostname)
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_san_entries(name)), critical=False)
        # RFC 5280 §4.2.1.9: an end-entity certificate, not a CA.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _normalize_hostname(hostname: str) -> str:
    """Lower-case A-label form without a trailing dot (SAN dNSName is IA5String, RFC 5280)."""
    name = hostname.strip().rstrip(".").lower()
    if not name:
        raise ValueError("hostname for the self-signed certificate is empty")
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"hostname {hostname!r} is not a valid domain name: {exc}") from None


def _san_entries(name: str) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for value in (name, "localhost", "127.0.0.1", "::1"):
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            entry = x509.DNSName(value)
        if entry not in entries:
            entries.append(entry)
    return entries


def _key_usage() -> x509.KeyUsage:
    # RSA key exchange (TLS 1.2 RSA suites) needs keyEncipherment; ECDHE needs signatures.
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the fd releases the flock


def _install(cert_path: Path, key_path: Path, key_pem: bytes, cert_pem: bytes) -> None:
    if cert_path == key_path:
        _atomic_write(key_path, key_pem + cert_pem, 0o600)
        return
    # Remove a lone survivor of an old pair first so the pair is never mismatched.
    for path in (cert_path, key_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    _atomic_write(key_path, key_pem, 0o600)
    _atomic_write(cert_path, cert_pem, 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write temp file in the same directory, fsync, rename, fsync the directory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
