"""Password schemes: each verified against hashes made by a reference implementation
(openssl passwd, pyca bcrypt, argon2-cffi, hashlib) or published vectors."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess

import bcrypt
import pytest
from argon2 import PasswordHasher

from stalwart_mp.directory.passwords import (
    hash_password,
    md5_crypt,
    needs_rehash,
    scheme_of,
    sha_crypt,
    verify_password,
)

UNICODE = "pässwörd-日本語-🔑"


def openssl_passwd(flag: str, salt: str, password: str) -> str:
    # the password goes on stdin so that non-ASCII bytes reach openssl unchanged
    out = subprocess.run(["openssl", "passwd", flag, "-salt", salt, "-stdin"],
                         input=password.encode(), capture_output=True, check=True)
    return out.stdout.decode().strip()


def check(stored: str, password: str, scheme: str) -> None:
    assert scheme_of(stored) == scheme
    assert verify_password(stored, password)
    assert not verify_password(stored, password + "x")
    assert not verify_password(stored, password[:-1])
    assert not verify_password(stored, "")


# --- argon2 -------------------------------------------------------------------------------

def test_new_hashes_are_argon2id_and_current():
    stored = hash_password(UNICODE)
    assert stored.startswith("{ARGON2ID}$argon2id$")
    check(stored, UNICODE, "ARGON2ID")
    assert not needs_rehash(stored)


@pytest.mark.parametrize("prefix", ["{ARGON2ID}", "{argon2id}", "{ARGON2}", ""])
def test_argon2id_prefixes(prefix):
    phc = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("secret")
    check(prefix + phc, "secret", "ARGON2ID")
    assert needs_rehash(prefix + phc)  # not the current parameters


def test_argon2i():
    from argon2 import Type
    phc = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I).hash("s3")
    assert phc.startswith("$argon2i$")
    check("{ARGON2I}" + phc, "s3", "ARGON2I")
    check(phc, "s3", "ARGON2I")
    assert needs_rehash("{ARGON2I}" + phc)


# --- bcrypt -------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["{BLF-CRYPT}", "{BCRYPT}", "{blf-crypt}", "{CRYPT}", ""])
@pytest.mark.parametrize("variant", ["2a", "2b", "2y"])
def test_bcrypt(prefix, variant):
    h = bcrypt.hashpw(UNICODE.encode(), bcrypt.gensalt(4, prefix=b"2b")).decode()
    stored = prefix + h.replace("$2b$", f"${variant}$", 1)
    check(stored, UNICODE, "BLF-CRYPT")
    assert needs_rehash(stored)


def test_bcrypt_published_vector():
    # the classic OpenBSD / John the Ripper test vector
    check("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U", "BLF-CRYPT")


def test_bcrypt_uses_the_first_72_bytes_like_every_implementation():
    long = "a" * 72
    stored = bcrypt.hashpw(long.encode(), bcrypt.gensalt(4)).decode()
    assert verify_password(stored, long + "ignored")
    assert not verify_password(stored, "a" * 71)


# --- crypt(3) -----------------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "scheme", "salt"), [
    ("-6", "SHA512-CRYPT", "saltsaltsaltsalt"),
    ("-6", "SHA512-CRYPT", "s"),
    ("-5", "SHA256-CRYPT", "0123456789abcdef"),
    ("-5", "SHA256-CRYPT", "ab./"),
    ("-1", "MD5-CRYPT", "12345678"),
    ("-1", "MD5-CRYPT", "x"),
    ("-apr1", "APR1-CRYPT", "abcdefgh"),
])
@pytest.mark.parametrize("password", ["Hello world!", UNICODE, "x" * 200, "a"])
def test_crypt_against_openssl(flag, scheme, salt, password):
    stored = openssl_passwd(flag, salt, password)
    check(stored, password, scheme)
    assert needs_rehash(stored)


@pytest.mark.parametrize("prefix", ["{CRYPT}", "{crypt}", "{SHA512-CRYPT}"])
def test_crypt_prefixes(prefix):
    stored = openssl_passwd("-6", "abcdefgh", "pencil")
    check(prefix + stored, "pencil", "SHA512-CRYPT")
    md5 = openssl_passwd("-1", "abcdefgh", "pencil")
    check("{MD5-CRYPT}" + md5, "pencil", "MD5-CRYPT")
    check("{MD5}" + md5, "pencil", "MD5-CRYPT")  # Dovecot's {MD5} is MD5-crypt


# Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", test vectors (with rounds=)
DREPPER = [
    ("sha512", "saltstring", "Hello world!",
     ("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcb"
      "YEdFCoEOfaS35inz1")),
    ("sha512", "rounds=10000$saltstringsaltstring", "Hello world!",
     ("$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0"
      "Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.")),
    ("sha256", "saltstring", "Hello world!",
     "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    ("sha256", "rounds=10000$saltstringsaltstring", "Hello world!",
     "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
    ("sha256", "rounds=10$roundstoolow", "the minimum number is still observed",
     "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"),
]


@pytest.mark.parametrize(("algorithm", "setting", "password", "expected"), DREPPER)
def test_sha_crypt_spec_vectors(algorithm, setting, password, expected):
    assert sha_crypt(password.encode(), setting, algorithm) == expected
    scheme = "SHA512-CRYPT" if algorithm == "sha512" else "SHA256-CRYPT"
    check(expected, password, scheme)


def test_md5_crypt_direct():
    assert md5_crypt(b"Hello world!", "saltstring") == \
        openssl_passwd("-1", "saltstring", "Hello world!")


def test_crypt_rounds_over_the_limit_do_not_verify():
    assert not verify_password("$6$rounds=999999999$salt$" + "a" * 86, "x")


# --- PBKDF2 -------------------------------------------------------------------------------

PBKDF2_VECTORS = [
    # Django's own test suite (tests/auth_tests/test_hashers.py, Django 1.5 and 1.8)
    ("pbkdf2_sha256$10000$seasalt$CWWFdHOWwPnki7HvkcqN9iA2T3KLW1cf2uZ5kvArtVY=", "lètmein",
     "PBKDF2-SHA256"),
    ("pbkdf2_sha256$20000$seasalt$oBSd886ysm3AqYun62DOdin8YcfbU1z9cksZSuLP9r0=", "lètmein",
     "PBKDF2-SHA256"),
    # passlib's test suite and documentation
    ("pbkdf2_sha1$10000$wz5B6WkasRoF$atJmJ1o+XfJxKq1+Nu1f1i57Z5I=", "not a password",
     "PBKDF2-SHA1"),
    ("$pbkdf2-sha256$1212$4vjV83LKPjQzk31VI4E0Vw$hsYF68OiOUPdDZ1Fg.fJPeq1h/gXXY7acBp9/6c.tmQ",
     "password", "PBKDF2-SHA256"),
    ("$pbkdf2-sha256$6400$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M",
     "password", "PBKDF2-SHA256"),
    (("$pbkdf2-sha512$1212$RHY0Fr3IDMSVO/RSZyb5ow$eNLfBK.eVozomMr.1gYa17k9B7KIK25NOEshvhrSX."
      "esqY3s.FvWZViXz4KoLlQI.BzY/YTNJOiKc5gBYFYGww"), "password", "PBKDF2-SHA512"),
    ("$pbkdf2$1212$OB.dtnSEXZK8U5cgxU/GYQ$y5LKPOplRmok7CZp/aqVDVg8zGI", "password",
     "PBKDF2-SHA1"),
    # Dovecot's {PBKDF2} layout around the RFC 6070 vector (P="password", S="salt", c=4096)
    ("{PBKDF2}$1$salt$4096$4b007901b765489abead49d926f721d065a429c1", "password",
     "PBKDF2-SHA1"),
]


@pytest.mark.parametrize(("stored", "password", "scheme"), PBKDF2_VECTORS)
def test_pbkdf2_vectors(stored, password, scheme):
    check(stored, password, scheme)
    if not stored.startswith("{"):
        check("{PBKDF2}" + stored, password, scheme)
        check("{pbkdf2}" + stored, password, scheme)


def test_pbkdf2_non_ascii_against_hashlib():
    salt = os.urandom(12)
    dk = hashlib.pbkdf2_hmac("sha512", UNICODE.encode(), salt, 1000)

    def ab64(b: bytes) -> str:
        return base64.b64encode(b).decode().rstrip("=").replace("+", ".")

    check(f"$pbkdf2-sha512$1000${ab64(salt)}${ab64(dk)}", UNICODE, "PBKDF2-SHA512")
    dj = hashlib.pbkdf2_hmac("sha256", UNICODE.encode(), b"NaCl", 1000)
    check(f"pbkdf2_sha256$1000$NaCl${base64.b64encode(dj).decode()}", UNICODE,
          "PBKDF2-SHA256")


# --- RFC 2307 digests ---------------------------------------------------------------------

DIGESTS = [("SHA", "sha1"), ("SHA256", "sha256"), ("SHA512", "sha512"), ("MD5", "md5")]
SALTED = [("SSHA", "sha1"), ("SSHA256", "sha256"), ("SSHA512", "sha512"), ("SMD5", "md5")]


@pytest.mark.parametrize(("scheme", "algorithm"), DIGESTS)
@pytest.mark.parametrize("password", ["secret", UNICODE])
def test_unsalted_digests(scheme, algorithm, password):
    digest = hashlib.new(algorithm, password.encode()).digest()
    check(f"{{{scheme}}}{base64.b64encode(digest).decode()}", password, scheme)
    check(f"{{{scheme.lower()}}}{base64.b64encode(digest).decode()}", password, scheme)
    check(f"{{{scheme}.HEX}}{digest.hex()}", password, scheme)


@pytest.mark.parametrize(("scheme", "algorithm"), SALTED)
@pytest.mark.parametrize("salt_len", [4, 8, 16])
@pytest.mark.parametrize("password", ["secret", UNICODE])
def test_salted_digests(scheme, algorithm, salt_len, password):
    salt = os.urandom(salt_len)
    raw = hashlib.new(algorithm, password.encode() + salt).digest() + salt
    check(f"{{{scheme}}}{base64.b64encode(raw).decode()}", password, scheme)
    check(f"{{{scheme}.hex}}{raw.hex()}", password, scheme)


def test_ssha_and_sha_against_openssl_digests():
    # the same digests computed by openssl's own SHA-1 code, not hashlib
    def openssl_digest(algorithm: str, data: bytes) -> bytes:
        return subprocess.run(["openssl", "dgst", f"-{algorithm}", "-binary"], input=data,
                              capture_output=True, check=True).stdout
    salt = b"\x01\x02\x03\x04salt"
    raw = openssl_digest("sha1", b"pencil" + salt) + salt
    check("{SSHA}" + base64.b64encode(raw).decode(), "pencil", "SSHA")
    check("{SHA}" + base64.b64encode(openssl_digest("sha1", b"pencil")).decode(), "pencil",
          "SHA")
    raw = openssl_digest("sha512", b"pencil" + salt) + salt
    check("{SSHA512}" + base64.b64encode(raw).decode(), "pencil", "SSHA512")


def test_published_rfc2307_values():
    # {SHA} of "password" as it appears in OpenLDAP / RFC 2307 examples
    check("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "password", "SHA")
    # Dovecot PLAIN-MD5 of "password" (hex) and {MD5} base64
    check("{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99", "password", "MD5")
    check("{MD5}X03MO1qnZdYdgyfeuILPmQ==", "password", "MD5")


# --- clear text ---------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["{PLAIN}", "{CLEAR}", "{plain}", "{Clear}"])
def test_plain(prefix):
    check(prefix + UNICODE, UNICODE, "PLAIN")
    assert needs_rehash(prefix + UNICODE)


# --- what never verifies ------------------------------------------------------------------

@pytest.mark.parametrize("stored", [
    "", "secret", "{", "{}", "{UNKNOWN}abc", "{CRYPT}abJnggxhB/yWI",  # DES crypt
    "{SSHA}", "{SSHA}!!!notbase64", "{SSHA}" + base64.b64encode(b"short").decode(),
    "{SHA}" + base64.b64encode(b"x" * 21).decode(),
    "{ARGON2ID}", "{ARGON2ID}$argon2id$garbage", "$argon2id$v=19$m=8,t=1,p=1$",
    "{BLF-CRYPT}$2b$04$tooshort", "$2b$99$" + "a" * 53, "$2y$",
    "$6$", "$6$salt", "$6$salt$", "$5$rounds=abc", "$1$$", "$apr1$",
    "pbkdf2_sha256$", "pbkdf2_sha256$x$salt$hash", "pbkdf2_sha256$0$salt$AAAA",
    "pbkdf2_sha256$1000$salt$!!!", "pbkdf2_sha256$1000$salt$",
    "$pbkdf2-sha256$1000$salt", "$pbkdf2-sha256$99999999999$c2FsdA$AAAA",
    "$pbkdf2-sha1024$1000$c2FsdA$AAAA", "{PBKDF2}$1$salt$abc$00", "{PBKDF2}$1$salt$10$zz",
    "{PBKDF2}garbage", "\udcff", "{PLAIN\u00e9}x",
])
def test_malformed_hashes_return_false(stored):
    for password in ("", "x", "password", UNICODE, "\udcff"):
        assert verify_password(stored, password) is False
    assert needs_rehash(stored)


def test_unsupported_schemes_have_no_scheme_name():
    assert scheme_of("{UNKNOWN}abc") is None
    assert scheme_of("{CRYPT}abJnggxhB/yWI") is None
    assert scheme_of("plaintext") is None
    assert scheme_of(None) is None  # type: ignore[arg-type]
    assert verify_password(None, "x") is False  # type: ignore[arg-type]


def test_plain_password_with_lone_surrogate_never_raises():
    assert verify_password("{PLAIN}x", "\udcff") is False
    assert verify_password(hash_password("x"), "\udcff") is False
