"""Connections to the LDAP server(s) of an LDAP directory, used from worker threads.

ldap3 is synchronous, so every LDAP exchange runs on a small ``ThreadPoolExecutor`` and the
event loop only awaits its future. Each of the ``size`` threads owns its connections (one
bound as ``bind.dn`` for searches, one more for password binds in bind mode): a connection
is never shared between threads, so no locking is needed and there are never more than
``size`` searches in flight per worker process.

Failover: the URLs are tried in order, starting with the last one that answered (so a dead
primary costs its connect timeout once, not on every new connection). A connection that
breaks mid-operation (server restarted, idle connection dropped by a firewall) is replaced
and the operation retried once. When no server answers, ``DirectoryUnavailable`` names every
URL with its error — a temporary failure, never "user unknown".
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlsplit

from ldap3 import ANONYMOUS, AUTO_BIND_NONE, NONE, SIMPLE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException

from stalwart_mp.directory.base import DirectoryUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

INVALID_CREDENTIALS = 49  # RFC 4511 §4.1.9 resultCode invalidCredentials

# Errors meaning "this connection is broken": drop it, reconnect, retry once.
_BROKEN = (LDAPCommunicationError, OSError)


class LdapPool:
    """Per-thread bound connections to the first LDAP server that answers."""

    def __init__(self, name: str, urls: list[str], *, bind_dn: str = "", bind_secret: str = "",
                 starttls: bool = False, allow_invalid_certs: bool = False,
                 timeout: float = 5.0, size: int = 4):
        self.name = name
        self.urls = list(urls)
        self.bind_dn = bind_dn
        self._bind_secret = bind_secret
        self.starttls = starttls
        self.timeout = timeout
        # ldap3 packs the receive timeout into SO_RCVTIMEO as whole seconds.
        self._receive_timeout = max(1, math.ceil(timeout))
        self.allow_invalid_certs = allow_invalid_certs
        self._preferred = 0  # index of the URL that answered last
        self._local = threading.local()
        # Every open connection with the URL it was opened from: to name the URL in errors
        # and to unbind them all on close.
        self._open_conns: dict[Connection, str] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=size,
                                            thread_name_prefix=f"ldap-{name}")
        self._closed = False

    # --- called from the event loop -----------------------------------------------------

    async def run(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation(connection)`` on a pool thread with a bound service connection."""
        if self._closed:
            raise DirectoryUnavailable(f"LDAP directory {self.name} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_service, operation)

    async def check_password(self, dn: str, password: str) -> bool:
        """Bind as ``dn`` with ``password``: True if the server accepts it.

        An empty password is refused here: RFC 4513 §5.1.2 makes a simple bind with a DN
        and no password an "unauthenticated" bind, which some servers (older Active
        Directory, OpenLDAP with "allow bind_anon_dn") answer with success.
        """
        if not password or not dn:
            return False
        if self._closed:
            raise DirectoryUnavailable(f"LDAP directory {self.name} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._bind_as, dn, password)

    async def close(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._shutdown)

    # --- on pool threads ----------------------------------------------------------------

    def _with_service(self, operation: Callable[[Connection], T]) -> T:
        for attempt in range(2):
            conn = getattr(self._local, "service", None)
            if conn is None or conn.closed:
                conn = self._local.service = self._open(self.bind_dn, self._bind_secret)
            try:
                return operation(conn)
            except _BROKEN as exc:
                url = self.url_of(conn)
                self._drop(conn)
                self._local.service = None
                if attempt:
                    raise DirectoryUnavailable(f"LDAP directory {self.name}: connection to "
                                               f"{url} failed: {_describe(exc)}") from exc
                log.info("ldap connection lost, reconnecting", extra={"fields": {
                    "directory": self.name, "url": url, "error": _describe(exc)}})
        raise AssertionError("unreachable")

    def _bind_as(self, dn: str, password: str) -> bool:
        for attempt in range(2):
            conn = getattr(self._local, "auth", None)
            if conn is None or conn.closed:
                conn = self._local.auth = self._open("", "")  # anonymous until the bind
            try:
                conn.user, conn.password, conn.authentication = dn, password, SIMPLE
                try:
                    if conn.bind(read_server_info=False):
                        return True
                finally:
                    conn.password = None  # keep no user password in memory
                code = conn.result.get("result") if conn.result else None
                if code == INVALID_CREDENTIALS:
                    return False
                # Anything else (busy, unavailable, unwillingToPerform...) is not an answer.
                description = conn.result.get("description") if conn.result else "no result"
                raise DirectoryUnavailable(f"LDAP directory {self.name}: {self.url_of(conn)} "
                                           f"could not check a password: {description}")
            except _BROKEN as exc:
                url = self.url_of(conn)
                self._drop(conn)
                self._local.auth = None
                if attempt:
                    raise DirectoryUnavailable(f"LDAP directory {self.name}: connection to "
                                               f"{url} failed: {_describe(exc)}") from exc
        raise AssertionError("unreachable")

    def _open(self, user: str, password: str) -> Connection:
        """A connection bound as ``user`` (anonymous when empty), from the first server
        that answers, starting with the preferred one."""
        errors = []
        n = len(self.urls)
        start = self._preferred
        for i in range(n):
            index = (start + i) % n
            url = self.urls[index]
            # A new Server each time: ldap3 remembers a failed address as unavailable for
            # a while (RESET_AVAILABILITY_TIMEOUT) and would refuse to retry a server that
            # just came back, with a misleading "invalid server address".
            server = _server(url, self.allow_invalid_certs, self.timeout)
            conn = Connection(
                server, user=user or None, password=password or None,
                authentication=SIMPLE if user else ANONYMOUS, client_strategy=SYNC,
                auto_bind=AUTO_BIND_NONE, read_only=True, raise_exceptions=False,
                check_names=False, auto_referrals=False, receive_timeout=self._receive_timeout)
            try:
                conn.open(read_server_info=False)
                if self.starttls and not server.ssl:
                    conn.start_tls(read_server_info=False)
                if not conn.bind(read_server_info=False):
                    description = conn.result.get("description") if conn.result else "refused"
                    errors.append(f"{url}: bind as {user or 'anonymous'} refused "
                                  f"({description})")
                    conn.unbind()
                    continue
            except (LDAPException, OSError) as exc:
                errors.append(f"{url}: {_describe(exc)}")
                _quietly_close(conn)
                continue
            self._preferred = index
            with self._lock:
                self._open_conns[conn] = url
            return conn
        raise DirectoryUnavailable(f"LDAP directory {self.name}: no server answered: "
                                   + "; ".join(errors))

    def _drop(self, conn: Connection) -> None:
        with self._lock:
            self._open_conns.pop(conn, None)
        _quietly_close(conn)

    def url_of(self, conn: Connection) -> str:
        """The configured URL of the server ``conn`` talks to (as the administrator wrote it)."""
        with self._lock:
            return self._open_conns.get(conn) or str(conn.server)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            conns, self._open_conns = list(self._open_conns), {}
        for conn in conns:
            _quietly_close(conn)


def _server(url: str, allow_invalid_certs: bool, timeout: float) -> Server:
    parts = urlsplit(url)
    use_ssl = parts.scheme.lower() == "ldaps"
    host = parts.hostname or "localhost"
    tls = Tls(validate=ssl.CERT_NONE if allow_invalid_certs else ssl.CERT_REQUIRED,
              sni=host)
    return Server(host, port=parts.port or (636 if use_ssl else 389), use_ssl=use_ssl,
                  tls=tls, get_info=NONE, connect_timeout=timeout)


def _describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _quietly_close(conn: Connection) -> None:
    # Closing a broken connection may fail in any way; it is being thrown away anyway.
    with contextlib.suppress(Exception):
        conn.unbind()
