"""TOTP (RFC 6238) over HOTP (RFC 4226): the published test vectors, clock drift, the
Key Uri Format, the ``password$code`` split, and replay refusal in the authenticator."""
from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from stalwart_mp.auth import totp
from stalwart_mp.directory.auth import Authenticator
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.store.lookup import open_lookup_store
from stalwart_mp.store.registry import open_data_store

SEED = b"12345678901234567890"  # RFC 4226 Appendix D and RFC 6238 Appendix B (SHA1)


def independent_code(secret_b32: str, at: float) -> str:
    """A second, separate TOTP implementation (struct + hmac, dynamic truncation as in
    RFC 4226 §5.4's Java-like pseudo code) to check the module against."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    o = digest[19] & 15
    value = ((digest[o] & 0x7F) << 24 | digest[o + 1] << 16 | digest[o + 2] << 8
             | digest[o + 3])
    return "%06d" % (value % 1_000_000)


def test_rfc4226_appendix_d_hotp_values():
    expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922",
                "162583", "399871", "520489"]
    assert [totp.hotp(SEED, count) for count in range(10)] == expected


@pytest.mark.parametrize("at,code", [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])
def test_rfc6238_appendix_b_sha1_vectors(at, code):
    assert totp.totp(SEED, at, digits=8) == code


def test_rfc6238_appendix_b_sha256_and_sha512_first_rows():
    seed32 = b"12345678901234567890123456789012"
    seed64 = b"1234567890" * 6 + b"1234"
    assert totp.totp(seed32, 59, digits=8, algorithm="SHA256") == "46119246"
    assert totp.totp(seed64, 59, digits=8, algorithm="SHA512") == "90693936"


def test_module_agrees_with_an_independent_implementation():
    key = totp.new_key("alice", "Example")
    for at in (0, 59, 1_700_000_000, time.time()):
        assert key.code_at(at) == independent_code(key.secret, at)


def test_secrets_are_160_random_bits_in_base32():
    a, b = totp.new_secret(), totp.new_secret()
    assert a != b and len(totp.decode_secret(a)) == 20 and "=" not in a
    assert totp.decode_secret(a.lower()[:8] + " " + a.lower()[8:]) == totp.decode_secret(a)
    with pytest.raises(ValueError):
        totp.decode_secret("not base32!")


def test_drift_of_one_step_either_way_and_no_more():
    key = totp.new_key("alice", "Example")
    now = 1_700_000_015.0  # mid-step
    step = key.step_of(now)
    assert key.verify(key.code_at(now), now) == step
    assert key.verify(key.code_at(now - 30), now) == step - 1
    assert key.verify(key.code_at(now + 30), now) == step + 1
    for far in (now - 60, now + 60, now - 3600):
        code = key.code_at(far)
        if code not in {key.code_at(now + d) for d in (-30, 0, 30)}:  # 1e-6 collision
            assert key.verify(code, now) is None
    assert key.verify("12345", now) is None
    assert key.verify("١٢٣٤٥٦", now) is None  # non-ASCII digits are no code


def test_uri_round_trip_in_the_key_uri_format():
    key = totp.new_key("alice@example.org", "Example Mail")
    uri = key.uri()
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/Example%20Mail:alice@example.org"
    query = parse_qs(parts.query)
    assert query == {"secret": [key.secret], "issuer": ["Example Mail"],
                     "algorithm": ["SHA1"], "digits": ["6"], "period": ["30"]}
    assert totp.parse_uri(uri) == key
    # what other servers write: no issuer parameter, lower-case secret, other algorithm
    other = totp.parse_uri("otpauth://totp/ACME:bob?secret=jbswy3dpehpk3pxp&digits=8"
                           "&algorithm=sha256&period=60")
    assert (other.issuer, other.account, other.secret, other.digits, other.period,
            other.algorithm) == ("ACME", "bob", "JBSWY3DPEHPK3PXP", 8, 60, "SHA256")
    for bad in ("otpauth://hotp/x?secret=JBSWY3DP", "otpauth://totp/x?issuer=a",
                "otpauth://totp/x?secret=!!", "otpauth://totp/x?secret=JBSWY3DP&digits=4",
                "otpauth://totp/x?secret=JBSWY3DP&algorithm=MD5"):
        with pytest.raises(ValueError):
            totp.parse_uri(bad)


def test_split_code():
    assert totp.split_code("pass$word$123456") == ("pass$word", "123456")
    for no in ("password", "password$12345", "password$1234567", "$123456",
               "password$12345a", "password123456"):
        assert totp.split_code(no) is None


@pytest.fixture
async def authenticator(tmp_path):
    store = open_data_store("data", {"type": "lmdb", "path": str(tmp_path / "db")})
    directory = InternalDirectory(store)
    manager = DirectoryManager(directory)
    await manager.create_principal("jane", password="right-password")
    uri = await manager.enable_totp("jane", "Example")
    lookup = await open_lookup_store("data", {"type": "lmdb"}, store)
    yield Authenticator(directory, lookup, manager=manager), totp.parse_uri(uri)
    await store.close()


async def test_a_code_is_accepted_once_then_refused_as_a_replay(authenticator):
    auth, key = authenticator
    code = key.code_at(time.time())
    assert (await auth.authenticate("jane", f"right-password${code}", "192.0.2.1")).ok
    assert not (await auth.authenticate("jane", f"right-password${code}", "192.0.2.1")).ok
    # an older code (the previous step, within the drift) after a newer one: refused too
    older = key.code_at(time.time() - 30)
    if older != code:
        assert not (await auth.authenticate("jane", f"right-password${older}",
                                            "192.0.2.1")).ok
