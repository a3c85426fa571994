"""An asyncio SMTP client for outbound delivery (RFC 5321 client side).

One ``SmtpClient`` is one connection: greeting, EHLO (HELO fallback), opportunistic or
required STARTTLS (RFC 3207), AUTH PLAIN/LOGIN towards a smarthost (RFC 4954), then any
number of transactions (``send``), each pipelined when the server offers PIPELINING
(RFC 2920) and carrying SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531),
DSN parameters (RFC 3461) and REQUIRETLS (RFC 8689). Replies for each recipient are kept,
so the runner can decide per recipient.
"""
from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field

from stalwart_mp.smtp.queue.store import orcpt_text


class SmtpError(Exception):
    """The connection failed or the server answered something unusable: temporary.

    ``tls_failure`` names a TLS failure with its RFC 8460 §4.3.2.1 result type."""

    def __init__(self, message: str, tls_failure: str | None = None):
        super().__init__(message)
        self.tls_failure = tls_failure


def tls_result_type(exc: BaseException) -> str:
    """RFC 8460 §4.3.2.1 result type of a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", 0)
        if code == 10:      # X509_V_ERR_CERT_HAS_EXPIRED
            return "certificate-expired"
        if code == 62:      # X509_V_ERR_HOSTNAME_MISMATCH
            return "certificate-host-mismatch"
        return "certificate-not-trusted"
    return "validation-failure"


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str            # the lines joined with " / ", enhanced code included

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(slots=True)
class Envelope:
    mail_from: str
    recipients: list[str]
    notify: dict[str, list[str]] = field(default_factory=dict)   # per recipient
    orcpt: dict[str, str | None] = field(default_factory=dict)
    ret: str | None = None
    envid: str | None = None
    requiretls: bool = False


@dataclass(slots=True)
class Result:
    mail: Reply
    rcpts: dict[str, Reply]        # recipient -> its RCPT reply
    data: Reply | None             # None when no recipient was accepted

    def reply_for(self, rcpt: str) -> Reply:
        """The final answer for one recipient."""
        if not self.mail.ok:
            return self.mail
        r = self.rcpts[rcpt]
        if not r.ok or self.data is None:
            return r
        return self.data


def _xtext(value: str) -> str:
    """RFC 3461 §4: xtext encoding of ENVID / ORCPT values."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}"
                   for c in value)


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2: transparency, CRLF line ends, and the final <CRLF>.<CRLF>."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class SmtpClient:
    def __init__(self, host: str, ip: str, port: int, *, helo: str,
                 command_timeout: float = 300.0, data_timeout: float = 600.0):
        self.host = host               # the MX name (TLS server name, logs)
        self.ip = ip
        self.port = port
        self.helo = helo
        self.command_timeout = command_timeout
        self.data_timeout = data_timeout
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.verified = False          # the TLS certificate was checked
        self.ca_file = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def closed(self) -> bool:
        return self._writer is None or self._writer.is_closing()

    async def connect(self, *, connect_timeout: float, tls: str = "opportunistic",
                      verify: bool = False, ca_file: str = "", dane: list | None = None
                      ) -> Reply:
        """Connect, read the greeting, EHLO and apply the TLS mode: "opportunistic"
        (STARTTLS when offered, certificate unchecked unless ``verify``), "starttls"
        (required and verified), "implicit" (TLS from the first byte, verified), "none".
        ``ca_file``: CAs to verify with instead of the system's. ``dane``: the usable
        TLSA records of an authenticated answer (dane.py): STARTTLS is then mandatory and
        the certificate is checked against them instead of the web PKI. Raises SmtpError
        when the host cannot be used."""
        self.ca_file = ca_file
        verify = (verify or tls in ("starttls", "implicit")) and dane is None
        context = _context(verify, ca_file) if tls == "implicit" else None
        try:
            async with asyncio.timeout(connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.ip, self.port, ssl=context,
                    server_hostname=self.host if context else None, limit=1 << 20)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise SmtpError(f"cannot connect to {self.host}[{self.ip}]:{self.port}: "
                            f"{exc or type(exc).__name__}",
                            tls_result_type(exc) if isinstance(exc, ssl.SSLError) else None
                            ) from None
        self.tls = context is not None
        self.verified = self.tls and verify
        greeting = await self._read()
        if greeting.code != 220:
            await self.close()
            raise SmtpError(f"{self.host} greeted with {greeting}")
        await self._ehlo()
        if not self.tls and (tls != "none" or dane is not None) and \
                "STARTTLS" in self.extensions:
            await self.starttls(verify, dane)
        elif not self.tls and (tls == "starttls" or dane is not None):
            await self.close()
            raise SmtpError(f"{self.host} does not offer STARTTLS, which is required",
                            "starttls-not-supported")
        return greeting

    async def _ehlo(self) -> None:
        r = await self.command(f"EHLO {self.helo}")
        if r.code == 250:
            self.extensions = {}
            for line in r.text.split(" / ")[1:]:
                keyword, _, arg = line.partition(" ")
                self.extensions[keyword.upper()] = arg
            return
        r = await self.command(f"HELO {self.helo}")
        if r.code != 250:
            raise SmtpError(f"{self.host} refused HELO: {r}")
        self.extensions = {}

    async def starttls(self, verify: bool, dane: list | None = None) -> None:
        r = await self.command("STARTTLS")
        if r.code != 220:
            raise SmtpError(f"{self.host} refused STARTTLS: {r}",
                            "starttls-not-supported" if dane is not None else None)
        try:
            async with asyncio.timeout(self.command_timeout):
                await self._writer.start_tls(_context(verify and dane is None, self.ca_file),
                                             server_hostname=self.host)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self.close()
            raise SmtpError(f"TLS with {self.host} failed: {exc}",
                            tls_result_type(exc)) from None
        self.tls, self.verified = True, verify
        if dane:
            self._check_dane(dane)
        await self._ehlo()  # RFC 3207 §4.2: forget what was learned before TLS

    def _check_dane(self, records: list) -> None:
        """RFC 7672 §3: the certificate must match a DANE-EE record, or chain to a
        DANE-TA anchor with the MX host's name."""
        from stalwart_mp.smtp.outbound.dane import (
            chains_to,
            matches_ee,
            peer_chain,
            trust_anchors,
        )

        ssl_object = self._writer.get_extra_info("ssl_object")
        chain = peer_chain(ssl_object) if ssl_object else []
        ok = bool(chain) and (matches_ee(records, chain[0]) or
                              chains_to(trust_anchors(records, chain), chain, self.host))
        if not ok:
            self._writer.close()
            raise SmtpError(f"DANE: the certificate of {self.host} matches no TLSA record",
                            "validation-failure")
        self.verified = True

    async def auth(self, username: str, password: str) -> None:
        """AUTH PLAIN, else LOGIN (RFC 4954, RFC 4616); SmtpError on refusal."""
        mechs = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechs or not mechs:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            r = await self.command(f"AUTH PLAIN {token}")
        elif "LOGIN" in mechs:
            r = await self.command("AUTH LOGIN")
            if r.code == 334:
                r = await self.command(base64.b64encode(username.encode()).decode())
            if r.code == 334:
                r = await self.command(base64.b64encode(password.encode()).decode())
        else:
            raise SmtpError(f"{self.host} offers no AUTH mechanism we speak ({mechs})")
        if r.code != 235:
            raise SmtpError(f"{self.host} refused AUTH: {r}")

    def _mail_command(self, env: Envelope, size: int, eightbit: bool) -> str:
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={size}")
        if eightbit and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        utf8 = not (env.mail_from.isascii() and all(r.isascii() for r in env.recipients))
        if utf8 and "SMTPUTF8" in self.extensions:
            params.append("SMTPUTF8")
        if "DSN" in self.extensions:
            if env.ret:
                params.append(f"RET={env.ret}")
            if env.envid:
                params.append(f"ENVID={_xtext(env.envid)}")
        if env.requiretls:
            params.append("REQUIRETLS")
        return " ".join([f"MAIL FROM:<{env.mail_from}>", *params])

    def _rcpt_command(self, env: Envelope, rcpt: str) -> str:
        params = []
        if "DSN" in self.extensions:
            if env.notify.get(rcpt):
                params.append("NOTIFY=" + ",".join(env.notify[rcpt]))
            orcpt = orcpt_text(env.orcpt.get(rcpt))
            if orcpt:
                kind, _, address = orcpt.partition(";")
                params.append(f"ORCPT={kind};{_xtext(address)}")
        return " ".join([f"RCPT TO:<{rcpt}>", *params])

    def refusal(self, env: Envelope, message: bytes) -> Reply | None:
        """A reason this server cannot take the message at all (a permanent answer)."""
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and int(limit) and len(message) > int(limit):
            return Reply(552, f"5.3.4 message too big for {self.host} (limit {limit})")
        utf8 = not (env.mail_from.isascii() and all(r.isascii() for r in env.recipients))
        if utf8 and "SMTPUTF8" not in self.extensions:
            return Reply(553, f"5.6.7 {self.host} does not support SMTPUTF8 (RFC 6531 §3.2)")
        if env.requiretls and not (self.verified and "REQUIRETLS" in self.extensions):
            return Reply(550, f"5.7.30 REQUIRETLS not supported by {self.host} (RFC 8689)")
        return None

    async def send(self, env: Envelope, message: bytes) -> Result:
        """One mail transaction. SmtpError (temporary for every recipient) when the
        connection breaks; the per-recipient replies otherwise."""
        eightbit = any(b > 127 for b in message)
        commands = [self._mail_command(env, len(message), eightbit)]
        commands += [self._rcpt_command(env, r) for r in env.recipients]
        if "PIPELINING" in self.extensions:
            # RFC 2920 §3.1: MAIL, RCPTs and DATA in one group, then read all replies
            self._write("".join(c + "\r\n" for c in [*commands, "DATA"]).encode())
            replies = [await self._read() for _ in commands]
            mail, rcpt_replies = replies[0], replies[1:]
            accepted = mail.ok and any(r.ok for r in rcpt_replies)
            data_go = await self._read()
        else:
            mail = await self.command(commands[0])
            rcpt_replies = []
            if mail.ok:
                rcpt_replies = [await self.command(c) for c in commands[1:]]
            accepted = mail.ok and any(r.ok for r in rcpt_replies)
            data_go = await self.command("DATA") if accepted else None
        if not mail.ok:
            rcpt_replies = [mail] * len(env.recipients)
        rcpts = dict(zip(env.recipients, rcpt_replies, strict=True))
        if not accepted:
            if data_go is not None and data_go.code == 354:  # pipelined DATA went through
                self._write(b".\r\n")                      # RFC 2920 §3.1: end it empty
                await self._read()
            await self.reset()
            return Result(mail, rcpts, None)
        if data_go is None or data_go.code != 354:
            return Result(mail, rcpts, data_go or Reply(451, "4.3.0 DATA not accepted"))
        self._write(dot_stuff(message))
        done = await self._read(self.data_timeout)
        return Result(mail, rcpts, done)

    async def reset(self) -> None:
        r = await self.command("RSET")
        if r.code != 250:
            raise SmtpError(f"{self.host} refused RSET: {r}")

    async def quit(self) -> None:
        if self.closed:
            return
        try:
            self._write(b"QUIT\r\n")
            async with asyncio.timeout(5):
                await self._read()
        except (SmtpError, TimeoutError):
            pass
        await self.close()

    async def close(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()
            try:
                async with asyncio.timeout(5):
                    await self._writer.wait_closed()
            except (OSError, TimeoutError, ssl.SSLError):
                pass

    async def command(self, line: str) -> Reply:
        self._write(line.encode("utf-8") + b"\r\n")
        return await self._read()

    def _write(self, data: bytes) -> None:
        if self.closed:
            raise SmtpError(f"connection to {self.host} closed")
        self._writer.write(data)

    async def _read(self, timeout: float | None = None) -> Reply:
        """One (possibly multi-line) reply (RFC 5321 §4.2.1)."""
        lines = []
        code = 0
        while True:
            try:
                async with asyncio.timeout(timeout or self.command_timeout):
                    raw = await self._reader.readline()
            except TimeoutError:
                await self.close()
                raise SmtpError(f"{self.host} timed out") from None
            except (OSError, ValueError, ssl.SSLError) as exc:
                await self.close()
                raise SmtpError(f"reading from {self.host}: {exc}") from None
            if not raw:
                await self.close()
                raise SmtpError(f"{self.host} closed the connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit():
                await self.close()
                raise SmtpError(f"{self.host} sent a malformed reply: {line[:100]!r}")
            code = int(line[:3])
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return Reply(code, " / ".join(lines))


def _context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context(cafile=ca_file or None)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # RFC 7435 opportunistic: encrypt, do not authenticate
    return ctx


