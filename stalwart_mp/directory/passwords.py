"""Password hashing: argon2id for every new secret, stored with its ``{SCHEME}`` prefix.

(The directory issue adds verification of the other schemes LDAP and SQL directories use.)
"""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PREFIX = "{ARGON2ID}"
_hasher = PasswordHasher()  # RFC 9106 "low memory" profile defaults of argon2-cffi


def hash_password(password: str) -> str:
    return PREFIX + _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    if not stored.startswith(PREFIX):
        return False
    try:
        return _hasher.verify(stored[len(PREFIX):], password)
    except (VerificationError, InvalidHashError):
        return False
