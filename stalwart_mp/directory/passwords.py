"""Password hashing and verification.

Every new secret is hashed with argon2id and stored as ``{ARGON2ID}`` + its PHC string.
Verification also understands the schemes LDAP and SQL directories (and imported accounts)
use, so that they keep working and are upgraded to argon2id on the next good login
(``needs_rehash``):

* argon2: ``{ARGON2ID}``, ``{ARGON2I}``, ``{ARGON2}``, bare ``$argon2id$``/``$argon2i$``
* bcrypt: ``{BLF-CRYPT}``, ``{BCRYPT}``, bare ``$2a$``/``$2b$``/``$2y$``
* crypt(3): ``{CRYPT}``, ``{SHA512-CRYPT}``, ``{SHA256-CRYPT}``, ``{MD5-CRYPT}`` and bare
  ``$6$`` (SHA-512), ``$5$`` (SHA-256), ``$1$`` (MD5) and ``$apr1$`` (Apache MD5)
* PBKDF2: Django ``pbkdf2_sha256$iter$salt$hash``, passlib ``$pbkdf2-sha256$iter$salt$hash``
  (and ``$pbkdf2$``, ``$pbkdf2-sha512$``), Dovecot ``{PBKDF2}$1$salt$iter$hex``
* RFC 2307 style digests: ``{SHA}``, ``{SHA256}``, ``{SHA384}``, ``{SHA512}``, ``{MD5}``
  and the salted ``{SSHA}``, ``{SSHA256}``, ``{SSHA384}``, ``{SSHA512}``, ``{SMD5}`` (base64,
  or hex as Dovecot writes ``{PLAIN-MD5}``/``.HEX``)
* clear text: ``{PLAIN}``, ``{CLEAR}``, ``{CLEARTEXT}``

Scheme prefixes are case-insensitive; passwords are UTF-8 encoded; every comparison is
constant-time (``hmac.compare_digest``); a malformed or unknown hash never raises, it just
does not verify.

SHA-crypt and MD5-crypt are implemented here from their published algorithms (the stdlib
``crypt`` module is deprecated and gone in Python 3.13); bcrypt comes from pyca ``bcrypt``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PREFIX = "{ARGON2ID}"
_hasher = PasswordHasher()  # RFC 9106 "low memory" profile defaults of argon2-cffi

# Work factors of stored hashes are data, not code: a corrupt or hostile record must not
# pin a worker for minutes. Far above anything a real deployment uses.
MAX_CRYPT_ROUNDS = 2_000_000
MAX_PBKDF2_ITERATIONS = 10_000_000


def hash_password(password: str) -> str:
    return PREFIX + _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """True if ``password`` matches the stored hash; False for a mismatch, a malformed
    hash or an unsupported scheme (see ``scheme_of``)."""
    if not isinstance(stored, str) or not isinstance(password, str):
        return False
    if stored[:10].lower() == "otpauth://":  # a TOTP secret kept among the secrets, not a hash
        return False
    parsed = _parse(stored)
    if parsed is None:
        return False
    scheme, value = parsed
    verifier = _VERIFIERS.get(scheme)
    if verifier is None:
        return False
    try:
        return verifier(value, password.encode("utf-8"))
    except (ValueError, TypeError, OverflowError, VerificationError, InvalidHashError):
        # binascii.Error and UnicodeError are ValueErrors: bad encodings in the record,
        # or a password with lone surrogates that cannot be UTF-8 encoded.
        return False


def scheme_of(stored: str) -> str | None:
    """The canonical name of the stored hash's scheme ("ARGON2ID", "BLF-CRYPT",
    "SHA512-CRYPT", "PBKDF2-SHA256", "SSHA", "PLAIN"…), or None when it is not one that
    ``verify_password`` supports — for logging "unsupported scheme"."""
    if not isinstance(stored, str):
        return None
    parsed = _parse(stored)
    return parsed[0] if parsed is not None and parsed[0] in _VERIFIERS else None


def needs_rehash(stored: str) -> bool:
    """True unless ``stored`` is an argon2id hash with the current parameters."""
    if not isinstance(stored, str) or stored[: len(PREFIX)].upper() != PREFIX:
        return True
    phc = stored[len(PREFIX):]
    if not phc.startswith("$argon2id$"):
        return True
    try:
        return _hasher.check_needs_rehash(phc)
    except (ValueError, InvalidHashError):
        return True


# --- recognising the scheme ------------------------------------------------------------

# "{NAME}" prefixes → canonical scheme. "CRYPT" and the PBKDF2 family are resolved from
# the value that follows.
_PREFIXES: dict[str, str] = {
    "ARGON2ID": "ARGON2", "ARGON2I": "ARGON2", "ARGON2": "ARGON2",
    "BLF-CRYPT": "BLF-CRYPT", "BCRYPT": "BLF-CRYPT",
    "CRYPT": "CRYPT", "SHA512-CRYPT": "CRYPT", "SHA256-CRYPT": "CRYPT", "MD5-CRYPT": "CRYPT",
    "PBKDF2": "PBKDF2",
    "SHA": "SHA", "SHA1": "SHA", "SHA256": "SHA256", "SHA384": "SHA384", "SHA512": "SHA512",
    "SSHA": "SSHA", "SSHA1": "SSHA", "SSHA256": "SSHA256", "SSHA384": "SSHA384",
    "SSHA512": "SSHA512",
    "MD5": "MD5", "PLAIN-MD5": "MD5", "LDAP-MD5": "MD5", "SMD5": "SMD5",
    "PLAIN": "PLAIN", "CLEAR": "PLAIN", "CLEARTEXT": "PLAIN",
}


def _parse(stored: str) -> tuple[str, str] | None:
    """(canonical scheme, value) or None. The value keeps any ``.HEX``/``.B64`` hint of a
    digest scheme as a leading "hex:"/"b64:" marker."""
    if stored.startswith("{"):
        end = stored.find("}")
        if end < 0:
            return None
        name, value = stored[1:end].upper(), stored[end + 1:]
        encoding = ""
        for suffix, enc in ((".HEX", "hex:"), (".B64", "b64:"), (".BASE64", "b64:")):
            if name.endswith(suffix):
                name, encoding = name[: -len(suffix)], enc
        family = _PREFIXES.get(name)
        if family is None:
            return (name, value)
        if family in ("ARGON2", "BLF-CRYPT", "CRYPT"):
            return _bare(value)
        if family == "PBKDF2":
            return _pbkdf2_family(value)
        if family == "MD5" and value.startswith("$1$"):
            return ("MD5-CRYPT", value)  # Dovecot's {MD5} is MD5-crypt
        if family == "PLAIN":
            return ("PLAIN", value)
        return (family, encoding + value)
    return _bare(stored)


def _bare(value: str) -> tuple[str, str] | None:
    """Self-describing hashes (modular crypt format and friends)."""
    for marker, scheme in (("$argon2id$", "ARGON2ID"), ("$argon2i$", "ARGON2I"),
                           ("$argon2d$", "ARGON2D"), ("$2a$", "BLF-CRYPT"),
                           ("$2b$", "BLF-CRYPT"), ("$2y$", "BLF-CRYPT"),
                           ("$6$", "SHA512-CRYPT"), ("$5$", "SHA256-CRYPT"),
                           ("$1$", "MD5-CRYPT"), ("$apr1$", "APR1-CRYPT")):
        if value.startswith(marker):
            return (scheme, value)
    return _pbkdf2_family(value)


def _pbkdf2_family(value: str) -> tuple[str, str] | None:
    if value.startswith("$1$"):
        return ("PBKDF2-SHA1", "dovecot:" + value)
    head = value.split("$", 2)
    if value.startswith("$") and len(head) > 1:
        name = {"pbkdf2": "PBKDF2-SHA1", "pbkdf2-sha256": "PBKDF2-SHA256",
                "pbkdf2-sha512": "PBKDF2-SHA512"}.get(head[1])
        return (name, "passlib:" + value) if name else None
    name = {"pbkdf2_sha1": "PBKDF2-SHA1", "pbkdf2_sha256": "PBKDF2-SHA256",
            "pbkdf2_sha512": "PBKDF2-SHA512"}.get(head[0])
    return (name, "django:" + value) if name else None


# --- argon2 and bcrypt -----------------------------------------------------------------

def _verify_argon2(value: str, password: bytes) -> bool:
    # argon2-cffi reads the variant (id, i, d) and its parameters from the PHC string.
    return _hasher.verify(value, password)


def _verify_bcrypt(value: str, password: bytes) -> bool:
    # Every bcrypt implementation uses only the first 72 bytes of the key (OpenBSD
    # bcrypt.c); pyca bcrypt 5 refuses longer input instead of truncating.
    return bcrypt.checkpw(password[:72], value.encode("ascii"))


# --- SHA-crypt (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512") -----------------

_CRYPT64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# The spec's byte order for the final base-64 encoding: groups of three digest bytes,
# each written as four characters (the last group is shorter).
_SHA512_ORDER = ((0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4),
                 (47, 5, 26), (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51),
                 (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
                 (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19),
                 (62, 20, 41), (63,))
_SHA256_ORDER = ((0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
                 (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29), (31, 30))
_MD5_ORDER = ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5), (11,))


def _crypt64(digest: bytes, order: tuple[tuple[int, ...], ...]) -> bytes:
    out = bytearray()
    for group in order:
        word = 0
        for index in group:  # first index is the most significant byte
            word = (word << 8) | digest[index]
        for _ in range(len(group) + 1):  # 3 bytes → 4 chars, 2 → 3, 1 → 2
            out.append(_CRYPT64[word & 0x3F])
            word >>= 6
    return bytes(out)


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def sha_crypt(password: bytes, setting: str, algorithm: str = "sha512") -> str:
    """crypt(3) ``$6$``/``$5$``: ``setting`` is ``[rounds=N$]salt`` (the text after the
    magic). Returns the whole hash string, in the form glibc writes it."""
    magic = "$6$" if algorithm == "sha512" else "$5$"
    rounds, custom = 5000, False  # spec: default rounds 5000
    if setting.startswith("rounds="):
        number, sep, rest = setting[len("rounds="):].partition("$")
        if sep and number.isdigit():  # glibc: otherwise "rounds=…" is part of the salt
            rounds, custom, setting = max(1000, min(int(number), 999_999_999)), True, rest
    if rounds > MAX_CRYPT_ROUNDS:
        raise ValueError(f"{rounds} SHA-crypt rounds exceed the limit of {MAX_CRYPT_ROUNDS}")
    salt = setting.split("$", 1)[0][:16].encode()  # spec: salt is at most 16 characters
    new = getattr(hashlib, algorithm)
    size = new().digest_size
    n = len(password)

    b = new(password + salt + password).digest()  # spec steps 4-8 ("digest B")
    a = new(password + salt + _repeat(b, n))  # steps 1-3, 9-10
    i = n
    while i:  # step 11: bits of the password length pick B or the password
        a.update(b if i & 1 else password)
        i >>= 1
    c = a.digest()
    p = _repeat(new(password * n).digest(), n)  # steps 13-16 ("P sequence")
    s = _repeat(new(salt * (16 + c[0])).digest(), len(salt))  # steps 17-20 ("S sequence")
    for r in range(rounds):  # step 21
        h = new(p if r & 1 else c)
        if r % 3:
            h.update(s)
        if r % 7:
            h.update(p)
        h.update(c if r & 1 else p)
        c = h.digest()
    order = _SHA512_ORDER if size == 64 else _SHA256_ORDER
    head = magic + (f"rounds={rounds}$" if custom else "") + salt.decode()
    return head + "$" + _crypt64(c, order).decode()


# --- MD5-crypt (Poul-Henning Kamp, FreeBSD lib/libcrypt/crypt-md5.c) ---------------------

def md5_crypt(password: bytes, setting: str, magic: str = "$1$") -> str:
    """crypt(3) ``$1$`` (and Apache's ``$apr1$``, the same algorithm with its own magic)."""
    salt = setting.split("$", 1)[0][:8].encode()  # at most 8 salt characters
    final = hashlib.md5(password + salt + password).digest()
    ctx = hashlib.md5(password + magic.encode() + salt + _repeat(final, len(password)))
    i = len(password)
    while i:  # "Then something really weird…": a NUL byte or the first password byte
        ctx.update(b"\0" if i & 1 else password[:1])
        i >>= 1
    final = ctx.digest()
    for r in range(1000):  # "and now, just to make sure things don't run too fast"
        h = hashlib.md5(password if r & 1 else final)
        if r % 3:
            h.update(salt)
        if r % 7:
            h.update(password)
        h.update(final if r & 1 else password)
        final = h.digest()
    return magic + salt.decode() + "$" + _crypt64(final, _MD5_ORDER).decode()


def _crypt_verifier(compute: Callable[[bytes, str], str], magic: str
                    ) -> Callable[[str, bytes], bool]:
    def verify(value: str, password: bytes) -> bool:
        setting, sep, digest = value[len(magic):].rpartition("$")
        if not sep or not digest:
            return False
        expected = compute(password, setting)
        return hmac.compare_digest(expected.rpartition("$")[2].encode(),
                                   digest.encode("utf-8"))
    return verify


# --- PBKDF2 ------------------------------------------------------------------------------

def _ab64_decode(text: str) -> bytes:
    """passlib's "adapted base64": standard alphabet with "." for "+", no padding."""
    text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _pbkdf2_verifier(digest: str) -> Callable[[str, bytes], bool]:
    def verify(value: str, password: bytes) -> bool:
        style, _, value = value.partition(":")
        if style == "django":
            # Django: "<algorithm>$<iterations>$<salt>$<base64 hash>", salt used as text
            _, iterations, salt_text, encoded = value.split("$")
            salt, expected = salt_text.encode("utf-8"), base64.b64decode(encoded, validate=True)
        elif style == "passlib":
            # passlib: "$pbkdf2-<digest>$<iterations>$<ab64 salt>$<ab64 hash>"
            _, _, iterations, salt_text, encoded = value.split("$")
            salt, expected = _ab64_decode(salt_text), _ab64_decode(encoded)
        else:
            # Dovecot: "$1$<salt>$<rounds>$<hex PBKDF2-HMAC-SHA1>", salt used as text
            _, _, salt_text, iterations, encoded = value.split("$")
            salt, expected = salt_text.encode("utf-8"), bytes.fromhex(encoded)
        rounds = int(iterations)
        if not (1 <= rounds <= MAX_PBKDF2_ITERATIONS) or not expected:
            return False
        derived = hashlib.pbkdf2_hmac(digest, password, salt, rounds, len(expected))
        return hmac.compare_digest(derived, expected)
    return verify


# --- plain digests (RFC 2307 userPassword style) ----------------------------------------

def _decode_digest(value: str, size: int, salted: bool) -> list[bytes]:
    """Candidate raw values (digest + salt) of a base64 or hex field."""
    hint, _, rest = value.partition(":") if value[:4] in ("hex:", "b64:") else ("", "", value)
    candidates = []
    if hint in ("", "hex") and len(rest) % 2 == 0:
        try:
            candidates.append(bytes.fromhex(rest))
        except ValueError:
            pass
    if hint in ("", "b64"):
        try:
            candidates.append(base64.b64decode(rest, validate=True))
        except binascii.Error:
            pass
    return [c for c in candidates if (len(c) > size if salted else len(c) == size)]


def _digest_verifier(algorithm: str, salted: bool) -> Callable[[str, bytes], bool]:
    size = hashlib.new(algorithm).digest_size

    def verify(value: str, password: bytes) -> bool:
        ok = False
        for raw in _decode_digest(value, size, salted):
            expected, salt = raw[:size], raw[size:]
            ok |= hmac.compare_digest(hashlib.new(algorithm, password + salt).digest(),
                                      expected)
        return ok
    return verify


def _verify_plain(value: str, password: bytes) -> bool:
    return hmac.compare_digest(value.encode("utf-8"), password)


_VERIFIERS: dict[str, Callable[[str, bytes], bool]] = {
    "ARGON2ID": _verify_argon2,
    "ARGON2I": _verify_argon2,
    "ARGON2D": _verify_argon2,
    "BLF-CRYPT": _verify_bcrypt,
    "SHA512-CRYPT": _crypt_verifier(lambda p, s: sha_crypt(p, s, "sha512"), "$6$"),
    "SHA256-CRYPT": _crypt_verifier(lambda p, s: sha_crypt(p, s, "sha256"), "$5$"),
    "MD5-CRYPT": _crypt_verifier(md5_crypt, "$1$"),
    "APR1-CRYPT": _crypt_verifier(lambda p, s: md5_crypt(p, s, "$apr1$"), "$apr1$"),
    "PBKDF2-SHA1": _pbkdf2_verifier("sha1"),
    "PBKDF2-SHA256": _pbkdf2_verifier("sha256"),
    "PBKDF2-SHA512": _pbkdf2_verifier("sha512"),
    "SHA": _digest_verifier("sha1", salted=False),
    "SHA256": _digest_verifier("sha256", salted=False),
    "SHA384": _digest_verifier("sha384", salted=False),
    "SHA512": _digest_verifier("sha512", salted=False),
    "MD5": _digest_verifier("md5", salted=False),
    "SSHA": _digest_verifier("sha1", salted=True),
    "SSHA256": _digest_verifier("sha256", salted=True),
    "SSHA384": _digest_verifier("sha384", salted=True),
    "SSHA512": _digest_verifier("sha512", salted=True),
    "SMD5": _digest_verifier("md5", salted=True),
    "PLAIN": _verify_plain,
}
