"""ensure_self_signed: creation, contents, permissions, atomicity and concurrent callers."""
from __future__ import annotations

import datetime
import ipaddress
import multiprocessing
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stalwart_mp.tls.selfsigned import ensure_self_signed


def _load(cert_path: Path, key_path: Path):
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return cert, key


def _assert_pair(cert_path: Path, key_path: Path) -> x509.Certificate:
    cert, key = _load(cert_path, key_path)
    assert key.public_key() == cert.public_key()
    # OpenSSL agrees the pair loads.
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    return cert


def test_creates_rsa_2048_with_expected_sans(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert ensure_self_signed(cert_path, key_path, "Mail.Example.COM.") is True
    cert = _assert_pair(cert_path, key_path)
    _, key = _load(cert_path, key_path)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.com", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "mail.example.com" and cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_validity_days(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    ensure_self_signed(cert_path, key_path, "mx.example.org", days=30)
    cert, _ = _load(cert_path, key_path)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now
    lifetime = cert.not_valid_after_utc - now
    assert datetime.timedelta(days=29, hours=23) < lifetime <= datetime.timedelta(days=30)


def test_file_modes_and_no_leftovers(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert_path, key_path, "mx.example.org")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "key.pem", "key.pem.lock"]


def test_existing_pair_is_kept(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    assert ensure_self_signed(cert_path, key_path, "a.example") is True
    before = (cert_path.read_bytes(), key_path.read_bytes())
    assert ensure_self_signed(cert_path, key_path, "b.example") is False
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before


@pytest.mark.parametrize("missing", ["cert", "key"])
def test_half_pair_is_regenerated_consistently(tmp_path: Path, missing: str) -> None:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert_path, key_path, "a.example")
    old_cert = cert_path.read_bytes()
    (cert_path if missing == "cert" else key_path).unlink()
    assert ensure_self_signed(cert_path, key_path, "a.example") is True
    _assert_pair(cert_path, key_path)
    assert cert_path.read_bytes() != old_cert


def test_combined_pem_when_paths_are_equal(tmp_path: Path) -> None:
    path = tmp_path / "combined.pem"
    assert ensure_self_signed(path, path, "mx.example.org") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _assert_pair(path, path)


def test_idn_and_ip_hostnames(tmp_path: Path) -> None:
    ensure_self_signed(tmp_path / "c1", tmp_path / "k1", "bücher.example")
    cert, _ = _load(tmp_path / "c1", tmp_path / "k1")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "xn--bcher-kva.example" in san.get_values_for_type(x509.DNSName)

    ensure_self_signed(tmp_path / "c2", tmp_path / "k2", "192.0.2.7")
    cert, _ = _load(tmp_path / "c2", tmp_path / "k2")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("192.0.2.7") in san.get_values_for_type(x509.IPAddress)


def test_rejects_empty_hostname(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        ensure_self_signed(tmp_path / "c", tmp_path / "k", " ")
    assert not (tmp_path / "c").exists() and not (tmp_path / "k").exists()


def _race(args: tuple[str, str]) -> bool:
    return ensure_self_signed(Path(args[0]), Path(args[1]), "race.example")


def test_concurrent_callers_create_exactly_once(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_race, [(str(cert_path), str(key_path))] * 4)
    assert sorted(results) == [False, False, False, True]
    _assert_pair(cert_path, key_path)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
