"""A small SMTP server on loopback that plays the remote MX in the outbound tests.

It runs its own asyncio loop in a thread, keeps every accepted message (``messages``: only
those it answered 250 to at the end of the data, so a client that vanished before the
answer left nothing), and answers on demand:

    sink.rcpt_replies["nobody@remote.test"] = "550 5.1.1 no such user"
    sink.data_replies.append("451 4.3.0 try again")     # the next end-of-data answers
    sink.hold.clear()   # stop before answering end-of-data until hold.set()

With ``tls=True`` it offers STARTTLS (a self-signed certificate for its name); with
``implicit=True`` it speaks TLS from the first byte; with ``auth=(user, password)`` it
offers AUTH PLAIN LOGIN and refuses MAIL before a successful AUTH.
"""
from __future__ import annotations

import asyncio
import base64
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    mail_params: str = ""
    rcpt_params: list[str] = field(default_factory=list)
    tls: bool = False
    user: str | None = None


class Sink:
    def __init__(self, host: str = "127.0.0.1", dsn: bool = False, tls: bool = False,
                 implicit: bool = False, auth: tuple[str, str] | None = None,
                 name: str = "sink.remote.test", context: ssl.SSLContext | None = None,
                 extensions: tuple[str, ...] = ()):
        self.host = host
        self.dsn = dsn
        self.auth = auth
        self.name = name
        self.implicit = implicit
        self.extensions = extensions   # more EHLO keywords (e.g. "REQUIRETLS")
        self.context, self.cert_file = _context(name) if tls or implicit else (None, "")
        if context is not None:  # a certificate chosen by the test (e.g. from its own CA)
            self.context = context
        self.messages: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()   # set while a message waits on ``hold``
        self.connections = 0
        self.transactions = 0
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="smtp-sink")
        self.port = 0

    def start(self) -> Sink:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, self.host, 0,
                                 ssl=self.context if self.implicit else None), self._loop)
        self._server = fut.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.hold.set()

        async def close() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                       ) -> None:
        self.connections += 1

        def send(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        send(f"220 {self.name} ESMTP")
        mail_from, rcpts, mail_params, rcpt_params = None, [], "", []
        tls, user = self.implicit, None
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb == "EHLO":
                    ext = ["PIPELINING", "SIZE 10000000", "8BITMIME", "SMTPUTF8",
                           "ENHANCEDSTATUSCODES"] + (["DSN"] if self.dsn else [])
                    if self.context is not None and not tls:
                        ext.append("STARTTLS")
                    if self.auth and user is None:
                        ext.append("AUTH PLAIN LOGIN")
                    ext += list(self.extensions)
                    lines = [self.name, *ext]
                    for i, text in enumerate(lines):
                        send(f"250{'-' if i < len(lines) - 1 else ' '}{text}")
                elif verb == "HELO":
                    send("250 sink.remote.test")
                elif verb == "STAR" and self.context is not None and not tls:
                    send("220 2.0.0 go ahead")
                    await writer.drain()
                    await writer.start_tls(self.context)
                    tls = True
                    continue
                elif verb == "AUTH" and self.auth:
                    user = await self._auth(line, reader, send, writer)
                    continue
                elif verb == "MAIL" and self.auth and user is None:
                    send("530 5.7.0 authentication required")
                elif verb == "MAIL":
                    addr, _, mail_params = line[10:].partition(">")
                    mail_from, rcpts, rcpt_params = addr.strip("<"), [], []
                    mail_params = mail_params.strip()
                    send("250 2.1.0 OK")
                elif verb == "RCPT":
                    addr, _, params = line[8:].partition(">")
                    addr = addr.strip("<")
                    answer = self.rcpt_replies.get(addr.lower(), "250 2.1.5 OK")
                    if answer.startswith("2"):
                        rcpts.append(addr)
                        rcpt_params.append(params.strip())
                    send(answer)
                elif verb == "DATA":
                    if not rcpts:
                        send("554 5.5.1 no valid recipients")
                        continue
                    send("354 go ahead")
                    await writer.drain()
                    data = b""
                    while True:
                        chunk = await reader.readline()
                        if not chunk:
                            return
                        if chunk == b".\r\n":
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    self.transactions += 1
                    if not self.hold.is_set():
                        self.holding.set()
                        while not self.hold.is_set():
                            await asyncio.sleep(0.05)
                            if reader.at_eof() or writer.is_closing():
                                return
                        if reader.at_eof():  # the client vanished: no delivery
                            return
                    with self.lock:
                        answer = self.data_replies.pop(0) if self.data_replies else \
                            "250 2.0.0 queued"
                        if answer.startswith("2"):
                            self.messages.append(Received(mail_from, rcpts, data,
                                                          mail_params, rcpt_params, tls,
                                                          user))
                    send(answer)
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    send("250 2.0.0 OK")
                elif verb == "QUIT":
                    send("221 2.0.0 bye")
                    await writer.drain()
                    return
                elif verb == "NOOP":
                    send("250 2.0.0 OK")
                else:
                    send("502 5.5.1 not implemented")
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def _auth(self, line, reader, send, writer) -> str | None:
        """AUTH PLAIN (initial response or not) and LOGIN (RFC 4954, 4616)."""
        parts = line.split()
        mech = parts[1].upper() if len(parts) > 1 else ""

        async def ask(prompt: str) -> str:
            send("334 " + base64.b64encode(prompt.encode()).decode())
            await writer.drain()
            return (await reader.readline()).decode().strip()

        try:
            if mech == "PLAIN":
                token = parts[2] if len(parts) > 2 else await ask("")
                _, name, password = base64.b64decode(token).decode().split("\0")
            elif mech == "LOGIN":
                name = base64.b64decode(await ask("Username:")).decode()
                password = base64.b64decode(await ask("Password:")).decode()
            else:
                send("504 5.5.4 mechanism not supported")
                return None
        except (ValueError, UnicodeDecodeError):
            send("501 5.5.2 bad AUTH data")
            return None
        if (name, password) == self.auth:
            send("235 2.7.0 authenticated")
            return name
        send("535 5.7.8 bad credentials")
        return None


def _context(name: str) -> tuple[ssl.SSLContext, str]:
    """A server context with a self-signed certificate for ``name`` (and 127.0.0.1), and
    the certificate's file (the CA a client verifies it with)."""
    from stalwart_mp.tls.selfsigned import generate_self_signed

    key, cert = generate_self_signed(name)
    folder = Path(tempfile.mkdtemp(prefix="sink-tls-"))
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return ctx, str(folder / "cert.pem")
