"""TlsContexts: SNI selection over real in-memory TLS handshakes, errors, reload."""
from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stalwart_mp.tls import CertificateSpec, TlsConfigError, TlsContexts


def _write_cert(folder: Path, label: str, dns_names: list[str] | None,
                password: bytes | None = None) -> CertificateSpec:
    """A self-signed EC certificate whose CN is ``label`` (to tell which one was served)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=10))
    )
    if dns_names is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    cert_path, key_path = folder / f"{label}.crt", folder / f"{label}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return CertificateSpec(label, cert_path, key_path)


def _handshake(server_ctx: ssl.SSLContext, sni: str | None,
               client_max: ssl.TLSVersion | None = None) -> str:
    """Run a TLS handshake over memory BIOs; return the CN of the certificate served."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    if client_max is not None:
        client_ctx.maximum_version = client_max
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False, server_hostname=sni)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    der = client.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@pytest.fixture
def three(tmp_path: Path) -> list[CertificateSpec]:
    main = _write_cert(tmp_path, "main", ["mail.example.com", "example.com"])
    wild = _write_cert(tmp_path, "wild", ["*.example.org"])
    other = _write_cert(tmp_path, "other", ["imap.example.net"])
    return [main, wild, CertificateSpec(other.name, other.cert_path, other.key_path,
                                        default=True)]


def test_sni_selects_exact_wildcard_and_default(three: list[CertificateSpec]) -> None:
    tls = TlsContexts(three)
    ctx = tls.server_context()
    assert _handshake(ctx, "mail.example.com") == "main"
    assert _handshake(ctx, "MAIL.Example.Com") == "main"
    assert _handshake(ctx, "smtp.example.org") == "wild"
    # RFC 6125 §6.4.3: the wildcard covers exactly one label.
    assert _handshake(ctx, "a.b.example.org") == "other"
    assert _handshake(ctx, "example.org") == "other"
    assert _handshake(ctx, "unknown.test") == "other"
    assert _handshake(ctx, None) == "other"


def test_first_certificate_is_default_when_none_marked(tmp_path: Path) -> None:
    specs = [_write_cert(tmp_path, "one", ["one.test"]), _write_cert(tmp_path, "two", ["two.test"])]
    tls = TlsContexts(specs)
    assert _handshake(tls.server_context(), None) == "one"
    assert _handshake(tls.server_context(), "two.test") == "two"
    assert tls.certificate_for("zzz.test") == "one"


def test_sni_names_from_san_cn_or_explicit(tmp_path: Path) -> None:
    san = _write_cert(tmp_path, "san", ["a.test", "*.b.test"])
    cn_only = _write_cert(tmp_path, "cn.test", None)
    explicit = _write_cert(tmp_path, "explicit", ["ignored.test"])
    explicit = CertificateSpec("explicit", explicit.cert_path, explicit.key_path,
                               sni_names=["Forced.Test."])
    tls = TlsContexts([san, cn_only, explicit])
    assert tls.sni_names() == {"a.test": "san", "*.b.test": "san", "cn.test": "cn.test",
                               "forced.test": "explicit"}
    assert _handshake(tls.server_context(), "forced.test") == "explicit"
    assert _handshake(tls.server_context(), "ignored.test") == "san"


def test_options_and_min_version(three: list[CertificateSpec]) -> None:
    tls = TlsContexts(three, min_version="TLSv1.3")
    ctx = tls.server_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    for name in ("main", "wild", "other"):
        assert tls.context_for(tls.sni_names().get(name, name)).options & ssl.OP_NO_COMPRESSION
    with pytest.raises(ssl.SSLError):
        _handshake(ctx, "mail.example.com", client_max=ssl.TLSVersion.TLSv1_2)
    assert _handshake(ctx, "mail.example.com") == "main"


def test_ciphers_option(three: list[CertificateSpec]) -> None:
    tls = TlsContexts(three, ciphers="ECDHE+AESGCM")
    names = {c["name"] for c in tls.server_context().get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all("GCM" in n for n in names)
    with pytest.raises(TlsConfigError, match="tls ciphers 'NOPE-NOTHING'"):
        TlsContexts(three, ciphers="NOPE-NOTHING")


def test_bad_min_version(three: list[CertificateSpec]) -> None:
    with pytest.raises(TlsConfigError, match=r"min_version 'SSLv3' is not one of TLSv1, "):
        TlsContexts(three, min_version="SSLv3")


def _spec(base: CertificateSpec, **changes) -> CertificateSpec:
    fields = {"name": base.name, "cert_path": base.cert_path, "key_path": base.key_path,
              "sni_names": base.sni_names, "default": base.default}
    fields.update(changes)
    return CertificateSpec(**fields)


def test_error_messages_name_certificate_and_path(tmp_path: Path) -> None:
    good = _write_cert(tmp_path, "good", ["good.test"])
    other = _write_cert(tmp_path, "other", ["other.test"])
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    cases = [
        (_spec(good, cert_path=missing), f"'good': certificate file {missing} does not exist"),
        (_spec(good, key_path=missing), f"'good': private key file {missing} does not exist"),
        (_spec(good, cert_path=garbage), f"'good': {garbage} holds no PEM certificate"),
        (_spec(good, key_path=garbage), f"'good': private key file {garbage} holds no usable"),
        (_spec(good, key_path=other.key_path),
         (f"'good': private key {other.key_path} does not match the first certificate in "
          f"{good.cert_path}")),
        (_spec(good, cert_path=tmp_path), f"certificate file {tmp_path} is a directory"),
    ]
    for spec, message in cases:
        with pytest.raises(TlsConfigError) as info:
            TlsContexts([spec])
        assert message in str(info.value)


def test_encrypted_key_is_refused_without_prompt(tmp_path: Path) -> None:
    spec = _write_cert(tmp_path, "locked", ["locked.test"], password=b"secret")
    with pytest.raises(TlsConfigError, match=r"'locked': private key file .*locked.key is encrypted"):
        TlsContexts([spec])


def test_list_validation(tmp_path: Path) -> None:
    a = _write_cert(tmp_path, "a", ["a.test"])
    b = _write_cert(tmp_path, "b", ["b.test"])
    with pytest.raises(TlsConfigError, match="no TLS certificate configured"):
        TlsContexts([])
    with pytest.raises(TlsConfigError, match="only one certificate may be the default"):
        TlsContexts([_spec(a, default=True), _spec(b, default=True)])
    with pytest.raises(TlsConfigError, match="'a' is used twice"):
        TlsContexts([a, _spec(b, name="a")])


def test_reload_serves_new_files_on_the_same_front_context(tmp_path: Path) -> None:
    spec = _write_cert(tmp_path, "site", ["site.test"])
    tls = TlsContexts([spec])
    front = tls.server_context()
    served_before = _peer_der(front, "site.test")

    _write_cert(tmp_path, "site", ["site.test", "new.test"])  # renewal: same paths
    tls.reload()
    assert tls.server_context() is front
    assert _peer_der(front, "site.test") != served_before
    assert tls.certificate_for("new.test") == "site"
    assert _peer_der(front, None) == _peer_der(front, "site.test")


def test_failed_reload_keeps_running_contexts(tmp_path: Path) -> None:
    spec = _write_cert(tmp_path, "site", ["site.test"])
    tls = TlsContexts([spec])
    served = _peer_der(tls.server_context(), "site.test")
    spec.key_path.write_text("broken\n")
    with pytest.raises(TlsConfigError, match="'site'"):
        tls.reload()
    assert _peer_der(tls.server_context(), "site.test") == served
    assert tls.certificate_for("site.test") == "site"


def test_not_after(tmp_path: Path) -> None:
    tls = TlsContexts([_write_cert(tmp_path, "x", ["x.test"])])
    expiry = tls.not_after()["x"]
    days = (expiry - datetime.datetime.now(datetime.UTC).timestamp()) / 86400
    assert 9.9 < days <= 10


def _peer_der(ctx: ssl.SSLContext, sni: str | None) -> bytes:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni)
    server = ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return client.getpeercert(binary_form=True)
