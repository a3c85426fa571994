"""A sans-I/O SMTP / LMTP server protocol (h11-style): bytes in, events out, replies to bytes.

``receive_data`` only buffers; ``next_event`` returns one client event, ``NEED_DATA``,
``PAUSED`` (after STARTTLS, until ``start_tls``) or ``CLOSED`` (after QUIT). ``send(reply)``
serializes the reply to the event last returned and applies the state transition that reply
decides (a 2yz to MAIL opens the transaction, 354 to DATA starts the message, 334 to AUTH
continues the SASL exchange...), so the whole state machine lives in this module. The session
must send the reply to one event before asking for the next (RFC 2920 §3.1: replies in order).

Decisions (documented in the package docstring as well):
* Command lines must end with CRLF; a bare LF ends the line but is answered 500 5.5.2
  (RFC 5321 §2.3.8 forbids bare CR/LF). Max command line ``max_line`` (RFC 5321 §4.5.3.1.4
  gives 512 as the minimum; extensions raise it), AUTH lines up to 12288 (RFC 4954 §4).
* DATA ends only at CRLF "." CRLF (RFC 5321 §4.1.1.4). A lone dot line that touches a bare
  CR or bare LF ("\\n.\\r\\n", "\\r\\n.\\n", "\\r.\\r"...) is the SMTP smuggling pattern
  (CVE-2023-51766 class): the message is read to the real terminator and refused (554 5.5.2).
  Other bare LFs in content are kept as sent.
* Message size is enforced while streaming: bytes beyond ``max_message_size`` are dropped and
  the end of data is answered 552 5.3.4 (RFC 1870 §6.3; RFC 3030 §2 for BDAT).
"""
from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass, field

from . import replies as r
from .address import AddressError, decode_xtext, is_domain_or_literal, parse_path, split_path
from .replies import Reply

AUTH_MAX_LINE = 12288  # RFC 4954 §4: AUTH command and responses may be this long
_DATA_FLUSH = 8192  # DATA content without LF is consumed in pieces of this size
_SMUGGLE = re.compile(rb"(?:\r\n|\n|\r)\.(?:\r\n|\n|\r)")
_END_OF_DATA = b"\r\n.\r\n"  # RFC 5321 §4.1.1.4
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")  # RFC 5321 §4.1.2 esmtp-keyword
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+\Z")  # esmtp-value (+RFC 6531 §3.3)
_MECHANISM = re.compile(r"[A-Z0-9_-]{1,20}\Z")  # RFC 4954 §4 / RFC 4422 §3.1
_VERB = re.compile(rb"[A-Za-z]{1,16}\Z")


class State(enum.Enum):
    """RFC 5321 §4.1.4 command ordering, plus the byte-level reading modes."""

    NEED_HELO = "need-helo"  # before EHLO/HELO/LHLO (and again after STARTTLS)
    READY = "ready"  # greeted, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient accepted yet
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # reading DATA content up to CRLF.CRLF
    BDAT = "bdat"  # between BDAT chunks of one transaction (RFC 3030 §2)
    BDAT_READ = "bdat-read"  # reading exactly chunk-size octets
    AUTH = "auth"  # inside a SASL exchange: lines are AuthResponse
    PAUSED = "paused"  # STARTTLS issued: nothing is parsed until start_tls()
    CLOSED = "closed"  # QUIT received


class Body(enum.Enum):
    """MAIL BODY= values: RFC 6152 §3 (7BIT, 8BITMIME), RFC 3030 §3 (BINARYMIME)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"
    BINARY_MIME = "BINARYMIME"


class Sentinel(enum.Enum):
    NEED_DATA = "need-data"
    PAUSED = "paused"
    CLOSED = "closed"


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED
CLOSED = Sentinel.CLOSED


@dataclass(slots=True, frozen=True)
class MailParams:
    size: int | None = None  # RFC 1870 §4
    body: Body | None = None  # RFC 6152 §3, RFC 3030 §3
    smtputf8: bool = False  # RFC 6531 §3.4
    ret: str | None = None  # RFC 3461 §4.3: "FULL" | "HDRS"
    envid: str | None = None  # RFC 3461 §4.4 (xtext-decoded)
    auth: str | None = None  # RFC 4954 §5 (xtext-decoded; "<>" kept)
    requiretls: bool = False  # RFC 8689 §4.1


@dataclass(slots=True, frozen=True)
class RcptParams:
    notify: tuple[str, ...] | None = None  # RFC 3461 §4.1: ("NEVER",) or SUCCESS/FAILURE/DELAY
    orcpt: tuple[str, str] | None = None  # RFC 3461 §4.2: (addr-type, decoded address)


# ---- events -------------------------------------------------------------------------------

@dataclass(slots=True, frozen=True)
class Helo:
    name: str
    extended: bool  # EHLO or LHLO
    lhlo: bool


@dataclass(slots=True, frozen=True)
class MailFrom:
    address: str  # "" for the null reverse-path
    params: MailParams = field(default_factory=MailParams)


@dataclass(slots=True, frozen=True)
class RcptTo:
    address: str  # "postmaster" alone for RCPT TO:<Postmaster>
    params: RcptParams = field(default_factory=RcptParams)


@dataclass(slots=True, frozen=True)
class Data:
    """The DATA command: answer 354 to start reading content."""


@dataclass(slots=True, frozen=True)
class MessageData:
    """A complete message: dot-unstuffed DATA content (ending with its last CRLF) or, with
    ``chunked``, the concatenated BDAT chunks after BDAT LAST."""

    content: bytes
    chunked: bool = False


@dataclass(slots=True, frozen=True)
class BdatChunk:
    """A non-LAST BDAT chunk was read (RFC 3030 §2); its bytes are kept for MessageData."""

    size: int


@dataclass(slots=True, frozen=True)
class Rset:
    pass


@dataclass(slots=True, frozen=True)
class Noop:
    pass


@dataclass(slots=True, frozen=True)
class Quit:
    pass


@dataclass(slots=True, frozen=True)
class Vrfy:
    argument: str


@dataclass(slots=True, frozen=True)
class Expn:
    argument: str


@dataclass(slots=True, frozen=True)
class Help:
    argument: str


@dataclass(slots=True, frozen=True)
class StartTls:
    pass


@dataclass(slots=True, frozen=True)
class Auth:
    mechanism: str  # upper case
    initial_response: bytes | None  # decoded; b"" for "=" (RFC 4954 §4)


@dataclass(slots=True, frozen=True)
class AuthResponse:
    data: bytes  # decoded client response
    cancelled: bool = False  # the client sent "*" (RFC 4954 §4): answer 501


@dataclass(slots=True, frozen=True)
class ErrorEvent:
    """Input the protocol refuses by itself; ``reply`` is the exact reply to send."""

    reply: Reply


@dataclass(slots=True, frozen=True)
class BadSyntax(ErrorEvent):
    pass


@dataclass(slots=True, frozen=True)
class BadSequence(ErrorEvent):
    pass


@dataclass(slots=True, frozen=True)
class Unknown(ErrorEvent):
    verb: str = ""


@dataclass(slots=True, frozen=True)
class Refused(ErrorEvent):
    """A limit or policy the protocol enforces: size, recipients, smuggling, non-ASCII."""


Event = (Helo | MailFrom | RcptTo | Data | MessageData | BdatChunk | Rset | Noop | Quit | Vrfy
         | Expn | Help | StartTls | Auth | AuthResponse | BadSyntax | BadSequence | Unknown
         | Refused)


class ProtocolUsageError(RuntimeError):
    """The session used the API out of order (a bug in the caller, never caused by input)."""


class _Fail(Exception):
    def __init__(self, event: ErrorEvent):
        super().__init__(event.reply.lines)
        self.event = event


def _syntax(code: int, enhanced: str, text: str) -> _Fail:
    return _Fail(BadSyntax(r.reply(code, enhanced, text)))


class SmtpProtocol:
    """See the module docstring. One instance per connection."""

    def __init__(self, *, lmtp: bool = False, max_line: int = 4096,
                 max_message_size: int = 50 * 1024 * 1024, max_recipients: int = 100,
                 enhanced_status_codes: bool = True, tls: bool = False) -> None:
        if max_line < 512:  # RFC 5321 §4.5.3.1.4
            raise ValueError(f"max_line {max_line} is below the RFC 5321 minimum of 512")
        self.lmtp = lmtp
        self.max_line = max_line
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients
        self.enhanced_status_codes = enhanced_status_codes
        self.tls = tls  # implicit TLS (port 465) or after start_tls()
        self.state = State.NEED_HELO
        self.helo: Helo | None = None
        self.authenticated = False
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line
        self._pending: Event | None = None
        self._last_event: Event | None = None
        self._before_pause = State.READY
        self._reset_transaction_fields()

    # ---- public API --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; nothing is parsed here."""
        if self.state is not State.CLOSED:
            self._buf += data

    def next_event(self) -> Event | Sentinel:
        if self._pending is not None:
            raise ProtocolUsageError(f"send the reply to {self._pending!r} first")
        if self.state is State.PAUSED:
            return PAUSED
        if self.state is State.CLOSED:
            return CLOSED
        event = self._parse()
        if event is None:
            return NEED_DATA
        self._pending = event
        return event

    def send(self, reply: Reply) -> bytes:
        """Serialize ``reply`` and apply the transition it decides for the pending event."""
        event, self._pending = self._pending, None
        if event is not None:
            self._last_event = event
            self._transition(event, reply)
        last = self._last_event  # LMTP sends several replies to one MessageData
        enhanced = self.enhanced_status_codes and last is not None and not isinstance(
            last, Helo)  # RFC 2034 §3: not in the greeting nor the EHLO reply
        return reply.to_bytes(enhanced=enhanced)

    def start_tls(self) -> bytes:
        """Call after sending 220 to STARTTLS, before the handshake. Returns (and drops) the
        bytes the client sent after STARTTLS in plaintext: RFC 3207 §4.2 / CVE-2011-0411 —
        they must never be processed. All session knowledge is discarded (RFC 3207 §4.2)."""
        if self.state is not State.PAUSED:
            raise ProtocolUsageError("start_tls() is only valid after a 220 reply to STARTTLS")
        trailing = bytes(self._buf)
        self._buf.clear()
        self._discarding = False
        self.tls = True
        self.helo = None
        self.authenticated = False
        self._reset_transaction_fields()
        self.state = State.NEED_HELO
        return trailing

    def reset_transaction(self) -> None:
        """Abort the mail transaction (the session refused it, e.g. on a store failure)."""
        self._reset_transaction_fields()
        if self.state in (State.MAIL, State.RCPT, State.BDAT, State.DATA, State.BDAT_READ):
            self.state = State.READY if self.helo else State.NEED_HELO

    @property
    def mail_params(self) -> MailParams | None:
        return self._mail_params

    @property
    def recipients(self) -> int:
        return self._rcpt_count

    # ---- transitions (one table: pending event x reply) --------------------------------

    def _transition(self, event: Event, reply: Reply) -> None:
        ok = 200 <= reply.code < 300
        match event:
            case Helo():
                if ok:  # RFC 5321 §4.1.4: EHLO/HELO also resets any transaction
                    self.helo = event
                    self._reset_transaction_fields()
                    self.state = State.READY
            case MailFrom():
                if ok:
                    self._mail_params = event.params
                    self.state = State.MAIL
            case RcptTo():
                self._rcpt_attempts += 1
                if ok:
                    self._rcpt_count += 1
                    self.state = State.RCPT
            case Data():
                if reply.code == 354:
                    self._start_data()
            case BdatChunk():
                if not ok:  # RFC 3030 §2: a failed chunk fails the transaction
                    self.reset_transaction()
            case MessageData():  # RFC 5321 §4.1.1.4: buffers are cleared whatever the reply
                self._reset_transaction_fields()
                self.state = State.READY
            case Rset():
                self.reset_transaction()
            case StartTls():
                if reply.code != 220:  # refused: parsing resumes (still in plaintext)
                    self.state = self._before_pause
            case Auth() | AuthResponse():
                if reply.code == 334:  # RFC 4954 §4: server challenge, expect a response
                    self.state = State.AUTH
                else:
                    self.state = State.READY
                    if reply.code == 235:
                        self.authenticated = True
            case BadSyntax() | BadSequence() | Unknown() | Refused():
                if self.state is State.AUTH:  # any error ends the SASL exchange
                    self.state = State.READY
            case _:
                pass

    # ---- parsing -----------------------------------------------------------------------

    def _reset_transaction_fields(self) -> None:
        self._mail_params: MailParams | None = None
        self._rcpt_count = 0
        self._rcpt_attempts = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._too_big = False
        self._smuggled = False
        self._ctx = b"\r\n"  # the last 2 raw DATA bytes read (CRLF before the first)
        self._bdat_remaining = 0
        self._bdat_last = False
        self._bdat_size = 0
        self._bdat_error: ErrorEvent | None = None
        self._bdat_return = State.READY

    def _start_data(self) -> None:
        self._parts, self._size, self._too_big, self._smuggled = [], 0, False, False
        self._ctx = b"\r\n"
        self.state = State.DATA

    def _parse(self) -> Event | None:
        if self.state is State.DATA:
            return self._read_data()
        if self.state is State.BDAT_READ:
            return self._read_bdat()
        line = self._read_line()
        if line is None:
            return None
        if isinstance(line, ErrorEvent):
            return line
        try:
            if self.state is State.AUTH:
                return self._auth_response(line)
            return self._command(line)
        except _Fail as fail:
            return fail.event

    def _read_line(self) -> bytes | ErrorEvent | None:
        limit = AUTH_MAX_LINE if self.state is State.AUTH else self.max_line
        too_long = r.AUTH_LINE_TOO_LONG if self.state is State.AUTH else r.LINE_TOO_LONG
        if self._discarding:
            i = self._buf.find(b"\n")
            if i < 0:
                self._buf.clear()
                return None
            del self._buf[: i + 1]
            self._discarding = False
            return BadSyntax(too_long)
        i = self._buf.find(b"\n", 0, limit)
        if i < 0:
            if len(self._buf) < limit:
                return None
            # RFC 5321 §4.5.3.1.10: "500 Line too long"; the rest of the line is dropped
            end = self._buf.find(b"\n", limit)
            if end < 0:
                self._buf.clear()
                self._discarding = True
                return None
            del self._buf[: end + 1]
            return BadSyntax(too_long)
        raw = bytes(self._buf[: i + 1])
        del self._buf[: i + 1]
        if not raw.endswith(b"\r\n"):
            return BadSyntax(r.BARE_NEWLINE)  # RFC 5321 §2.3.8
        line = raw[:-2]
        if b"\r" in line or b"\n" in line or b"\0" in line:
            return BadSyntax(r.BAD_COMMAND_CHARS)
        return line

    def _command(self, line: bytes) -> Event:
        verb_bytes, _, rest_bytes = line.partition(b" ")
        if not _VERB.match(verb_bytes):
            return Unknown(r.UNKNOWN_COMMAND, verb=verb_bytes[:16].decode("latin-1"))
        verb = verb_bytes.decode("ascii").upper()  # RFC 5321 §2.4: verbs are case-insensitive
        try:
            rest = rest_bytes.decode("utf-8")  # RFC 6531 §3.3: UTF-8 in commands
        except UnicodeDecodeError:
            raise _syntax(501, "5.5.2", "Command is not valid UTF-8") from None
        handler = _HANDLERS.get(verb)
        if handler is None:
            return Unknown(r.UNKNOWN_COMMAND, verb=verb)
        return handler(self, rest)

    def _no_args(self, rest: str, name: str) -> None:
        if rest.strip():
            raise _syntax(501, "5.5.4", f"{name} takes no arguments")

    def _require_helo(self) -> None:
        if self.helo is None:
            raise _Fail(BadSequence(r.BAD_SEQUENCE_LHLO if self.lmtp else r.BAD_SEQUENCE_HELO))

    # RFC 5321 §4.1.1.1 (EHLO/HELO), RFC 2033 §4.1 (LHLO; HELO/EHLO are not LMTP commands)
    def _cmd_helo(self, rest: str, *, extended: bool, lhlo: bool) -> Event:
        if self.lmtp != lhlo:
            return Unknown(r.UNKNOWN_COMMAND, verb="LHLO" if lhlo else
                           ("EHLO" if extended else "HELO"))
        name = rest.strip(" ")
        if not name or " " in name or not is_domain_or_literal(name):
            raise _syntax(501, "5.5.4", "Expected a domain name or address literal")
        return Helo(name, extended, lhlo)

    # RFC 5321 §4.1.1.2
    def _cmd_mail(self, rest: str) -> Event:
        self._require_helo()
        if self.state is not State.READY:
            raise _Fail(BadSequence(r.NESTED_MAIL))
        path_text, params_text = self._split_command(rest, "FROM:")
        params = self._esmtp_params(params_text)
        mail = self._mail_params_from(params)
        path = self._path(path_text, utf8=mail.smtputf8, sender=True)
        return MailFrom(path, mail)

    # RFC 5321 §4.1.1.3
    def _cmd_rcpt(self, rest: str) -> Event:
        self._require_helo()
        if self.state in (State.READY, State.NEED_HELO):
            raise _Fail(BadSequence(r.BAD_SEQUENCE_MAIL))
        if self.state is State.BDAT:
            raise _Fail(BadSequence(r.MIXED_DATA_BDAT))
        path_text, params_text = self._split_command(rest, "TO:")
        rcpt = self._rcpt_params_from(self._esmtp_params(params_text))
        utf8 = self._mail_params is not None and self._mail_params.smtputf8
        path = self._path(path_text, utf8=utf8, sender=False)
        if self._rcpt_count >= self.max_recipients:
            raise _Fail(Refused(r.TOO_MANY_RECIPIENTS))
        return RcptTo(path, rcpt)

    def _split_command(self, rest: str, keyword: str) -> tuple[str, str]:
        if not rest[: len(keyword)].upper() == keyword:
            raise _syntax(501, "5.5.4", f"Expected {keyword}<address>")
        try:  # a space after the colon is not RFC syntax but is widely sent: tolerated
            path, params = split_path(rest[len(keyword):].lstrip(" "))
        except AddressError as exc:
            raise self._address_failure(exc, sender=keyword == "FROM:") from None
        if params and not params.startswith(" "):
            raise _syntax(501, "5.5.4", "Expected a space before parameters")
        return path, params

    def _path(self, text: str, *, utf8: bool, sender: bool) -> str:
        try:
            return parse_path(text, utf8=utf8, allow_null=sender,
                              allow_postmaster=not sender).address
        except AddressError as exc:
            raise self._address_failure(exc, sender=sender) from None

    @staticmethod
    def _address_failure(exc: AddressError, *, sender: bool) -> _Fail:
        if exc.non_ascii:
            return _Fail(Refused(r.NON_ASCII_ADDRESS))  # RFC 6531 §3.5
        # RFC 3463 §3.2: X.1.7 bad sender address syntax, X.1.3 bad destination syntax
        return _syntax(501, "5.1.7" if sender else "5.1.3", str(exc).capitalize())

    @staticmethod
    def _esmtp_params(text: str) -> dict[str, str | None]:
        """RFC 5321 §4.1.2: Mail-parameters = esmtp-param *(SP esmtp-param)."""
        out: dict[str, str | None] = {}
        for item in text.split(" "):
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not _KEYWORD.match(key) or (eq and not _VALUE.match(value)):
                raise _syntax(501, "5.5.4", f"Malformed parameter {item[:40]!r}")
            key = key.upper()  # RFC 5321 §2.4: keywords are case-insensitive
            if key in out:
                raise _syntax(501, "5.5.4", f"Duplicate parameter {key}")
            out[key] = value if eq else None
        return out

    def _mail_params_from(self, params: dict[str, str | None]) -> MailParams:
        size = body = ret = envid = auth = None
        smtputf8 = requiretls = False
        for key, value in params.items():
            if key == "SIZE":  # RFC 1870 §4: size-value = 1*20DIGIT
                if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
                    raise _syntax(501, "5.5.4", "SIZE needs a number")
                size = int(value)
                if size > self.max_message_size:  # RFC 1870 §6.3
                    raise _Fail(Refused(r.MESSAGE_TOO_BIG))
            elif key == "BODY":
                try:
                    body = Body((value or "").upper())
                except ValueError:
                    raise _syntax(501, "5.5.4", "BODY must be 7BIT, 8BITMIME or BINARYMIME") \
                        from None
            elif key in ("SMTPUTF8", "REQUIRETLS"):  # RFC 6531 §3.4, RFC 8689 §4.1
                if value is not None:
                    raise _syntax(501, "5.5.4", f"{key} takes no value")
                smtputf8 = smtputf8 or key == "SMTPUTF8"
                requiretls = requiretls or key == "REQUIRETLS"
            elif key == "RET":  # RFC 3461 §4.3
                ret = (value or "").upper()
                if ret not in ("FULL", "HDRS"):
                    raise _syntax(501, "5.5.4", "RET must be FULL or HDRS")
            elif key == "ENVID":  # RFC 3461 §4.4: xtext, at most 100 characters
                envid = self._xtext(value, "ENVID", 100)
            elif key == "AUTH":  # RFC 4954 §5: AUTH=xtext or AUTH=<>
                auth = "<>" if value == "<>" else self._xtext(value, "AUTH", 500)
            else:
                raise _Fail(BadSyntax(r.UNKNOWN_PARAMETER))  # RFC 5321 §4.1.1.11: 555
        return MailParams(size, body, smtputf8, ret, envid, auth, requiretls)

    def _rcpt_params_from(self, params: dict[str, str | None]) -> RcptParams:
        notify = orcpt = None
        for key, value in params.items():
            if key == "NOTIFY":  # RFC 3461 §4.1
                items = tuple((value or "").upper().split(","))
                allowed = {"SUCCESS", "FAILURE", "DELAY"}
                if not (items == ("NEVER",) or (set(items) <= allowed
                                                and len(set(items)) == len(items))):
                    raise _syntax(501, "5.5.4", "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")
                notify = items
            elif key == "ORCPT":  # RFC 3461 §4.2: addr-type ";" xtext
                addr_type, semi, addr = (value or "").partition(";")
                if not semi or not _KEYWORD.match(addr_type):
                    raise _syntax(501, "5.5.4", "ORCPT must be addr-type;address")
                orcpt = (addr_type.lower(), self._xtext(addr, "ORCPT", 500))
            else:
                raise _Fail(BadSyntax(r.UNKNOWN_PARAMETER))
        return RcptParams(notify, orcpt)

    @staticmethod
    def _xtext(value: str | None, name: str, limit: int) -> str:
        try:
            decoded = decode_xtext(value or "")
        except ValueError as exc:
            raise _syntax(501, "5.5.4", f"{name}: {exc}") from None
        if not decoded or len(decoded) > limit:
            raise _syntax(501, "5.5.4", f"{name} must be 1 to {limit} characters")
        return decoded

    # RFC 5321 §4.1.1.4; RFC 3030 §2 (no mixing), §3 (BINARYMIME needs BDAT); RFC 2920 §3.1
    def _cmd_data(self, rest: str) -> Event:
        self._no_args(rest, "DATA")
        self._require_helo()
        if self.state is State.BDAT:
            self.reset_transaction()
            raise _Fail(BadSequence(r.MIXED_DATA_BDAT))
        if self.state is State.READY:
            raise _Fail(BadSequence(r.BAD_SEQUENCE_MAIL))
        if self.state is State.MAIL:
            raise _Fail(BadSequence(r.NO_VALID_RECIPIENTS if self._rcpt_attempts
                                    else r.BAD_SEQUENCE_RCPT))
        if self._mail_params is not None and self._mail_params.body is Body.BINARY_MIME:
            raise _Fail(BadSequence(r.BINARYMIME_NEEDS_BDAT))
        return Data()

    # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF
    def _cmd_bdat(self, rest: str) -> Event | None:
        parts = rest.split(" ")
        if not 1 <= len(parts) <= 2 or not parts[0].isascii() or not parts[0].isdigit() \
                or len(parts[0]) > 20 or (len(parts) == 2 and parts[1].upper() != "LAST"):
            raise _syntax(501, "5.5.4", "Expected BDAT <size> [LAST]")
        size, last = int(parts[0]), len(parts) == 2
        error: ErrorEvent | None = None
        if self.helo is None:
            error = BadSequence(r.BAD_SEQUENCE_LHLO if self.lmtp else r.BAD_SEQUENCE_HELO)
        elif self.state is State.READY:
            error = BadSequence(r.BAD_SEQUENCE_MAIL)
        elif self.state is State.MAIL:
            error = BadSequence(r.NO_VALID_RECIPIENTS if self._rcpt_attempts
                                else r.BAD_SEQUENCE_RCPT)
        if self.state is State.RCPT:
            self._parts, self._size, self._too_big = [], 0, False
        self._bdat_error = error
        self._bdat_remaining, self._bdat_last, self._bdat_size = size, last, size
        self._bdat_return = self.state
        self.state = State.BDAT_READ  # the chunk is read (or discarded) in every case
        return self._read_bdat()

    def _read_bdat(self) -> Event | None:
        take = min(self._bdat_remaining, len(self._buf))
        if take:
            chunk = bytes(self._buf[:take])
            del self._buf[:take]
            self._bdat_remaining -= take
            if self._bdat_error is None and not self._too_big:
                self._size += take
                if self._size > self.max_message_size:
                    self._too_big, self._parts = True, []
                else:
                    self._parts.append(chunk)
        if self._bdat_remaining:
            return None
        if self._bdat_error is not None:
            error, self._bdat_error = self._bdat_error, None
            self.state = self._bdat_return
            return error
        if self._too_big:  # RFC 3030 §2 / RFC 1870 §6.3: the transaction fails
            self.state = State.READY
            self._reset_transaction_fields()
            return Refused(r.MESSAGE_TOO_BIG)
        if self._bdat_last:
            content = b"".join(self._parts)
            self._parts = []
            self.state = State.BDAT
            return MessageData(content, chunked=True)
        self.state = State.BDAT
        return BdatChunk(self._bdat_size)

    def _read_data(self) -> Event | None:
        """RFC 5321 §4.5.2 (transparency) and §4.1.1.4 (end of data), a whole read at a time:
        bytes methods find the end, the stuffed dots and the smuggling patterns, so a
        message costs a few C-level scans, not Python work per line."""
        # The last 2 raw bytes already consumed (``_ctx``, always 2 bytes) go in front, so a
        # CRLF, a stuffed dot or a smuggling pattern split across two reads is seen whole.
        window = self._ctx + self._buf
        end = window.find(_END_OF_DATA)
        if end >= 0:
            self._consume_data(window, end + 2)  # the content keeps the CRLF before the dot
            del self._buf[: end + 3]  # ... and the ".\r\n" after it is dropped
            return self._end_data()
        take = window.rfind(b"\n", 2) + 1  # complete lines only (0: none yet)...
        if len(window) - max(take, 2) > _DATA_FLUSH:
            take = len(window) - 2  # ...unless one is very long: keep 2 (CR + dot may straddle)
        if take > 2:
            self._consume_data(window, take)
            del self._buf[: take - 2]
        return None

    def _consume_data(self, window: bytes, take: int) -> None:
        """Add ``window[2:take]`` (raw DATA bytes after the 2 context bytes) to the message."""
        piece = window[:take]
        if (b"\n." in piece or b"\r." in piece) and _SMUGGLE.search(piece):
            self._smuggled = True
        self._ctx = piece[-2:]
        if self._too_big:
            return
        # RFC 5321 §4.5.2: a dot that starts a line was added by the client: drop it. The
        # context's CRLF stays as it is, so the content still starts at offset 2.
        content = piece.replace(b"\r\n.", b"\r\n")[2:]
        self._size += len(content)
        if self._size > self.max_message_size:
            self._too_big, self._parts = True, []
        else:
            self._parts.append(content)

    def _end_data(self) -> Event:
        content = b"".join(self._parts)
        self._parts = []
        if self._smuggled or self._too_big:
            reply = r.SMUGGLING if self._smuggled else r.MESSAGE_TOO_BIG
            self._reset_transaction_fields()
            self.state = State.READY
            return Refused(reply)
        self.state = State.RCPT  # until the reply to MessageData resets the transaction
        return MessageData(content)

    def _cmd_rset(self, rest: str) -> Event:  # RFC 5321 §4.1.1.5
        self._no_args(rest, "RSET")
        return Rset()

    def _cmd_noop(self, rest: str) -> Event:  # RFC 5321 §4.1.1.9: the argument is ignored
        return Noop()

    def _cmd_quit(self, rest: str) -> Event:  # RFC 5321 §4.1.1.10
        self._no_args(rest, "QUIT")
        self.state = State.CLOSED
        self._buf.clear()
        return Quit()

    def _cmd_vrfy(self, rest: str) -> Event:  # RFC 5321 §4.1.1.6
        if not rest.strip():
            raise _syntax(501, "5.5.4", "VRFY needs an argument")
        return Vrfy(rest.strip())

    def _cmd_expn(self, rest: str) -> Event:  # RFC 5321 §4.1.1.7
        if not rest.strip():
            raise _syntax(501, "5.5.4", "EXPN needs an argument")
        return Expn(rest.strip())

    def _cmd_help(self, rest: str) -> Event:  # RFC 5321 §4.1.1.8
        return Help(rest.strip())

    # RFC 3207 §4: STARTTLS takes no argument; not twice; we also refuse it mid-transaction
    def _cmd_starttls(self, rest: str) -> Event:
        self._no_args(rest, "STARTTLS")
        if self.tls:
            raise _Fail(BadSequence(r.ALREADY_TLS))
        self._require_helo()
        if self.state is not State.READY:
            raise _Fail(BadSequence(r.TRANSACTION_IN_PROGRESS))
        self._before_pause = self.state
        self.state = State.PAUSED  # CONVENTIONS §2: pause; trailing bytes go to start_tls()
        return StartTls()

    # RFC 4954 §4: AUTH mechanism [SP initial-response]
    def _cmd_auth(self, rest: str) -> Event:
        if self.helo is None or not self.helo.extended:
            raise _Fail(BadSequence(r.AUTH_NEEDS_EHLO))
        if self.authenticated:
            raise _Fail(BadSequence(r.ALREADY_AUTHENTICATED))
        if self.state is not State.READY:
            raise _Fail(BadSequence(r.TRANSACTION_IN_PROGRESS))
        parts = rest.split(" ")
        mechanism = parts[0].upper()
        if not 1 <= len(parts) <= 2 or not _MECHANISM.match(mechanism):
            raise _syntax(501, "5.5.4", "Expected AUTH <mechanism> [initial-response]")
        initial = None
        if len(parts) == 2:
            initial = b"" if parts[1] == "=" else _b64(parts[1])
        return Auth(mechanism, initial)

    def _auth_response(self, line: bytes) -> Event:
        if line == b"*":
            return AuthResponse(b"", cancelled=True)
        return AuthResponse(_b64(line.decode("latin-1")))


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise _Fail(BadSyntax(r.BAD_BASE64)) from None


_HANDLERS = {
    "HELO": lambda p, rest: p._cmd_helo(rest, extended=False, lhlo=False),
    "EHLO": lambda p, rest: p._cmd_helo(rest, extended=True, lhlo=False),
    "LHLO": lambda p, rest: p._cmd_helo(rest, extended=True, lhlo=True),
    "MAIL": SmtpProtocol._cmd_mail,
    "RCPT": SmtpProtocol._cmd_rcpt,
    "DATA": SmtpProtocol._cmd_data,
    "BDAT": SmtpProtocol._cmd_bdat,
    "RSET": SmtpProtocol._cmd_rset,
    "NOOP": SmtpProtocol._cmd_noop,
    "QUIT": SmtpProtocol._cmd_quit,
    "VRFY": SmtpProtocol._cmd_vrfy,
    "EXPN": SmtpProtocol._cmd_expn,
    "HELP": SmtpProtocol._cmd_help,
    "STARTTLS": SmtpProtocol._cmd_starttls,
    "AUTH": SmtpProtocol._cmd_auth,
}
