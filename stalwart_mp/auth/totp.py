"""Time-based one-time passwords (TOTP, RFC 6238) for the second factor of accounts.

Sans-I/O: no store, no clock of its own (callers pass the time), so the same code serves
the authenticator (``directory/auth.py``, which adds replay protection in the lookup store)
and the tests (RFC 6238 Appendix B, RFC 4226 Appendix D vectors).

A TOTP secret is kept as its Key Uri Format URI, the form every authenticator app reads
(``otpauth://totp/Issuer:account?secret=BASE32&issuer=Issuer&algorithm=SHA1&digits=6&
period=30``), as one more entry of the principal's ``secrets`` — Stalwart stores it the
same way. Hand-written: HOTP is a dozen lines over ``hmac``, no dependency needed.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

SCHEME = "otpauth://totp/"
PERIOD = 30          # RFC 6238 §4.1: X, the time step, 30 seconds by default (§5.2)
DIGITS = 6
DRIFT = 1            # RFC 6238 §5.2: accept one step of clock drift either way
SECRET_BYTES = 20    # 160 bits: the HMAC-SHA1 key length RFC 4226 §4 R6 recommends
_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


@dataclass(frozen=True, slots=True)
class TotpKey:
    """The parameters of one TOTP secret (as read from or written to an otpauth URI)."""

    secret: str              # base32 (RFC 4648 §6), upper case, no padding
    account: str = ""
    issuer: str = ""
    algorithm: str = "SHA1"
    digits: int = DIGITS
    period: int = PERIOD

    @property
    def key(self) -> bytes:
        return decode_secret(self.secret)

    def uri(self) -> str:
        """The Key Uri Format URI (label ``issuer:account``, issuer repeated as a
        parameter as the format recommends)."""
        label = quote(f"{self.issuer}:{self.account}" if self.issuer else self.account,
                      safe="@:")
        params = f"secret={self.secret}"
        if self.issuer:
            params += f"&issuer={quote(self.issuer, safe='')}"
        params += f"&algorithm={self.algorithm}&digits={self.digits}&period={self.period}"
        return SCHEME + label + "?" + params

    def code_at(self, at: float) -> str:
        return totp(self.key, at, period=self.period, digits=self.digits,
                    algorithm=self.algorithm)

    def step_of(self, at: float) -> int:
        return int(at // self.period)

    def verify(self, code: str, at: float, drift: int = DRIFT) -> int | None:
        """The time step ``code`` is valid for within ``drift`` steps of ``at``, or None.

        Every candidate is computed and compared in constant time (no early exit), so the
        answer's timing does not tell which step matched."""
        if len(code) != self.digits or not (code.isascii() and code.isdigit()):
            return None
        now = self.step_of(at)
        key = self.key
        found = None
        for step in range(now - drift, now + drift + 1):
            expected = hotp(key, step, self.digits, self.algorithm)
            if hmac.compare_digest(expected.encode(), code.encode()) and found is None:
                found = step
        return found


def hotp(key: bytes, counter: int, digits: int = DIGITS, algorithm: str = "SHA1") -> str:
    """RFC 4226 §5.3: HMAC over the 8-byte big-endian counter, dynamic truncation, then
    the low ``digits`` decimal digits, zero-padded."""
    mac = hmac.new(key, counter.to_bytes(8, "big"), _DIGESTS[algorithm]).digest()
    offset = mac[-1] & 0x0F
    binary = int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF
    return str(binary % 10 ** digits).zfill(digits)


def totp(key: bytes, at: float, *, period: int = PERIOD, digits: int = DIGITS,
         algorithm: str = "SHA1", t0: int = 0) -> str:
    """RFC 6238 §4.2: HOTP with T = floor((time - T0) / X) as the counter."""
    return hotp(key, int((at - t0) // period), digits, algorithm)


def new_secret() -> str:
    """A fresh random 160-bit secret in base32 without padding (what apps expect)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def decode_secret(secret: str) -> bytes:
    """Base32 as users type it: any case, spaces and missing padding allowed.
    Raises ValueError when it is not base32."""
    text = secret.replace(" ", "").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def new_key(account: str, issuer: str) -> TotpKey:
    return TotpKey(secret=new_secret(), account=account, issuer=issuer)


def is_totp_uri(value: str) -> bool:
    return isinstance(value, str) and value[:len(SCHEME)].lower() == SCHEME


def parse_uri(uri: str) -> TotpKey:
    """A TotpKey from an ``otpauth://totp/`` URI; ValueError when it is not a usable one
    (no secret, bad base32, unknown algorithm, digits outside 6..8, period < 1)."""
    if not is_totp_uri(uri):
        raise ValueError("not an otpauth://totp/ URI")
    parts = urlsplit(uri)
    label = unquote(parts.path.lstrip("/"))
    query = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
    label_issuer, _, account = label.rpartition(":")
    secret = query.get("secret", "").replace(" ", "").upper().rstrip("=")
    if not secret:
        raise ValueError("the URI has no secret")
    decode_secret(secret)  # raises binascii.Error (a ValueError) for bad base32
    algorithm = query.get("algorithm", "SHA1").upper()
    if algorithm not in _DIGESTS:
        raise ValueError(f"unsupported algorithm {algorithm}")
    digits = int(query.get("digits", DIGITS))
    period = int(query.get("period", PERIOD))
    if not 6 <= digits <= 8 or period < 1:
        raise ValueError("digits must be 6 to 8 and period positive")
    return TotpKey(secret=secret, account=account.strip(),
                   issuer=query.get("issuer", label_issuer).strip(), algorithm=algorithm,
                   digits=digits, period=period)


def split_code(password: str, digits: int = DIGITS) -> tuple[str, str] | None:
    """``password$123456`` → ("password", "123456"); None when there is no such suffix
    (Stalwart's convention for passing the code with the password)."""
    base, sep, code = password.rpartition("$")
    if not sep or not base or len(code) != digits or not (code.isascii() and code.isdigit()):
        return None
    return base, code
