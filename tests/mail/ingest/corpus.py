"""Messages for the ingest tests, generated here (no fixtures on disk)."""

from __future__ import annotations

import base64


def simple(body: bytes = b"Hello, world.\r\n", **headers: str) -> bytes:
    fields = {
        "From": "Alice <alice@example.com>",
        "To": "bob@example.org",
        "Subject": "Greetings",
        "Date": "Thu, 13 Feb 2025 10:00:00 +0000",
        "Message-ID": "<msg-1@example.com>",
    }
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in fields.items())
    return head + b"\r\n" + body


def multipart(
    parts: list[bytes], boundary: str = "BOUNDARY", subtype: str = "mixed",
    preamble: bytes = b"This is a MIME message.\r\n", epilogue: bytes = b"", close: bool = True,
    eol: bytes = b"\r\n", extra_headers: bytes = b"",
) -> bytes:
    head = (
        b"From: Alice <alice@example.com>" + eol
        + b"To: bob@example.org" + eol
        + b"Subject: multipart" + eol
        + b"MIME-Version: 1.0" + eol
        + extra_headers
        + f'Content-Type: multipart/{subtype}; boundary="{boundary}"'.encode() + eol
        + eol
    )
    delim = b"--" + boundary.encode()
    out = head + preamble
    for part in parts:
        out += delim + eol + part + eol
    if close:
        out += delim + b"--" + eol + epilogue
    return out


def text_part(text: str, subtype: str = "plain", charset: str = "utf-8",
              encoding: str = "8bit", eol: bytes = b"\r\n") -> bytes:
    data = text.encode(charset)
    if encoding == "base64":
        data = base64.encodebytes(data).replace(b"\n", eol)
    elif encoding == "quoted-printable":
        import quopri

        data = quopri.encodestring(data).replace(b"\n", eol)
    return (
        f"Content-Type: text/{subtype}; charset={charset}".encode() + eol
        + f"Content-Transfer-Encoding: {encoding}".encode() + eol + eol + data
    )


def attachment(name: str, data: bytes, mime: str = "application/octet-stream") -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    return (
        f'Content-Type: {mime}; name="{name}"\r\n'.encode()
        + f'Content-Disposition: attachment; filename="{name}"\r\n'.encode()
        + b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded
    )


def nested(depth: int) -> bytes:
    """``depth`` multiparts, each holding the next; a text part at the bottom."""
    body = b"Content-Type: text/plain\r\n\r\nbottom"
    for level in range(depth, 0, -1):
        b = f"b{level}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n"
            + b"--" + b + b"\r\n" + body + b"\r\n--" + b + b"--"
        )
    return b"Subject: deep\r\n" + body


def bomb(count: int) -> bytes:
    parts = b"".join(b"--x\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(count))
    return b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + parts + b"--x--\r\n"
