"""SASL server mechanisms (RFC 4422), without I/O, for every protocol.

A protocol starts one exchange per AUTH/AUTHENTICATE command::

    exchange = sasl.start(name, initial_response, verify_plain=..., scram_secret=...,
                          verify_token=..., tls=conn.tls)
    reply = await exchange.begin()
    while isinstance(reply, sasl.Challenge):
        send_challenge(base64(reply.data))           # "334 …", "+ …"
        reply = await exchange.respond(read_line())  # "*" aborts, bad base64 fails
    # reply is an Outcome: success (username, authzid) or failure (reason)

Credentials are checked by async callbacks supplied by the caller, which does the
directory look-up and the brute-force accounting (``stalwart_mp.directory.auth``):

* ``verify_plain(authcid, password)`` → a truthy value, or an object whose ``ok`` attribute
  says so (``AuthResult``); kept in ``Outcome.result`` for the protocol to tell a ban or a
  temporary failure from a wrong password.
* ``scram_secret(username, mechanism)`` → the stored ``ScramSecret`` or None. For None the
  exchange goes on with made-up keys and fails at the proof, so that unknown users cannot be
  told from wrong passwords (RFC 5802 §5.1, RFC 7677 §4).
* ``verify_token(token, username_or_None)`` → the account name the bearer token grants, or
  None.

An exception raised by a callback (the directory is down) goes to the protocol, which
answers with a temporary failure.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from stalwart_mp.auth.credentials import ScramSecret
from stalwart_mp.auth.saslprep import saslprep

MAX_MESSAGE = 8192  # longest client response accepted, in bytes (after base64 decoding)

# RFC 7677 §4 / RFC 5802 §5.1: the iteration count SHOULD be at least 4096. Clients pay it
# on every login, so it stays moderate; the stored secrets say which count they use.
SCRAM_ITERATIONS = 10_000
SCRAM_SALT_BYTES = 16

SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2")
# Mechanisms that put a password or a bearer token on the wire (RFC 4616 §4, RFC 7628 §5).
CLEARTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"})

VerifyPlain = Callable[[str, str], Awaitable[object]]
ScramLookup = Callable[[str, str], Awaitable[ScramSecret | None]]
VerifyToken = Callable[[str, str | None], Awaitable[str | None]]


class Reason(str, Enum):
    """Why an exchange failed; protocols map these to their replies."""

    MALFORMED = "malformed"  # the client's message breaks the mechanism's syntax
    ABORTED = "aborted"  # the client sent "*" (RFC 4422 §3.5)
    INVALID_CREDENTIALS = "invalid-credentials"
    UNSUPPORTED_MECHANISM = "unsupported-mechanism"
    ENCRYPTION_REQUIRED = "encryption-required"  # cleartext mechanism without TLS
    AUTHZ_REFUSED = "authorization-refused"  # authzid names another user


@dataclass(slots=True, frozen=True)
class Challenge:
    """Server challenge; the protocol base64-encodes ``data``."""

    data: bytes


@dataclass(slots=True, frozen=True)
class Outcome:
    """End of the exchange. ``username`` is the authenticated account on success and the
    claimed one (when known) on failure, for logging and failure accounting. ``data`` is the
    additional data with the outcome when the protocol asked to receive it here instead of
    as a last challenge (RFC 4422 §3.6): the SCRAM server signature, or a SCRAM
    server-error ("e=…") that a protocol able to carry it may send."""

    success: bool
    username: str | None = None
    authzid: str | None = None
    reason: Reason | None = None
    data: bytes | None = None
    result: object = None


class SaslStateError(RuntimeError):
    """A step was sent to a finished exchange (a bug in the calling protocol)."""


def mechanisms_for(tls: bool, allow_plain_without_tls: bool = False, *,
                   oauth: bool = True) -> list[str]:
    """Mechanisms to advertise, best first. Cleartext ones (PLAIN, LOGIN and the bearer
    token mechanisms) only over TLS unless explicitly allowed."""
    clear_ok = tls or allow_plain_without_tls
    return [m for m in MECHANISMS
            if (clear_ok or m not in CLEARTEXT_MECHANISMS)
            and (oauth or m not in ("OAUTHBEARER", "XOAUTH2"))]


def decode_response(line: bytes, *, initial: bool = False) -> bytes | Reason:
    """A client response line as the protocols carry it: base64 (RFC 4422 §3),
    "*" to abort (RFC 4422 §3.5), and for an initial response "=" meaning empty
    (RFC 4954 §4, RFC 4959 §3)."""
    line = line.strip()
    if line == b"*" and not initial:
        return Reason.ABORTED
    if initial and line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return Reason.MALFORMED


def start(mechanism: str, initial_response: bytes | None, *,
          verify_plain: VerifyPlain | None = None,
          scram_secret: ScramLookup | None = None,
          verify_token: VerifyToken | None = None,
          tls: bool = True, allow_plain_without_tls: bool = False,
          success_data_in_outcome: bool = False,
          server_nonce: str | None = None,
          fake_salt_key: bytes | None = None,
          oauth_scope: str | None = None,
          openid_configuration: str | None = None,
          max_length: int = MAX_MESSAGE) -> SaslServer:
    """A server for one exchange. ``initial_response`` is None when the client sent none
    and ``b""`` for an empty one. ``server_nonce`` fixes the SCRAM server nonce (tests);
    ``fake_salt_key`` keeps the made-up salts of unknown users identical across workers."""
    name = mechanism.upper()
    options = _Options(verify_plain, scram_secret, verify_token, success_data_in_outcome,
                       server_nonce, fake_salt_key or _PROCESS_FAKE_KEY, oauth_scope,
                       openid_configuration, max_length)
    if name in CLEARTEXT_MECHANISMS and not (tls or allow_plain_without_tls):
        return _Refused(name, initial_response, options, Reason.ENCRYPTION_REQUIRED)
    if name in ("PLAIN", "LOGIN") and verify_plain is not None:
        return (PlainServer if name == "PLAIN" else LoginServer)(name, initial_response,
                                                                  options)
    if name in SCRAM_HASHES and scram_secret is not None:
        return ScramServer(name, initial_response, options)
    if name == "OAUTHBEARER" and verify_token is not None:
        return OAuthBearerServer(name, initial_response, options)
    if name == "XOAUTH2" and verify_token is not None:
        return XOAuth2Server(name, initial_response, options)
    return _Refused(name, initial_response, options, Reason.UNSUPPORTED_MECHANISM)


# --- the exchange ------------------------------------------------------------------------

_PROCESS_FAKE_KEY = os.urandom(32)


@dataclass(slots=True)
class _Options:
    verify_plain: VerifyPlain | None
    scram_secret: ScramLookup | None
    verify_token: VerifyToken | None
    success_data_in_outcome: bool
    server_nonce: str | None
    fake_salt_key: bytes
    oauth_scope: str | None
    openid_configuration: str | None
    max_length: int


class SaslServer:
    """One exchange. ``begin()`` once, then ``step()``/``respond()`` per client response
    until an ``Outcome``; ``abort()`` when the client sends "*"."""

    def __init__(self, mechanism: str, initial_response: bytes | None, options: _Options):
        self.mechanism = mechanism
        self.outcome: Outcome | None = None
        self._initial = initial_response
        self._options = options
        self._username: str | None = None  # claimed identity, once known

    @property
    def done(self) -> bool:
        return self.outcome is not None

    async def begin(self) -> Challenge | Outcome:
        """The reply to the AUTH command: the outcome or next challenge for the initial
        response, or the first challenge when there was none (RFC 4422 §3.3)."""
        if self._initial is None:
            return self._first_challenge()
        return await self.step(self._initial)

    async def step(self, data: bytes) -> Challenge | Outcome:
        """Process one decoded client response."""
        if self.outcome is not None:
            raise SaslStateError(f"{self.mechanism} exchange already finished")
        if len(data) > self._options.max_length:
            return self._fail(Reason.MALFORMED)
        return await self._step(data)

    async def respond(self, line: bytes) -> Challenge | Outcome:
        """Process one client response line as sent (base64, or "*")."""
        decoded = decode_response(line)
        if decoded is Reason.ABORTED:
            return self.abort()
        if isinstance(decoded, Reason):
            return self._fail(decoded)
        return await self.step(decoded)

    def abort(self) -> Outcome:
        """The client cancelled the exchange (RFC 4422 §3.5)."""
        if self.outcome is not None:
            raise SaslStateError(f"{self.mechanism} exchange already finished")
        return self._fail(Reason.ABORTED)

    # for the mechanisms

    def _first_challenge(self) -> Challenge | Outcome:
        return Challenge(b"")  # client-first mechanisms: an empty challenge (RFC 4422 §5)

    async def _step(self, data: bytes) -> Challenge | Outcome:
        raise SaslStateError(f"{self.mechanism} has no steps")

    def _finish(self, outcome: Outcome) -> Outcome:
        self.outcome = outcome
        return outcome

    def _fail(self, reason: Reason, *, data: bytes | None = None,
              result: object = None) -> Outcome:
        return self._finish(Outcome(False, self._username, reason=reason, data=data,
                                    result=result))


class _Refused(SaslServer):
    """Unknown, unconfigured or not-allowed-here mechanism: fails at ``begin()``."""

    def __init__(self, mechanism: str, initial_response: bytes | None, options: _Options,
                 reason: Reason):
        super().__init__(mechanism, initial_response, options)
        self._reason = reason

    async def begin(self) -> Challenge | Outcome:
        return self._fail(self._reason)


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _accepted(result: object) -> bool:
    ok = getattr(result, "ok", result)
    return bool(ok)


# --- PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) -------------------------------

class _PasswordServer(SaslServer):
    async def _check(self, authzid: str | None, authcid: str, password: str) -> Outcome:
        self._username = authcid
        if not authcid or not password:
            return self._fail(Reason.MALFORMED)
        # RFC 4616 §2: the server MAY refuse an authzid other than the authcid; we do.
        if authzid and authzid.casefold() != authcid.casefold():
            return self._fail(Reason.AUTHZ_REFUSED)
        verify = self._options.verify_plain
        assert verify is not None  # start() only creates password servers with a verifier
        result = await verify(authcid, password)
        if not _accepted(result):
            return self._fail(Reason.INVALID_CREDENTIALS, result=result)
        return self._finish(Outcome(True, authcid, authzid or None, result=result))


class PlainServer(_PasswordServer):
    async def _step(self, data: bytes) -> Challenge | Outcome:
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd, in UTF-8
        parts = data.split(b"\0")
        texts = [_text(p) for p in parts]
        if len(parts) != 3 or any(t is None for t in texts):
            return self._fail(Reason.MALFORMED)
        authzid, authcid, password = (t or "" for t in texts)
        return await self._check(authzid or None, authcid, password)


class LoginServer(_PasswordServer):
    """The obsolete LOGIN mechanism many clients still use: the user name and then the
    password, each asked for by a fixed challenge. An initial response is the user name."""

    USERNAME = b"Username:"
    PASSWORD = b"Password:"

    def __init__(self, mechanism: str, initial_response: bytes | None, options: _Options):
        super().__init__(mechanism, initial_response or None, options)
        self._login: str | None = None

    def _first_challenge(self) -> Challenge:
        return Challenge(self.USERNAME)

    async def _step(self, data: bytes) -> Challenge | Outcome:
        text = _text(data)
        if text is None or "\0" in text:
            return self._fail(Reason.MALFORMED)
        if self._login is None:
            if not text:
                return self._fail(Reason.MALFORMED)
            self._login = self._username = text
            return Challenge(self.PASSWORD)
        return await self._check(None, self._login, text)


# --- SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677) ---------------------------------------

_NONCE_CHARS = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802 §7 "printable" (no comma)


def derive_scram_secret(mechanism: str, password: str, salt: bytes,
                        iterations: int) -> ScramSecret:
    """RFC 5802 §3: SaltedPassword = Hi(Normalize(password), salt, i); ClientKey,
    StoredKey = H(ClientKey) and ServerKey, the only things the server keeps."""
    name = SCRAM_HASHES[mechanism]
    try:
        normalized = saslprep(password)  # RFC 5802 §2.2 Normalize() is SASLprep
    except ValueError:
        # Prohibited characters: use the password as given, as PostgreSQL and other
        # servers do, rather than make the account unusable with SCRAM.
        normalized = password
    salted = hashlib.pbkdf2_hmac(name, normalized.encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", name)
    return ScramSecret(mechanism=mechanism, salt=salt, iterations=iterations,
                       stored_key=hashlib.new(name, client_key).digest(),
                       server_key=hmac.digest(salted, b"Server Key", name))


def make_scram_secrets(password: str, iterations: int = SCRAM_ITERATIONS
                       ) -> list[ScramSecret]:
    """Stored SCRAM credentials for both mechanisms, each with its own random salt, kept
    beside the password hash by the internal directory."""
    return [derive_scram_secret(m, password, os.urandom(SCRAM_SALT_BYTES), iterations)
            for m in SCRAM_HASHES]


def _saslname(text: str) -> str | None:
    """RFC 5802 §5.1: "=2C" is ",", "=3D" is "="; any other "=" is invalid."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "=":
            code = text[i + 1:i + 3]
            if code not in ("2C", "3D"):
                return None
            out.append("," if code == "2C" else "=")
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class _ScramState(Enum):
    CLIENT_FIRST = "client-first"
    CLIENT_FINAL = "client-final"
    ACK = "ack"  # server-final sent as a challenge; waiting for the empty response


class ScramServer(SaslServer):
    def __init__(self, mechanism: str, initial_response: bytes | None, options: _Options):
        super().__init__(mechanism, initial_response, options)
        self._hash = SCRAM_HASHES[mechanism]
        self._state = _ScramState.CLIENT_FIRST
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._authzid: str | None = None
        self._secret: ScramSecret | None = None
        self._real = False
        self._pending: Outcome | None = None

    async def _step(self, data: bytes) -> Challenge | Outcome:
        text = _text(data)
        if text is None:
            return self._fail(Reason.MALFORMED, data=b"e=invalid-encoding")
        if self._state is _ScramState.CLIENT_FIRST:
            return await self._client_first(text)
        if self._state is _ScramState.CLIENT_FINAL:
            return self._client_final(text)
        pending = self._pending
        assert pending is not None
        if pending.success and data:  # the client has nothing to add after server-final
            return self._fail(Reason.MALFORMED)
        return self._finish(pending)

    async def _client_first(self, text: str) -> Challenge | Outcome:
        # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
        #              gs2-header = gs2-cbind-flag "," [ authzid ] ","
        flag, sep, rest = text.partition(",")
        if not sep:
            return self._fail(Reason.MALFORMED)
        if flag.startswith("p="):  # RFC 5802 §6: we do not offer the -PLUS variants
            return self._fail(Reason.MALFORMED, data=b"e=channel-binding-not-supported")
        if flag not in ("n", "y"):  # "y": client could bind but thinks we cannot — right
            return self._fail(Reason.MALFORMED)
        authz, sep, bare = rest.partition(",")
        if not sep:
            return self._fail(Reason.MALFORMED)
        if authz:
            authzid = _saslname(authz[2:]) if authz.startswith("a=") else None
            if not authzid:
                return self._fail(Reason.MALFORMED, data=b"e=invalid-username-encoding")
            self._authzid = authzid
        self._gs2_header = text[: len(text) - len(bare)]
        # client-first-message-bare = [reserved-mext ","] username "," nonce ["," ext]
        attrs = bare.split(",")
        if attrs[0].startswith("m="):  # RFC 5802 §5.1: mandatory extensions → fail
            return self._fail(Reason.MALFORMED, data=b"e=extensions-not-supported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            return self._fail(Reason.MALFORMED)
        username = _saslname(attrs[0][2:])
        if not username:
            return self._fail(Reason.MALFORMED, data=b"e=invalid-username-encoding")
        self._username = username
        client_nonce = attrs[1][2:]
        if not _NONCE_CHARS.fullmatch(client_nonce):
            return self._fail(Reason.MALFORMED)
        if self._authzid is not None and self._authzid.casefold() != username.casefold():
            return self._fail(Reason.AUTHZ_REFUSED)
        self._client_first_bare = bare

        lookup = self._options.scram_secret
        assert lookup is not None
        secret = await lookup(username, self.mechanism)
        self._real = secret is not None and secret.mechanism == self.mechanism
        self._secret = secret if self._real else self._fake_secret(username)
        server_nonce = self._options.server_nonce or \
            base64.b64encode(os.urandom(18)).decode()  # RFC 5802 §5.1: fresh, printable
        self._nonce = client_nonce + server_nonce
        # RFC 5802 §7: server-first-message = nonce "," salt "," iteration-count
        assert self._secret is not None
        self._server_first = (f"r={self._nonce},"
                              f"s={base64.b64encode(self._secret.salt).decode()},"
                              f"i={self._secret.iterations}")
        self._state = _ScramState.CLIENT_FINAL
        return Challenge(self._server_first.encode())

    def _fake_secret(self, username: str) -> ScramSecret:
        """Keys nobody can match, with a salt that stays the same for the same unknown user
        (RFC 5802 §5.1: do not reveal whether the user exists)."""
        digest = hmac.digest(self._options.fake_salt_key,
                             f"{self.mechanism}\0{username.casefold()}".encode(), "sha256")
        size = hashlib.new(self._hash).digest_size
        return ScramSecret(self.mechanism, digest[:SCRAM_SALT_BYTES], SCRAM_ITERATIONS,
                           os.urandom(size), os.urandom(size))

    def _client_final(self, text: str) -> Challenge | Outcome:
        # RFC 5802 §7: client-final-message = client-final-message-without-proof "," proof
        #              client-final-message-without-proof = channel-binding "," nonce [...]
        without_proof, sep, proof_attr = text.rpartition(",")
        attrs = without_proof.split(",")
        if (not sep or not proof_attr.startswith("p=") or len(attrs) < 2
                or not attrs[0].startswith("c=") or not attrs[1].startswith("r=")):
            return self._fail(Reason.MALFORMED)
        try:
            cbind = base64.b64decode(attrs[0][2:], validate=True)
            proof = base64.b64decode(proof_attr[2:], validate=True)
        except (binascii.Error, ValueError):
            return self._fail(Reason.MALFORMED, data=b"e=invalid-encoding")
        # RFC 5802 §7: without channel binding, c= is the base64 of the gs2-header
        if not hmac.compare_digest(cbind, self._gs2_header.encode()):
            return self._fail(Reason.MALFORMED, data=b"e=channel-bindings-dont-match")
        if not hmac.compare_digest(attrs[1][2:].encode(), self._nonce.encode()):
            return self._fail(Reason.MALFORMED, data=b"e=other-error")
        secret = self._secret
        assert secret is not None
        if len(proof) != len(secret.stored_key):
            return self._fail(Reason.MALFORMED, data=b"e=invalid-proof")

        # RFC 5802 §3: AuthMessage, ClientSignature, ClientKey = ClientProof XOR signature;
        # the proof is good when H(ClientKey) equals the StoredKey.
        auth_message = (f"{self._client_first_bare},{self._server_first},"
                        f"{without_proof}").encode()
        client_signature = hmac.digest(secret.stored_key, auth_message, self._hash)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        good = hmac.compare_digest(hashlib.new(self._hash, client_key).digest(),
                                   secret.stored_key)
        if good and self._real:
            # RFC 5802 §7: server-final-message = verifier; verifier = "v=" ServerSignature
            server_signature = hmac.digest(secret.server_key, auth_message, self._hash)
            final = b"v=" + base64.b64encode(server_signature)
            outcome = Outcome(True, self._username, self._authzid)
        else:
            final = b"e=invalid-proof"  # RFC 5802 §7 server-error-value
            outcome = Outcome(False, self._username, reason=Reason.INVALID_CREDENTIALS)
        if self._options.success_data_in_outcome:
            return self._finish(Outcome(outcome.success, outcome.username, outcome.authzid,
                                        outcome.reason, data=final))
        # Protocols that cannot carry data with the outcome send server-final as one more
        # challenge, answered by an empty response (RFC 4954 §4, RFC 4422 §3.6).
        self._state, self._pending = _ScramState.ACK, outcome
        return Challenge(final)


# --- OAUTHBEARER (RFC 7628) and XOAUTH2 (Google) --------------------------------------------

_KEY = re.compile(r"[A-Za-z]+")
_BEARER = re.compile(r"bearer ([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)  # RFC 6750 §2.1


def _kvpairs(text: str) -> dict[str, str] | None:
    """RFC 7628 §3.1: kvpair = key "=" value, separated by %x01."""
    pairs: dict[str, str] = {}
    for item in text.split("\x01"):
        key, sep, value = item.partition("=")
        if not sep or not _KEY.fullmatch(key):
            return None
        pairs[key] = value
    return pairs


class _TokenServer(SaslServer):
    def __init__(self, mechanism: str, initial_response: bytes | None, options: _Options):
        super().__init__(mechanism, initial_response, options)
        self._failed = False  # the error challenge was sent; waiting for the client's ack

    async def _check(self, auth: str | None, user: str | None) -> Challenge | Outcome:
        match = _BEARER.fullmatch(auth or "")
        if match is None:
            return self._fail(Reason.MALFORMED)
        verify = self._options.verify_token
        assert verify is not None
        account = await verify(match.group(1), user)
        if account:
            self._username = account
            return self._finish(Outcome(True, account, user if user != account else None))
        self._failed = True
        return Challenge(self._error())

    def _error(self) -> bytes:
        raise SaslStateError(f"{self.mechanism} has no error challenge")

    async def _step(self, data: bytes) -> Challenge | Outcome:
        if self._failed:
            # RFC 7628 §3.2.3: the client answers the error with %x01 (XOAUTH2: empty);
            # whatever it sends, the exchange fails.
            return self._fail(Reason.INVALID_CREDENTIALS)
        text = _text(data)
        if text is None:
            return self._fail(Reason.MALFORMED)
        return await self._message(text)

    async def _message(self, text: str) -> Challenge | Outcome:
        return self._fail(Reason.MALFORMED)


class OAuthBearerServer(_TokenServer):
    async def _message(self, text: str) -> Challenge | Outcome:
        # RFC 7628 §3.1: client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep
        flag, sep, rest = text.partition(",")
        if not sep or flag not in ("n", "y"):  # channel binding is not defined for it
            return self._fail(Reason.MALFORMED)
        authz, sep, rest = rest.partition(",")
        if not sep or (authz and not authz.startswith("a=")):
            return self._fail(Reason.MALFORMED)
        user = _saslname(authz[2:]) if authz else None
        if authz and not user:
            return self._fail(Reason.MALFORMED)
        self._username = user
        if not (rest.startswith("\x01") and rest.endswith("\x01\x01")) or len(rest) < 3:
            return self._fail(Reason.MALFORMED)
        pairs = _kvpairs(rest[1:-2])
        if pairs is None:
            return self._fail(Reason.MALFORMED)
        return await self._check(pairs.get("auth"), user)

    def _error(self) -> bytes:
        # RFC 7628 §3.2.2: a JSON error with "status" and optionally scope and the
        # OpenID discovery URL
        body: dict[str, str] = {"status": "invalid_token"}
        if self._options.oauth_scope:
            body["scope"] = self._options.oauth_scope
        if self._options.openid_configuration:
            body["openid-configuration"] = self._options.openid_configuration
        return json.dumps(body, separators=(",", ":")).encode()


class XOAuth2Server(_TokenServer):
    async def _message(self, text: str) -> Challenge | Outcome:
        # Google's XOAUTH2: "user=" user ^A "auth=Bearer " token ^A ^A
        if not text.endswith("\x01\x01"):
            return self._fail(Reason.MALFORMED)
        pairs = _kvpairs(text[:-2])
        if pairs is None or not pairs.get("user"):
            return self._fail(Reason.MALFORMED)
        self._username = pairs["user"]
        return await self._check(pairs.get("auth"), pairs["user"])

    def _error(self) -> bytes:
        # the error Google sends before the client's empty response
        body = {"status": "401", "schemes": "bearer"}
        if self._options.oauth_scope:
            body["scope"] = self._options.oauth_scope
        return json.dumps(body, separators=(",", ":")).encode()
