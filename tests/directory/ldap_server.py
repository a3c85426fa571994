"""A real OpenLDAP ``slapd`` for the LDAP directory tests, on free loopback ports.

``SlapdServer`` writes a slapd.conf (schemas core, cosine, inetorgperson, nis, misc, and a
small test schema for ``mailAlias`` / ``diskQuota``; an mdb database in a temp folder;
``ppolicy`` loaded for ``pwdAccountLockedTime``), loads the tree built from
``tests/directory/dataset.py`` with ``slapadd`` (offline, so no admin bind is needed),
converts the configuration to a cn=config folder with ``slaptest`` and starts
``slapd -d 0`` (in the foreground: the test owns the process) listening on ``ldap://``
(plain and StartTLS) and ``ldaps://``, with a certificate from ``generate_self_signed``.

Passwords are stored as ``{SSHA}`` for some users and ``{CRYPT}$6$`` (``openssl passwd -6``)
for the others, so both hash mode and bind mode check both schemes. The searches bind as
``cn=stalwart,dc=example,dc=org``, the only DN allowed to read ``userPassword``.

``shared_server()`` starts one server per test session on first use (the behavioural suite
calls ``make_ldap_directory`` from a function-scoped fixture, so it cannot request a
session fixture); it is stopped at interpreter exit, or earlier by ``stop_shared_server``.
"""
from __future__ import annotations

import atexit
import base64
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from stalwart_mp.tls.selfsigned import generate_self_signed
from tests.directory.dataset import ENTRIES, Entry
from tests.services import require_service

SLAPD = "/usr/sbin/slapd"
SLAPTEST = "/usr/sbin/slaptest"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = "/usr/lib/ldap"

BASE_DN = "dc=example,dc=org"
SERVICE_DN = f"cn=stalwart,{BASE_DN}"
SERVICE_SECRET = "stalwart-service-secret"
PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"
# Users whose password is stored as {CRYPT}$6$ (SHA-512 crypt); the others get {SSHA}.
CRYPT_USERS = {"bob", "dave"}

# RFC 5612 §2: 32473 is the enterprise number reserved for documentation and examples.
_TEST_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.32473.1.1.1 NAME 'mailAlias'
  DESC 'Another address of the recipient; "@domain" for a catch-all'
  EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )
attributetype ( 1.3.6.1.4.1.32473.1.1.2 NAME 'diskQuota'
  DESC 'Mailbox quota in bytes'
  EQUALITY integerMatch ORDERING integerOrderingMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.32473.1.2.1 NAME 'mailRecipientExtras'
  DESC 'Addresses, aliases and quota of an account, group or list'
  SUP top AUXILIARY MAY ( mail $ mailAlias $ diskQuota $ description ) )
"""


def check_slapd() -> None:
    """Raise unless the OpenLDAP server tools are installed (for ``require_service``)."""
    for tool in (SLAPD, SLAPTEST, SLAPADD):
        if not os.access(tool, os.X_OK):
            raise RuntimeError(f"{tool} not found (apt-get install slapd ldap-utils)")
    if not shutil.which("openssl"):
        raise RuntimeError("openssl not found (needed for {CRYPT}$6$ hashes)")


def require_slapd() -> None:
    require_service("slapd", check_slapd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the tree -----------------------------------------------------------------------------


def ssha(password: str) -> str:
    """``{SSHA}``: base64(SHA-1(password + salt) + salt), as slappasswd writes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def sha512_crypt(password: str) -> str:
    """``{CRYPT}$6$...``: SHA-512 crypt from ``openssl passwd -6``."""
    out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password.encode("utf-8"),
                         capture_output=True, check=True, timeout=30)
    return "{CRYPT}" + out.stdout.decode("ascii").strip()


def dn_of(e: Entry) -> str:
    return f"uid={e.name},{PEOPLE if e.type == 'individual' else GROUPS}"


def _attr(name: str, value: str) -> str:
    """One LDIF line; base64 (RFC 2849 ``::``) when the value is not plain ASCII."""
    if value.isascii() and not value.startswith((" ", ":", "<")):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def _record(dn: str, attrs: list[tuple[str, str]]) -> str:
    return "\n".join([_attr("dn", dn), *(_attr(k, v) for k, v in attrs)]) + "\n"


def dataset_ldif() -> str:
    """The dataset as LDIF: people under ou=people, groups and lists under ou=groups."""
    by_name = {e.name: e for e in ENTRIES}
    records = [
        _record(BASE_DN, [("objectClass", "top"), ("objectClass", "dcObject"),
                          ("objectClass", "organization"), ("dc", "example"),
                          ("o", "Example")]),
        _record(PEOPLE, [("objectClass", "organizationalUnit"), ("ou", "people")]),
        _record(GROUPS, [("objectClass", "organizationalUnit"), ("ou", "groups")]),
        _record(SERVICE_DN, [("objectClass", "organizationalRole"),
                             ("objectClass", "simpleSecurityObject"), ("cn", "stalwart"),
                             ("userPassword", ssha(SERVICE_SECRET))]),
    ]
    for e in ENTRIES:
        attrs: list[tuple[str, str]] = [("uid", e.name), ("cn", e.name)]
        if e.type == "individual":
            attrs = [("objectClass", "inetOrgPerson"), ("objectClass", "mailRecipientExtras"),
                     *attrs, ("sn", e.name)]
        elif e.type == "group":
            attrs = [("objectClass", "groupOfNames"), ("objectClass", "uidObject"),
                     ("objectClass", "mailRecipientExtras"), *attrs]
            attrs += [("member", dn_of(by_name[m])) for m in e.members]
        else:
            attrs = [("objectClass", "nisMailAlias"), ("objectClass", "uidObject"),
                     ("objectClass", "mailRecipientExtras"), *attrs]
            attrs += [("rfc822MailMember", m) for m in e.members]
        if e.emails:
            attrs.append(("mail", e.emails[0]))
            attrs += [("mailAlias", a) for a in e.emails[1:]]
        if e.description:
            attrs.append(("description", e.description))
        if e.quota_bytes:
            attrs.append(("diskQuota", str(e.quota_bytes)))
        if e.password is not None:
            hashed = sha512_crypt(e.password) if e.name in CRYPT_USERS else ssha(e.password)
            attrs.append(("userPassword", hashed))
        if e.disabled:  # ppolicy's permanent administrative lock
            attrs.append(("pwdAccountLockedTime", "000001010000Z"))
        records.append(_record(dn_of(e), attrs))
    return "\n".join(records)


# --- the server ---------------------------------------------------------------------------


class SlapdServer:
    """One slapd process with its own config, database and certificate in a temp folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stalwart-slapd-"))
        self.port = free_port()
        self.tls_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._write_config()
            self._load()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def _write_config(self) -> None:
        key_pem, cert_pem = generate_self_signed("localhost")
        (self.root / "key.pem").write_bytes(_as_bytes(key_pem))
        (self.root / "key.pem").chmod(0o600)
        (self.root / "cert.pem").write_bytes(_as_bytes(cert_pem))
        (self.root / "test.schema").write_text(_TEST_SCHEMA)
        (self.root / "db").mkdir()
        (self.root / "slapd.d").mkdir()
        schemas = [SCHEMA_DIR / f"{n}.schema"
                   for n in ("core", "cosine", "inetorgperson", "nis", "misc")]
        r = self.root
        conf = "\n".join([
            *(f"include {s}" for s in schemas),
            f"include {r / 'test.schema'}",
            f"pidfile {r / 'slapd.pid'}",
            f"argsfile {r / 'slapd.args'}",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            "moduleload ppolicy",  # defines pwdAccountLockedTime (OpenLDAP 2.5+)
            f"TLSCertificateFile {r / 'cert.pem'}",
            f"TLSCertificateKeyFile {r / 'key.pem'}",
            "database mdb",
            "maxsize 33554432",
            f'suffix "{BASE_DN}"',
            f'rootdn "cn=admin,{BASE_DN}"',
            f"directory {r / 'db'}",
            "index objectClass eq",
            "index uid,mail,mailAlias eq,sub",
            "index member eq",
            (f'access to attrs=userPassword by dn.exact="{SERVICE_DN}" read '
             "by anonymous auth by * none"),
            "access to * by * read",
            "",
        ])
        (r / "slapd.conf").write_text(conf)

    def _load(self) -> None:
        """slapadd creates and fills the database; only then can slaptest (which opens
        it) convert slapd.conf into the cn=config folder slapd runs with."""
        r = self.root
        (r / "data.ldif").write_text(dataset_ldif(), encoding="utf-8")
        _run([SLAPADD, "-f", str(r / "slapd.conf"), "-b", BASE_DN, "-l", str(r / "data.ldif")])
        _run([SLAPTEST, "-f", str(r / "slapd.conf"), "-F", str(r / "slapd.d")])

    def start(self) -> SlapdServer:
        """Start slapd (again, after ``stop``, on the same ports and data) and wait until
        it answers LDAP."""
        log = open(self.root / "slapd.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-F", str(self.root / "slapd.d"),
             "-h", f"{self.url}/ {self.ldaps_url}/"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self._wait_ready(time.monotonic() + 20)
        return self

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: {self.log_tail()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"slapd did not answer on {self.url}: {self.log_tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """True once the service account can bind (the database is open and loaded)."""
        from ldap3 import Connection, Server

        try:
            conn = Connection(Server("127.0.0.1", port=self.port, connect_timeout=1),
                              SERVICE_DN, SERVICE_SECRET, receive_timeout=2)
            ok = conn.bind()
            conn.unbind()
        except Exception:  # noqa: BLE001 - not listening yet
            return False
        return bool(ok)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.root / "slapd.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])


def _as_bytes(pem: str | bytes) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, check=False, capture_output=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): "
                           + (out.stderr or out.stdout).decode(errors="replace").strip())


_shared: SlapdServer | None = None


def shared_server() -> SlapdServer:
    """The session's slapd, started on first use (skips or fails without slapd)."""
    global _shared
    require_slapd()
    if _shared is None:
        server = SlapdServer()
        try:
            server.start()
        except BaseException:
            server.cleanup()
            raise
        _shared = server
        atexit.register(stop_shared_server)
    return _shared


def stop_shared_server() -> None:
    global _shared
    if _shared is not None:
        _shared.cleanup()
        _shared = None
