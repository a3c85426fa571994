"""One IMAP connection: the sans-I/O reader and grammar glued to the transport, the
connection states of RFC 9051 §3 and the commands of any state (§6.1), the not-authenticated
state (§6.2) and IDLE (RFC 2177). Mailbox commands are in ``mailbox_cmds.py``, the
selected state in ``selected.py`` / ``fetch.py`` / ``search.py``.

Commands run one at a time in arrival order (a task per burst of input); the untagged
responses a command produces are gathered and written with its tagged completion.
"""
from __future__ import annotations

import asyncio
import base64
import enum
import logging
import zlib

from stalwart_mp import logs
from stalwart_mp.imap.protocol import commands as c
from stalwart_mp.imap.protocol import reader as rd
from stalwart_mp.imap.protocol import writer as w
from stalwart_mp.imap.protocol.parser import ParseError, parse_command
from stalwart_mp.worker.connection import upgrade_to_tls

log = logging.getLogger("stalwart_mp.imap")


class State(enum.Enum):
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class No(Exception):
    """A command refused: tagged NO (or BAD) with an optional response code."""

    def __init__(self, text: str, code: str | None = None, status: str = "NO"):
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


ANY = {"CAPABILITY", "NOOP", "LOGOUT", "ID"}
NOT_AUTH = {"STARTTLS", "LOGIN", "AUTHENTICATE"}
AUTH = {"ENABLE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
        "UNSUBSCRIBE", "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE",
        "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "UNAUTHENTICATE", "COMPRESS",
        "GETMETADATA", "SETMETADATA", "SETACL", "DELETEACL", "GETACL", "LISTRIGHTS",
        "MYRIGHTS"}
SELECTED = {"CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
            "CHECK", "SORT", "THREAD", "REPLACE"}
_NO_SYNC = {"SELECT", "EXAMINE", "LOGOUT", "UNSELECT", "CLOSE", "UNAUTHENTICATE"}
_NO_EXPUNGE = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD"}
ENABLEABLE = {"IMAP4REV2", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT"}


class ImapSession(asyncio.Protocol):
    def __init__(self, server, info):
        self.server = server
        self.info = info
        self.transport: asyncio.Transport | None = None
        self.reader = rd.CommandReader(max_line=server.max_line,
                                       max_literal=server.max_literal,
                                       max_append=server.max_message_size)
        self.state = State.NOT_AUTHENTICATED
        self.tls = info.tls
        self.principal = None
        self.acct: int | None = None
        self.enabled: set[str] = set()
        self.selected = None          # selected.Selected
        self.saved_uids: list[int] = []   # SEARCHRES $ (RFC 5182)
        self.bad = 0
        self._out: list[bytes] = []
        self._task: asyncio.Task | None = None
        self._input = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._inflate = None          # COMPRESS=DEFLATE (RFC 4978) streams once active
        self._deflate = None

    # --- properties -------------------------------------------------------------------

    @property
    def services(self):
        return self.server.services

    @property
    def utf8(self) -> bool:
        return bool(self.enabled & {"IMAP4REV2", "UTF8=ACCEPT"})

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return bool(self.enabled & {"CONDSTORE", "QRESYNC"})

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def _loopback(self) -> bool:
        return self.info.remote_ip in ("127.0.0.1", "::1")

    def _clear_ok(self) -> bool:
        """Cleartext credentials allowed (RFC 9051 §6.2.3, LOGINDISABLED)."""
        return self.tls or self._loopback() or self.server.allow_plain_text

    # --- transport --------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        logs.conn_id.set(self.info.id)
        if self.services is None:
            self._write(w.status("BYE", "Service temporarily unavailable", "UNAVAILABLE"))
            self._close()
            return
        self._touch()
        self._write(w.status("OK", f"{self.server.hostname} stalwart-mp IMAP4rev2 ready",
                             "CAPABILITY " + " ".join(self.capabilities())))

    def data_received(self, data: bytes) -> None:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                log.info("bad compressed data")
                self._close()
                return
        self.reader.feed(data)
        self._input.set()
        self._touch()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        self._closed = True
        self.server.sessions.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._input.set()
        self._writable.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _touch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        timeout = (self.server.timeout_unauth if self.state == State.NOT_AUTHENTICATED
                   else self.server.timeout_auth)
        self._timer = asyncio.get_running_loop().call_later(timeout, self._timeout)

    def _timeout(self) -> None:
        log.info("idle timeout", extra={"fields": {"state": self.state.value}})
        self._write(w.status("BYE", "Idle timeout, closing connection"))
        self._close()

    def shutting_down(self) -> None:
        self._write(w.status("BYE", "Server shutting down", "UNAVAILABLE"))
        self._close()

    def _close(self) -> None:
        self._closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self._deflate is not None:
                data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
            self.transport.write(data)

    def out(self, data: bytes) -> None:
        """Queue an untagged response for the current command."""
        self._out.append(data)

    async def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._write(data)
            if not self._writable.is_set():
                await self._writable.wait()

    # --- the command loop -----------------------------------------------------------------

    async def _run(self) -> None:
        logs.conn_id.set(self.info.id)
        while not self._closed:
            event = self.reader.next()
            if event is rd.NEED_DATA:
                self._input.clear()
                return
            if isinstance(event, rd.Continue):
                if event.append and self.principal is not None and \
                        await self._over_quota(event.size):
                    tag = self.reader.abandon()
                    self._write(w.tagged(tag, "NO", "Message would exceed the mailbox quota",
                                         "OVERQUOTA"))
                    continue
                self._write(w.continuation("Ready for literal data"))
                continue
            if isinstance(event, rd.TooBig):
                if event.append:  # RFC 7889 §4 / RFC 4469: TOOBIG
                    self._write(w.tagged(event.tag, "NO", f"Message of {event.size} octets "
                                         f"is over the limit of {event.limit}", "TOOBIG"))
                else:
                    self._write(w.tagged(event.tag, "BAD", f"Literal of {event.size} octets "
                                         f"is over the limit of {event.limit}", "TOOBIG"))
                    if self._count_bad():
                        return
                continue
            if isinstance(event, rd.LineTooLong):
                self._write(w.tagged(event.tag, "BAD", "Command line too long"))
                if self._count_bad():
                    return
                continue
            try:
                cmd = parse_command(event.data, utf8=self.utf8)
            except ParseError as exc:
                self._write(w.tagged(exc.tag, "BAD", exc.message, exc.code))
                if self._count_bad():
                    return
                continue
            try:
                await self._dispatch(cmd)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("command failed", extra={"fields": {"command": cmd.name}})
                self._out.clear()
                self._write(w.tagged(cmd.tag, "NO", "Temporary server error, try again",
                                     "SERVERBUG"))
            if self.state == State.LOGOUT:
                self._close()
                return

    async def _over_quota(self, size: int) -> bool:
        """An APPEND to one's own mailboxes that cannot fit in the account's quota is refused
        before its literal is read (RFC 9208 §4.1: NO [OVERQUOTA])."""
        from stalwart_mp.imap.access import is_shared_name
        from stalwart_mp.imap.protocol.parser import append_target

        quota = self.principal.quota_bytes
        if not quota:
            return False
        mailbox = append_target(self.reader.first_line(), self.utf8)
        if mailbox is None or is_shared_name(mailbox):
            return False
        state = await self.services.mail.state(self.acct)
        return state is not None and state.used_bytes + size > quota

    def _count_bad(self) -> bool:
        self.bad += 1
        if self.bad >= self.server.max_bad:
            log.info("too many bad commands", extra={"fields": {"count": self.bad}})
            self._write(w.status("BYE", "Too many invalid commands"))
            self._close()
            return True
        return False

    def _allowed(self, name: str) -> str | None:
        if name in ANY:
            return None
        if name in NOT_AUTH:
            return None if self.state == State.NOT_AUTHENTICATED else "already authenticated"
        if name in AUTH:
            return None if self.state in (State.AUTHENTICATED, State.SELECTED) else \
                "not authenticated"
        if name in SELECTED:
            return None if self.state == State.SELECTED else "no mailbox selected"
        return f"{name} is not supported"

    async def _dispatch(self, cmd: c.Command) -> None:
        why = self._allowed(cmd.name)
        if why is not None:
            await self.flush()
            self._write(w.tagged(cmd.tag, "BAD", f"{cmd.name}: {why}"))
            self._count_bad()
            return
        handler = getattr(self, "cmd_" + cmd.name.lower(), None)
        if handler is None:
            from stalwart_mp.imap import mailbox_cmds, selected

            handler = getattr(mailbox_cmds, "cmd_" + cmd.name.lower(), None) or \
                getattr(selected, "cmd_" + cmd.name.lower())
            coro = handler(self, cmd)
        else:
            coro = handler(cmd)
        try:
            result = await coro
        except No as refusal:
            await self.flush()
            self._write(w.tagged(cmd.tag, refusal.status, refusal.text, refusal.code))
            return
        if result is None:  # the handler wrote its own completion
            await self.flush()
            return
        text, code = result if isinstance(result, tuple) else (result, None)
        if self.selected is not None and cmd.name not in _NO_SYNC:
            # RFC 9051 §7.5.1: no EXPUNGE while answering FETCH, STORE or SEARCH (the UID
            # forms excepted), so sequence numbers stay stable for the client
            await self.selected.sync(self, expunges=cmd.uid or cmd.name not in _NO_EXPUNGE)
        await self.flush()
        self._write(w.tagged(cmd.tag, "OK", text, code))

    async def read_line(self) -> bytes | None:
        """One raw client line (AUTHENTICATE responses, IDLE's DONE); None when closed."""
        while not self._closed:
            line = self.reader.next_line()
            if line is not rd.NEED_DATA:
                return line
            self._input.clear()
            await self._input.wait()
        return None

    # --- any state (RFC 9051 §6.1) -----------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev2", "IMAP4rev1", "LITERAL+", "SASL-IR", "ENABLE", "ID", "IDLE",
                "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE",
                "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE",
                "ESEARCH", "SEARCHRES", "WITHIN", "SORT", "ESORT", "SORT=DISPLAY",
                "CONDSTORE", "QRESYNC", "MULTIAPPEND", "BINARY", "QUOTA", "QUOTA=RES-STORAGE",
                "QUOTA=RES-MESSAGE", "OBJECTID", "PREVIEW", "SAVEDATE", "UTF8=ACCEPT",
                "UNAUTHENTICATE", f"APPENDLIMIT={self.server.max_message_size}",
                "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "REPLACE", "METADATA",
                "METADATA-SERVER", "ACL", "RIGHTS=texk"]
        if self._deflate is None:
            caps.append("COMPRESS=DEFLATE")
        if self.state == State.NOT_AUTHENTICATED:
            from stalwart_mp.auth.sasl import mechanisms_for

            if self.server.tls is not None and not self.tls:
                caps.append("STARTTLS")
            if not self._clear_ok():
                caps.append("LOGINDISABLED")
            caps += ["AUTH=" + m for m in mechanisms_for(self._clear_ok())]
        return caps

    async def cmd_capability(self, cmd: c.Command):
        self.out(w.untagged("CAPABILITY " + " ".join(self.capabilities())))
        return "CAPABILITY completed"

    async def cmd_noop(self, cmd: c.Command):
        return "NOOP completed"

    async def cmd_check(self, cmd: c.Command):
        return "CHECK completed"

    async def cmd_logout(self, cmd: c.Command):
        self.out(w.status("BYE", f"{self.server.hostname} logging out"))
        self.state = State.LOGOUT
        return "LOGOUT completed"

    async def cmd_id(self, cmd: c.Id):
        # RFC 2971 §3.3: the server's own parameters; the client's are logged
        if cmd.params:
            log.info("client id", extra={"fields": {k: v for k, v in list(
                cmd.params.items())[:10] if k.lower() in ("name", "version", "os")}})
        self.out(w.untagged(b"ID " + w.encode(["name", "stalwart-mp", "vendor", "stalwart-mp",
                                                "support-url", "https://stalw.art"])))
        return "ID completed"

    async def cmd_enable(self, cmd: c.Enable):
        """RFC 5161 §3.1: only the extensions this server knows are enabled and listed."""
        new = []
        for cap in cmd.capabilities:
            if cap in ENABLEABLE and cap not in self.enabled:
                self.enabled.add(cap)
                new.append({"IMAP4REV2": "IMAP4rev2"}.get(cap, cap))
                if cap == "QRESYNC":  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
                    self.enabled.add("CONDSTORE")
        self.out(w.untagged(" ".join(["ENABLED", *new])))
        return "ENABLE completed"

    async def cmd_namespace(self, cmd: c.Command):
        # RFC 2342: the personal namespace and the other users' one (shared mailboxes)
        self.out(w.untagged('NAMESPACE (("" "/")) (("Shared Folders/" "/")) NIL'))
        return "NAMESPACE completed"

    async def cmd_unauthenticate(self, cmd: c.Command):
        """RFC 8437: back to the not-authenticated state."""
        self.selected = None
        self.principal = None
        self.acct = None
        self.enabled.clear()
        self.saved_uids = []
        self.state = State.NOT_AUTHENTICATED
        return "UNAUTHENTICATE completed"

    async def cmd_compress(self, cmd: c.Compress):
        """RFC 4978 §3: after the tagged OK both directions are raw DEFLATE (no zlib
        header); bytes the client sent after the command are already compressed."""
        if self._deflate is not None:
            raise No("Compression is already active", "COMPRESSIONACTIVE")
        if cmd.mechanism != "DEFLATE":
            raise No(f"Unknown compression mechanism {cmd.mechanism}", status="BAD")
        await self.flush()
        self._write(w.tagged(cmd.tag, "OK", "DEFLATE active"))
        # no await from here on: nothing can arrive between the switch and the hand-over
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        pending = self.reader.take_buffer()
        if pending:
            self.reader.feed(self._inflate.decompress(pending))

    # --- not authenticated (RFC 9051 §6.2) -------------------------------------------------

    async def cmd_starttls(self, cmd: c.Command):
        if self.server.tls is None or self.tls:
            raise No("TLS not available" if not self.tls else "TLS already active",
                     status="BAD")
        dropped = self.reader.take_buffer()
        if dropped:  # commands pipelined after STARTTLS are never run (RFC 9051 §6.2.1)
            log.warning("dropped commands sent before the TLS handshake",
                        extra={"fields": {"bytes": len(dropped)}})
        await self.flush()
        self._write(w.tagged(cmd.tag, "OK", "Begin TLS negotiation now"))
        upgraded = await upgrade_to_tls(self.transport, self, self.server.tls.server_context(),
                                        self.server.handshake_timeout)
        if upgraded is None:
            self._close()
            return
        self.transport = upgraded
        self.tls = True

    async def cmd_login(self, cmd: c.Login):
        if not self._clear_ok():
            raise No("LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
        result = await self.services.auth.authenticate(cmd.user, cmd.password,
                                                       self.info.remote_ip)
        return await self._auth_outcome(result, cmd.user)

    async def cmd_authenticate(self, cmd: c.Authenticate):
        from stalwart_mp.auth.sasl import Challenge, Reason, decode_response, start

        services = self.services
        ip = self.info.remote_ip
        auth = services.auth
        initial = None
        if cmd.initial is not None:
            decoded = decode_response(cmd.initial, initial=True)
            if isinstance(decoded, Reason):
                raise No("Malformed initial response", status="BAD")
            initial = decoded

        async def verify_plain(user: str, password: str):
            return await auth.authenticate(user, password, ip)

        async def scram_secret(user: str, mechanism: str):
            return await auth.scram_secret(user, mechanism, ip)

        async def verify_token(token: str, user: str | None):
            info = await services.tokens.verify(token)
            return info.name if info and (user is None or user == info.name) else None

        sasl = start(cmd.mechanism, initial, verify_plain=verify_plain,
                     scram_secret=scram_secret, verify_token=verify_token,
                     tls=self._clear_ok(), allow_plain_without_tls=False,
                     fake_salt_key=services.secret)
        answer = await sasl.begin()
        while isinstance(answer, Challenge):
            await self.flush()
            self._write(w.continuation(base64.b64encode(answer.data)))
            line = await self.read_line()
            if line is None:
                return None
            answer = await sasl.respond(line)
        result = answer.result
        if answer.success and answer.username:
            if result is None:
                result = await auth.scram_outcome(answer.username, ip, True)
            return await self._auth_outcome(result, answer.username)
        if result is None and answer.reason == Reason.INVALID_CREDENTIALS and answer.username:
            result = await auth.scram_outcome(answer.username, ip, False)
        if result is not None and getattr(result, "failure", None) is not None:
            return await self._auth_outcome(result, answer.username or "")
        if answer.reason == Reason.ENCRYPTION_REQUIRED:
            raise No("Cleartext mechanisms need TLS", "PRIVACYREQUIRED")
        if answer.reason == Reason.UNSUPPORTED_MECHANISM:
            raise No(f"Unsupported mechanism {cmd.mechanism}", "CANNOT", status="NO")
        if answer.reason == Reason.ABORTED:
            raise No("Authentication cancelled", status="BAD")
        if answer.reason == Reason.MALFORMED:
            raise No("Malformed authentication data", status="BAD")
        raise No("Authentication failed", "AUTHENTICATIONFAILED")

    async def _auth_outcome(self, result, user: str):
        from stalwart_mp.directory.auth import Failure
        from stalwart_mp.directory.ids import account_id

        if result is not None and result.ok:
            principal = result.principal
            self.principal = principal
            self.acct = await account_id(self.services.data, principal)
            await self.services.mail.ensure_account(self.acct)
            self.state = State.AUTHENTICATED
            self._touch()
            log.info("authenticated", extra={"fields": {"user": principal.name}})
            return "Logged in", "CAPABILITY " + " ".join(self.capabilities())
        failure = getattr(result, "failure", None)
        if failure == Failure.BANNED:
            self.out(w.status("BYE", "Too many failed authentications"))
            self.state = State.LOGOUT
            raise No("Too many failed authentications", "AUTHENTICATIONFAILED")
        if failure in (Failure.UNAVAILABLE, Failure.THROTTLED):
            raise No("Temporary authentication failure, try again later", "UNAVAILABLE")
        raise No("Authentication failed", "AUTHENTICATIONFAILED")

    # --- IDLE (RFC 2177, RFC 9051 §6.3.13) ------------------------------------------------

    async def cmd_idle(self, cmd: c.Command):
        """Changes are pushed as they are committed by any worker: the session subscribes to
        ``mail.<account>`` on the event bus (no polling), syncs once after the subscription is
        confirmed so nothing falls in between, then waits for events or DONE."""
        from stalwart_mp.mail.notify import account_topic

        bus = self.server.events
        changed = asyncio.Event()

        def on_event(topic, data) -> None:
            changed.set()

        acct = self.selected.acct if self.selected is not None else self.acct  # the owner's
        sub = bus.subscribe(account_topic(acct), on_event) if bus is not None else None
        try:
            if bus is not None:
                await bus.sync()
            await self.flush()
            self._write(w.continuation("idling"))
            if self.selected is not None:
                await self.selected.sync(self, expunges=True)
                await self.flush()
            while not self._closed:
                line = self.reader.next_line()
                if line is not rd.NEED_DATA:
                    if line.strip().upper() == b"DONE":
                        break
                    raise No("Expected DONE to end IDLE", status="BAD")
                self._input.clear()
                waiters = [asyncio.ensure_future(self._input.wait()),
                           asyncio.ensure_future(changed.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if changed.is_set():
                    changed.clear()
                    if self.selected is not None:
                        await self.selected.sync(self, expunges=True)
                        await self.flush()
                    self._touch()
        finally:
            if sub is not None:
                sub.cancel()
        if self._closed:
            return
        self._write(w.tagged(cmd.tag, "OK", "IDLE terminated"))
        return
