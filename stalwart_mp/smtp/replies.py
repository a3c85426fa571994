"""SMTP replies: the record and its wire form.

RFC 5321 §4.2 (reply codes, multi-line replies with "-" after the code on every line but the
last), RFC 2034 §3/§4 (enhanced status codes in the text of every line), RFC 3463 (the codes).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")  # RFC 3463 §2: class.subject.detail


@dataclass(slots=True, frozen=True)
class Reply:
    """One server reply: a 3-digit code, an optional enhanced status code and text lines."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:  # RFC 5321 §4.2.1: 2yz..5yz are the reply classes used
            raise ValueError(f"reply code {self.code} is outside 200..599")
        if self.enhanced is not None:
            if not _ENHANCED.match(self.enhanced):
                raise ValueError(f"enhanced status code {self.enhanced!r} is not class.subject."
                                 "detail (RFC 3463 §2)")
            if self.enhanced[0] != str(self.code)[0]:  # RFC 2034 §4: classes must agree
                raise ValueError(f"enhanced status {self.enhanced} does not match {self.code}")

    @property
    def positive(self) -> bool:
        """2yz (completion) or 3yz (intermediate) — RFC 5321 §4.2.1."""
        return self.code < 400

    def to_bytes(self, *, enhanced: bool = True) -> bytes:
        """The wire form. Every line carries the code; all but the last use "code-"
        (RFC 5321 §4.2.1). CR and LF inside the text are replaced by spaces so reply text
        built from client data can never inject an extra reply line."""
        prefix = f"{self.enhanced} " if enhanced and self.enhanced else ""
        lines = self.lines or ("",)
        out: list[str] = []
        for i, text in enumerate(lines):
            clean = text.replace("\r", " ").replace("\n", " ")
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{clean}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8")


def reply(code: int, enhanced: str | None, *lines: str) -> Reply:
    """Shorthand: ``reply(250, "2.1.0", "Sender OK")``."""
    return Reply(code, enhanced, tuple(lines))


def ehlo_reply(hostname: str, greeting: str, extensions: list[str]) -> Reply:
    """The 250 reply to EHLO/LHLO: the first line names the server, each further line is one
    extension keyword with its parameters (RFC 5321 §4.1.1.1, e.g. "SIZE 52428800",
    "LIMITS RCPTMAX=100 MAILMAX=10" per RFC 9422 §3). No enhanced code: RFC 2034 §3 excludes
    the EHLO reply."""
    return Reply(250, None, (f"{hostname} {greeting}".strip(), *extensions))


# Replies the protocol decides on its own (RFC 5321 §4.2.2 / §4.2.3, RFC 3463 codes).
LINE_TOO_LONG = reply(500, "5.5.2", "Line too long")  # RFC 5321 §4.5.3.1.10
AUTH_LINE_TOO_LONG = reply(500, "5.5.6", "Authentication exchange line too long")  # RFC 4954 §6
BARE_NEWLINE = reply(500, "5.5.2", "Command lines must end with CRLF")  # RFC 5321 §2.3.8
BAD_COMMAND_CHARS = reply(500, "5.5.2", "Command contains invalid characters")
UNKNOWN_COMMAND = reply(500, "5.5.1", "Command not recognized")  # RFC 5321 §4.2.4
BAD_SEQUENCE_HELO = reply(503, "5.5.1", "Send EHLO/HELO first")  # RFC 5321 §4.1.4
BAD_SEQUENCE_LHLO = reply(503, "5.5.1", "Send LHLO first")  # RFC 2033 §4.1
BAD_SEQUENCE_MAIL = reply(503, "5.5.1", "Send MAIL first")
BAD_SEQUENCE_RCPT = reply(503, "5.5.1", "Send RCPT first")
NESTED_MAIL = reply(503, "5.5.1", "Mail transaction already in progress")  # RFC 5321 §4.1.4
NO_VALID_RECIPIENTS = reply(554, "5.5.1", "No valid recipients")  # RFC 2920 §3.1
MIXED_DATA_BDAT = reply(503, "5.5.1", "DATA and BDAT cannot be mixed")  # RFC 3030 §2
BINARYMIME_NEEDS_BDAT = reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")  # RFC 3030 §3
TRANSACTION_IN_PROGRESS = reply(503, "5.5.1", "Not allowed during a mail transaction")
ALREADY_AUTHENTICATED = reply(503, "5.5.1", "Already authenticated")  # RFC 4954 §4
AUTH_NEEDS_EHLO = reply(503, "5.5.1", "Send EHLO first")  # RFC 4954 §4
ALREADY_TLS = reply(503, "5.5.1", "TLS already active")  # RFC 3207 §4
BAD_BASE64 = reply(501, "5.5.2", "Cannot decode base64")  # RFC 4954 §4
AUTH_CANCELLED = reply(501, "5.0.0", "Authentication cancelled")  # RFC 4954 §4
MESSAGE_TOO_BIG = reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TOO_MANY_RECIPIENTS = reply(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
SMUGGLING = reply(554, "5.5.2", "Bare CR or LF next to a lone dot line: message refused")
NON_ASCII_ADDRESS = reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")  # RFC 6531 §3.5
UNKNOWN_PARAMETER = reply(555, "5.5.4", "Unsupported parameter")  # RFC 5321 §4.1.1.11
