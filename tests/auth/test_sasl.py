"""SASL mechanisms, driven without I/O, including the RFC 5802 and RFC 7677 examples."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from stalwart_mp.auth import sasl
from stalwart_mp.auth.sasl import Challenge, Outcome, Reason
from stalwart_mp.auth.saslprep import saslprep
from stalwart_mp.directory.base import ScramSecret

USERS = {"jane": "right-pässwörd", "user": "pencil", "jöhn@例え.jp": "日本語のパスワード"}
TOKENS = {"good-token.123": "jane"}


async def verify_plain(authcid: str, password: str) -> bool:
    return USERS.get(authcid) == password


async def verify_token(token: str, user: str | None) -> str | None:
    account = TOKENS.get(token)
    return account if account and user in (None, account, f"{account}@example.com") else None


SECRETS: dict[tuple[str, str], ScramSecret] = {}


async def scram_secret(username: str, mechanism: str) -> ScramSecret | None:
    return SECRETS.get((username, mechanism))


def start(mechanism: str, initial: bytes | None = None, **kw) -> sasl.SaslServer:
    kw.setdefault("verify_plain", verify_plain)
    kw.setdefault("scram_secret", scram_secret)
    kw.setdefault("verify_token", verify_token)
    return sasl.start(mechanism, initial, **kw)


# --- advertising --------------------------------------------------------------------------

def test_mechanisms_for():
    assert sasl.mechanisms_for(tls=True) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
                                             "LOGIN", "OAUTHBEARER", "XOAUTH2"]
    assert sasl.mechanisms_for(tls=False) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert sasl.mechanisms_for(False, True) == sasl.mechanisms_for(True)
    assert sasl.mechanisms_for(True, oauth=False) == ["SCRAM-SHA-256", "SCRAM-SHA-1",
                                                      "PLAIN", "LOGIN"]


async def test_cleartext_mechanism_without_tls_is_refused():
    for name in ("PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"):
        out = await start(name, b"\0jane\0pw", tls=False).begin()
        assert out == Outcome(False, reason=Reason.ENCRYPTION_REQUIRED)
    out = await start("PLAIN", "\0jane\0right-pässwörd".encode(), tls=False,
                      allow_plain_without_tls=True).begin()
    assert out.success


async def test_unknown_or_unconfigured_mechanism():
    assert (await start("CRAM-MD5").begin()).reason is Reason.UNSUPPORTED_MECHANISM
    assert (await sasl.start("PLAIN", None).begin()).reason is Reason.UNSUPPORTED_MECHANISM


def test_decode_response():
    assert sasl.decode_response(b"*") is Reason.ABORTED
    assert sasl.decode_response(b"=", initial=True) == b""
    assert sasl.decode_response(b"AGphbmU=\r\n") == b"\0jane"
    assert sasl.decode_response(b"not base64!") is Reason.MALFORMED


# --- PLAIN --------------------------------------------------------------------------------

async def test_plain_success_with_utf8_credentials():
    out = await start("plain", "\0jöhn@例え.jp\0日本語のパスワード".encode()).begin()
    assert out == Outcome(True, "jöhn@例え.jp", None, result=True)


async def test_plain_without_initial_response():
    server = start("PLAIN")
    assert await server.begin() == Challenge(b"")
    out = await server.respond(base64.b64encode("jane\0jane\0right-pässwörd".encode()))
    assert out.success and out.username == "jane" and out.authzid == "jane"
    with pytest.raises(sasl.SaslStateError):
        await server.step(b"again")


async def test_plain_failures():
    cases = {
        b"\0jane\0wrong": Reason.INVALID_CREDENTIALS,
        "\0nobody\0right-pässwörd".encode(): Reason.INVALID_CREDENTIALS,
        "bob\0jane\0right-pässwörd".encode(): Reason.AUTHZ_REFUSED,
        b"jane\0right": Reason.MALFORMED,  # one NUL
        b"\0jane\0pw\0extra": Reason.MALFORMED,
        b"\0\0password": Reason.MALFORMED,  # empty authcid
        b"\0jane\0": Reason.MALFORMED,  # empty password
        b"": Reason.MALFORMED,
        b"\0jane\0\xff\xfe": Reason.MALFORMED,  # not UTF-8
        b"\0jane\0" + b"x" * 9000: Reason.MALFORMED,  # over the 8 KiB cap
    }
    for message, reason in cases.items():
        out = await start("PLAIN", message).begin()
        assert not out.success and out.reason is reason, message[:30]


async def test_plain_abort_and_bad_base64():
    server = start("PLAIN")
    await server.begin()
    assert await server.respond(b"*") == Outcome(False, reason=Reason.ABORTED)
    server = start("PLAIN")
    await server.begin()
    assert (await server.respond(b"%%%")).reason is Reason.MALFORMED


async def test_verifier_result_object_with_ok_attribute():
    class Result:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

    async def banned(authcid: str, password: str) -> Result:
        return Result(False)
    out = await start("PLAIN", b"\0jane\0right", verify_plain=banned).begin()
    assert out.reason is Reason.INVALID_CREDENTIALS and isinstance(out.result, Result)
    assert out.username == "jane"


# --- LOGIN --------------------------------------------------------------------------------

async def test_login_success_and_failure():
    server = start("LOGIN")
    assert await server.begin() == Challenge(b"Username:")
    assert await server.step(b"jane") == Challenge(b"Password:")
    assert (await server.step("right-pässwörd".encode())).success

    server = start("LOGIN", b"jane")  # user name as initial response
    assert await server.begin() == Challenge(b"Password:")
    out = await server.step(b"wrong")
    assert out.reason is Reason.INVALID_CREDENTIALS and out.username == "jane"


async def test_login_malformed_and_abort():
    server = start("LOGIN")
    await server.begin()
    assert (await server.step(b"")).reason is Reason.MALFORMED
    server = start("LOGIN")
    await server.begin()
    await server.step(b"jane")
    assert server.abort() == Outcome(False, "jane", reason=Reason.ABORTED)


# --- SCRAM --------------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_rfc7677_scram_sha256_example_exactly():
    # RFC 7677 §3
    SECRETS[("user", "SCRAM-SHA-256")] = sasl.derive_scram_secret(
        "SCRAM-SHA-256", "pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    server = start("SCRAM-SHA-256", server_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert await server.begin() == Challenge(b"")
    assert await server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == Challenge(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final = await server.step(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert final == Challenge(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert await server.step(b"") == Outcome(True, "user", None)


async def test_rfc5802_scram_sha1_example_exactly():
    # RFC 5802 §5, with the signature in the outcome (protocols that carry success data)
    SECRETS[("user", "SCRAM-SHA-1")] = sasl.derive_scram_secret(
        "SCRAM-SHA-1", "pencil", base64.b64decode("QSXCR+Q6sek8bf92"), 4096)
    server = start("SCRAM-SHA-1", b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                   server_nonce="3rfcNHYJY1ZVvWVs7j", success_data_in_outcome=True)
    assert await server.begin() == Challenge(
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    out = await server.step(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                            b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert out == Outcome(True, "user", None, data=b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


class ScramClient:
    """A client computing RFC 5802 §3 by hand, to drive the server past the examples."""

    def __init__(self, mechanism: str, user: str, password: str, gs2: str = "n,,"):
        self.hash = sasl.SCRAM_HASHES[mechanism]
        self.password = saslprep(password).encode()
        self.gs2 = gs2
        self.bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r=clientNONCE"

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes, *, proof_override: bytes | None = None,
              nonce_suffix: str = "", cbind: str | None = None) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored = hashlib.new(self.hash, client_key).digest()
        c = cbind if cbind is not None else b64(self.gs2.encode())
        without = f"c={c},r={attrs['r']}{nonce_suffix}"
        auth = f"{self.bare},{server_first.decode()},{without}".encode()
        sig = hmac.digest(stored, auth, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        return f"{without},p={b64(proof_override or proof)}".encode()


@pytest.fixture
def jane_scram():
    for secret in sasl.make_scram_secrets(USERS["jane"]):
        SECRETS[("jane", secret.mechanism)] = secret
    yield
    SECRETS.pop(("jane", "SCRAM-SHA-1"))
    SECRETS.pop(("jane", "SCRAM-SHA-256"))


def test_make_scram_secrets():
    secrets = sasl.make_scram_secrets("pw")
    assert [s.mechanism for s in secrets] == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert all(len(s.salt) == 16 and s.iterations >= 4096 for s in secrets)
    assert secrets[0].salt != secrets[1].salt
    assert len(secrets[0].stored_key) == 32 and len(secrets[1].stored_key) == 20


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
@pytest.mark.parametrize("gs2", ["n,,", "y,,", "n,a=jane,"])
async def test_scram_success_with_generated_secrets(jane_scram, mechanism, gs2):
    client = ScramClient(mechanism, "jane", USERS["jane"], gs2)
    server = start(mechanism, client.first())
    server_first = (await server.begin()).data
    final = await server.step(client.final(server_first))
    assert isinstance(final, Challenge) and final.data.startswith(b"v=")
    out = await server.step(b"")
    assert out.success and out.username == "jane"
    assert out.authzid == ("jane" if "a=" in gs2 else None)


async def test_scram_wrong_password_and_unknown_user_look_alike(jane_scram):
    client = ScramClient("SCRAM-SHA-256", "jane", "wrong")
    server = start("SCRAM-SHA-256", client.first())
    first = (await server.begin()).data
    assert await server.step(client.final(first)) == Challenge(b"e=invalid-proof")
    out = await server.step(b"")
    assert out == Outcome(False, "jane", reason=Reason.INVALID_CREDENTIALS)

    ghost = ScramClient("SCRAM-SHA-256", "ghost", "anything")
    replies = []
    for _ in range(2):
        server = start("SCRAM-SHA-256", ghost.first())
        replies.append((await server.begin()).data)
        assert await server.step(ghost.final(replies[-1])) == Challenge(b"e=invalid-proof")
        assert (await server.step(b"")).reason is Reason.INVALID_CREDENTIALS
    salts = [dict(a.split("=", 1) for a in r.decode().split(","))["s"] for r in replies]
    assert salts[0] == salts[1]  # the same made-up salt every time
    assert f"i={sasl.SCRAM_ITERATIONS}".encode() in replies[0]


async def test_scram_utf8_password_and_escaped_username():
    name = "jöhn@例え.jp"
    for secret in sasl.make_scram_secrets(USERS[name]):
        SECRETS[(name, secret.mechanism)] = secret
    SECRETS[("a,b=c", "SCRAM-SHA-256")] = sasl.derive_scram_secret(
        "SCRAM-SHA-256", "p\u00a0w", b"saltsalt", 4096)  # NBSP: SASLprep maps it to space
    for user, password in ((name, USERS[name]), ("a,b=c", "p w")):
        client = ScramClient("SCRAM-SHA-256", user, password)
        server = start("SCRAM-SHA-256", client.first(), success_data_in_outcome=True)
        out = await server.step(client.final((await server.begin()).data))
        assert out.success and out.username == user


@pytest.mark.parametrize("first", [
    b"", b"n", b"n,", b"x,,n=jane,r=abc", b"n,,", b"n,,n=jane", b"n,,r=abc,n=jane",
    b"n,,n=,r=abc", b"n,,n=ja=2Xne,r=abc", b"n,,n=jane,r=", b"n,,n=jane,r=a\x7fb",
    b"n,,m=ext,n=jane,r=abc", b"n,b=jane,n=jane,r=abc", b"n,,n=\xff,r=abc",
    b"p=tls-unique,,n=jane,r=abc", b"n,,n=jane,r=" + b"a" * 9000,
])
async def test_scram_malformed_client_first(jane_scram, first):
    out = await start("SCRAM-SHA-256", first).begin()
    assert isinstance(out, Outcome) and out.reason is Reason.MALFORMED, first


async def test_scram_channel_binding_refused_with_error():
    out = await start("SCRAM-SHA-256", b"p=tls-server-end-point,,n=jane,r=abc").begin()
    assert out.data == b"e=channel-binding-not-supported"


async def test_scram_other_authzid_refused(jane_scram):
    out = await start("SCRAM-SHA-256", b"n,a=bob,n=jane,r=abc").begin()
    assert out.reason is Reason.AUTHZ_REFUSED


@pytest.mark.parametrize("kind", ["nonce", "cbind", "cbind-y", "short-proof", "no-proof",
                                  "bad-b64", "garbage", "empty"])
async def test_scram_malformed_client_final(jane_scram, kind):
    client = ScramClient("SCRAM-SHA-256", "jane", USERS["jane"])
    server = start("SCRAM-SHA-256", client.first())
    first = (await server.begin()).data
    message = {
        "nonce": lambda: client.final(first, nonce_suffix="x"),
        "cbind": lambda: client.final(first, cbind=b64(b"y,,")),
        "cbind-y": lambda: client.final(first, cbind=""),
        "short-proof": lambda: client.final(first, proof_override=b"short"),
        "no-proof": lambda: client.final(first).rsplit(b",p=", 1)[0],
        "bad-b64": lambda: client.final(first).rsplit(b",p=", 1)[0] + b",p=***",
        "garbage": lambda: b"hello",
        "empty": lambda: b"",
    }[kind]()
    out = await server.step(message)
    assert isinstance(out, Outcome) and out.reason is Reason.MALFORMED


async def test_scram_abort_and_non_empty_ack(jane_scram):
    client = ScramClient("SCRAM-SHA-1", "jane", USERS["jane"])
    server = start("SCRAM-SHA-1", client.first())
    first = (await server.begin()).data
    assert server.abort() == Outcome(False, "jane", reason=Reason.ABORTED)

    server = start("SCRAM-SHA-1", client.first())
    first = (await server.begin()).data
    assert isinstance(await server.step(client.final(first)), Challenge)
    assert (await server.step(b"unexpected")).reason is Reason.MALFORMED


# --- OAUTHBEARER and XOAUTH2 ----------------------------------------------------------------

def oauthbearer(token: str, user: str | None = "jane@example.com") -> bytes:
    gs2 = f"n,a={user}," if user else "n,,"
    return (f"{gs2}\x01host=mail.example.com\x01port=993\x01auth=Bearer {token}\x01\x01"
            ).encode()


async def test_oauthbearer_success():
    out = await start("OAUTHBEARER", oauthbearer("good-token.123")).begin()
    assert out.success and out.username == "jane" and out.authzid == "jane@example.com"
    out = await start("OAUTHBEARER", oauthbearer("good-token.123", None)).begin()
    assert out.success and out.authzid is None


async def test_oauthbearer_failure_path():
    server = start("OAUTHBEARER", oauthbearer("bad-token"),
                   openid_configuration="https://mail.example.com/.well-known/openid-"
                                        "configuration")
    error = await server.begin()
    assert error == Challenge(b'{"status":"invalid_token","openid-configuration":'
                              b'"https://mail.example.com/.well-known/openid-configuration"}')
    out = await server.step(b"\x01")  # RFC 7628 §3.2.3 dummy response
    assert out == Outcome(False, "jane@example.com", reason=Reason.INVALID_CREDENTIALS)


@pytest.mark.parametrize("message", [
    b"", b"\x01", b"n,,auth=Bearer x\x01\x01", b"p=tls,,\x01auth=Bearer x\x01\x01",
    b"n,,\x01auth=Bearer x\x01", b"n,,\x01auth=Basic eA==\x01\x01",
    b"n,,\x01auth=Bearer\x01\x01", b"n,,\x01=x\x01auth=Bearer x\x01\x01",
    b"n,u=jane,\x01auth=Bearer x\x01\x01", b"n,,\x01host=x\x01\x01",
])
async def test_oauthbearer_malformed(message):
    out = await start("OAUTHBEARER", message).begin()
    assert isinstance(out, Outcome) and out.reason is Reason.MALFORMED


async def test_xoauth2():
    msg = b"user=jane\x01auth=Bearer good-token.123\x01\x01"
    out = await start("XOAUTH2", msg).begin()
    assert out.success and out.username == "jane"

    server = start("XOAUTH2", b"user=jane\x01auth=Bearer nope\x01\x01")
    error = await server.begin()
    assert isinstance(error, Challenge) and b'"status":"401"' in error.data
    assert (await server.step(b"")).reason is Reason.INVALID_CREDENTIALS

    for bad in (b"user=jane\x01auth=Bearer x", b"auth=Bearer x\x01\x01",
                b"user=jane\x01\x01", b"user=jane\x01auth=bearer\x01\x01"):
        assert (await start("XOAUTH2", bad).begin()).reason is Reason.MALFORMED


# --- SASLprep -----------------------------------------------------------------------------

def test_saslprep_rfc4013_examples():
    # RFC 4013 §3
    assert saslprep("I\u00adX") == "IX"  # SOFT HYPHEN mapped to nothing
    assert saslprep("user") == "user"
    assert saslprep("USER") == "USER"  # case preserved
    assert saslprep("\u00aa") == "a"  # NFKC
    assert saslprep("\u2168") == "IX"  # NFKC
    with pytest.raises(ValueError):
        saslprep("\u0007")  # prohibited
    with pytest.raises(ValueError):
        saslprep("\u0627\u0031")  # bidi: must end with RandALCat
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space mapped to space
    assert saslprep("\u0627\u0628") == "\u0627\u0628"
    with pytest.raises(ValueError):
        saslprep("\u0627a\u0628")  # RandALCat and LCat mixed
