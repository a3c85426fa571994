"""HAProxy PROXY protocol v1 and v2 receiver, sans-I/O.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt ("proxy-protocol.txt").

A listener configured for the PROXY protocol feeds everything received so far to
:func:`parse_proxy_header` until it returns a result; ``result.consumed`` bytes are the
header, anything after them is the first bytes of the mail protocol (SMTP/IMAP/TLS...).
The caller must not guess: on a PROXY listener every connection must start with a header
(proxy-protocol.txt §1, "the receiver MUST be configured to only receive the protocol").
"""
from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass, field

__all__ = [
    "PP2_TYPE_ALPN",
    "PP2_TYPE_AUTHORITY",
    "PP2_TYPE_CRC32C",
    "PP2_TYPE_NETNS",
    "PP2_TYPE_NOOP",
    "PP2_TYPE_SSL",
    "PP2_TYPE_UNIQUE_ID",
    "V1_MAX_LENGTH",
    "V2_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyProtocolError",
    "ProxyResult",
    "crc32c",
    "parse_proxy_header",
    "required_prefix_len",
]

# §2.1: "a receiver may reject an incomplete line which does not contain the CRLF
# sequence in the first 107 characters" (worst case "PROXY UNKNOWN" + two IPv6 + ports).
V1_MAX_LENGTH = 107
V1_SIGNATURE = b"PROXY "
# §2.2: the 12-byte binary signature, then ver_cmd, fam, and a 16-bit big-endian length.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LENGTH = 16
# Our cap on a whole v2 header (16 + addresses + TLVs); the format allows 16 + 65535.
V2_MAX_LENGTH = 4096

# §2.2.x TLV types
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30

_V2_COMMANDS = {0x0: "LOCAL", 0x1: "PROXY"}
# §2.2: address family (high nibble of byte 14) and the size of its address block.
_V2_FAMILIES = {0x0: ("AF_UNSPEC", 0), 0x1: ("AF_INET", 12), 0x2: ("AF_INET6", 36),
                0x3: ("AF_UNIX", 216)}
_V2_TRANSPORTS = {0x0, 0x1, 0x2}  # UNSPEC, STREAM, DGRAM (low nibble of byte 14)
_V1_FAMILIES = {b"TCP4": "AF_INET", b"TCP6": "AF_INET6"}


class ProxyProtocolError(ValueError):
    """The connection did not start with a valid PROXY protocol header; drop it."""


@dataclass(slots=True, frozen=True)
class ProxyResult:
    """A parsed header.

    ``command``: "PROXY" (addresses relayed), "LOCAL" (v2 health check from the proxy
    itself) or "UNKNOWN" (v1, the proxy does not know the addresses). ``family``: "AF_INET",
    "AF_INET6", "AF_UNIX" or "AF_UNSPEC". ``source``/``destination`` are None whenever the
    receiver must use the real connection endpoints instead (LOCAL, UNKNOWN, AF_UNSPEC);
    for AF_UNIX they are ``(path, 0)``. ``tlvs`` maps v2 TLV type to its first value.
    """

    version: int
    command: str
    family: str
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: dict[int, bytes] = field(default_factory=dict)
    consumed: int = 0


def parse_proxy_header(data: bytes, *, max_v2_length: int = V2_MAX_LENGTH) -> ProxyResult | None:
    """Parse the PROXY header at the start of ``data``.

    Returns None when more bytes are needed, a :class:`ProxyResult` when the header is
    complete, and raises :class:`ProxyProtocolError` when ``data`` cannot start a valid
    header or the header would exceed its maximum length.
    """
    data = bytes(data)
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data, max_v2_length)
    if data[0] == V1_SIGNATURE[0]:
        return _parse_v1(data)
    raise ProxyProtocolError("connection does not start with a PROXY protocol header")


def required_prefix_len(data: bytes) -> int:
    """Bytes still needed before :func:`parse_proxy_header` can say more (at least 1).

    Exact for v2 once its 16-byte fixed part is known; for v1 (a CRLF-terminated line) and
    an undetermined version it is 1. Returns 0 when ``data`` already holds a full header.
    Raises ProxyProtocolError on invalid input, like :func:`parse_proxy_header`.
    """
    if parse_proxy_header(data) is not None:
        return 0
    if data[:1] == V2_SIGNATURE[:1] and len(data) >= V2_HEADER_LENGTH:
        return V2_HEADER_LENGTH + _v2_length(data) - len(data)
    if data[:1] == V2_SIGNATURE[:1]:
        return V2_HEADER_LENGTH - len(data)
    return 1


# -- version 1 (§2.1) ---------------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyResult | None:
    _check_signature(data, V1_SIGNATURE)
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        _check_v1_incomplete(data)
        return None
    line = data[len(V1_SIGNATURE):end]
    _check_v1_chars(line)
    consumed = end + 2
    protocol, _, rest = line.partition(b" ")
    if protocol == b"UNKNOWN":
        # §2.1: "the receiver must ignore anything presented before the CRLF"
        return ProxyResult(1, "UNKNOWN", "AF_UNSPEC", None, None, {}, consumed)
    family = _V1_FAMILIES.get(protocol)
    if family is None:
        raise ProxyProtocolError(
            f"PROXY v1: unknown protocol {_show(protocol)}, expected TCP4, TCP6 or UNKNOWN")
    return _v1_addresses(rest, family, consumed)


def _check_v1_incomplete(data: bytes) -> None:
    if len(data) >= V1_MAX_LENGTH:
        raise ProxyProtocolError(f"PROXY v1: no CRLF in the first {V1_MAX_LENGTH} bytes")
    body = data[len(V1_SIGNATURE):]
    # A trailing CR may be the first half of the final CRLF.
    _check_v1_chars(body[:-1] if body.endswith(b"\r") else body)


def _check_v1_chars(line: bytes) -> None:
    """The v1 line is printable US-ASCII; the only control characters are the final CRLF."""
    if any(byte < 0x20 or byte > 0x7E for byte in line):
        raise ProxyProtocolError("PROXY v1: control or non-ASCII byte in the header line")


def _v1_addresses(rest: bytes, family: str, consumed: int) -> ProxyResult:
    parts = rest.split(b" ")
    if len(parts) != 4:
        raise ProxyProtocolError(
            f"PROXY v1: expected 'src dst sport dport' after the protocol, got {_show(rest)}")
    version = 4 if family == "AF_INET" else 6
    src = _v1_ip(parts[0], version)
    dst = _v1_ip(parts[1], version)
    return ProxyResult(1, "PROXY", family, (src, _v1_port(parts[2])),
                       (dst, _v1_port(parts[3])), {}, consumed)


def _v1_ip(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        address = None
    # A scope id ("fe80::1%eth0") is not an address the proxy can relay.
    if address is None or address.version != version or b"%" in text:
        raise ProxyProtocolError(f"PROXY v1: {_show(text)} is not an IPv{version} address")
    return str(address)


def _v1_port(text: bytes) -> int:
    # §2.1: a decimal port in [0..65535]; we refuse signs, spaces and leading zeros.
    valid = text.isdigit() and len(text) <= 5 and (text == b"0" or not text.startswith(b"0"))
    if not valid or int(text) > 65535:
        raise ProxyProtocolError(f"PROXY v1: {_show(text)} is not a port number (0-65535)")
    return int(text)


# -- version 2 (§2.2) ---------------------------------------------------------------------


def _parse_v2(data: bytes, max_length: int) -> ProxyResult | None:
    _check_signature(data, V2_SIGNATURE)
    if len(data) < V2_HEADER_LENGTH:
        return None
    command, family, address_size = _v2_fixed_part(data)
    total = V2_HEADER_LENGTH + _v2_length(data)
    if total > max_length:
        raise ProxyProtocolError(
            f"PROXY v2: header of {total} bytes exceeds the limit of {max_length}")
    if total - V2_HEADER_LENGTH < address_size:
        raise ProxyProtocolError(
            f"PROXY v2: length {total - V2_HEADER_LENGTH} is too short for {family} "
            f"addresses ({address_size} bytes)")
    if len(data) < total:
        return None
    header = data[:total]
    if command == "LOCAL":
        # §2.2: LOCAL - use the real endpoints, "discard the protocol block including the
        # family which is ignored".
        return ProxyResult(2, "LOCAL", family, None, None, {}, total)
    body = header[V2_HEADER_LENGTH:]
    tlvs = _v2_tlvs(body[address_size:])
    _verify_crc32c(header, V2_HEADER_LENGTH + address_size, tlvs)
    source, destination = _v2_addresses(family, body[:address_size])
    return ProxyResult(2, "PROXY", family, source, destination, tlvs, total)


def _v2_length(data: bytes) -> int:
    return struct.unpack_from("!H", data, 14)[0]


def _v2_fixed_part(data: bytes) -> tuple[str, str, int]:
    """(command, family name, address block size) from bytes 12 and 13."""
    ver_cmd, fam = data[12], data[13]
    if ver_cmd >> 4 != 0x2:
        raise ProxyProtocolError(f"PROXY v2: unsupported version {ver_cmd >> 4}, expected 2")
    command = _V2_COMMANDS.get(ver_cmd & 0x0F)
    if command is None:
        raise ProxyProtocolError(f"PROXY v2: unknown command 0x{ver_cmd & 0x0F:x}")
    family = _V2_FAMILIES.get(fam >> 4)
    if command == "LOCAL":
        # §2.2: with LOCAL the family "is ignored", so any value is accepted.
        return command, family[0] if family else "AF_UNSPEC", 0
    if family is None or (fam & 0x0F) not in _V2_TRANSPORTS:
        raise ProxyProtocolError(f"PROXY v2: unknown address family/transport 0x{fam:02x}")
    return command, family[0], family[1]


def _v2_addresses(
    family: str, block: bytes
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    if family == "AF_INET":
        src, dst, sport, dport = struct.unpack("!4s4sHH", block)
    elif family == "AF_INET6":
        src, dst, sport, dport = struct.unpack("!16s16sHH", block)
    elif family == "AF_UNIX":
        return (_unix_path(block[:108]), 0), (_unix_path(block[108:]), 0)
    else:
        # §2.2: AF_UNSPEC - "the receiver should use the real connection endpoints"
        return None, None
    return ((str(ipaddress.ip_address(src)), sport), (str(ipaddress.ip_address(dst)), dport))


def _unix_path(raw: bytes) -> str:
    return os.fsdecode(raw.split(b"\0", 1)[0])


def _v2_tlvs(data: bytes) -> dict[int, bytes]:
    """Type-length-value vectors after the addresses (§2.2.x); the first of a type wins."""
    tlvs: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyProtocolError("PROXY v2: truncated TLV header")
        kind, length = data[offset], struct.unpack_from("!H", data, offset + 1)[0]
        start, offset = offset + 3, offset + 3 + length
        if offset > len(data):
            raise ProxyProtocolError(
                f"PROXY v2: TLV 0x{kind:02x} of {length} bytes overruns the header")
        tlvs.setdefault(kind, data[start:offset])
    return tlvs


# -- PP2_TYPE_CRC32C (§2.2, CRC32c as in RFC 4960 Appendix B) ------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), reflected, as used by SCTP and PP2_TYPE_CRC32C."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _verify_crc32c(header: bytes, tlv_start: int, tlvs: dict[int, bytes]) -> None:
    """If the sender included a checksum, it must match (receiver MUST treat it invalid)."""
    value = tlvs.get(PP2_TYPE_CRC32C)
    if value is None:
        return
    if len(value) != 4:
        raise ProxyProtocolError(f"PROXY v2: CRC32C TLV has {len(value)} bytes, expected 4")
    position = _tlv_value_offset(header, tlv_start, PP2_TYPE_CRC32C)
    zeroed = header[:position] + b"\0\0\0\0" + header[position + 4:]
    if crc32c(zeroed) != int.from_bytes(value, "big"):
        raise ProxyProtocolError("PROXY v2: CRC32C checksum mismatch")


def _tlv_value_offset(header: bytes, offset: int, kind: int) -> int:
    """Offset in ``header`` of the value of the first TLV of ``kind`` (already validated)."""
    while header[offset] != kind:
        offset += 3 + struct.unpack_from("!H", header, offset + 1)[0]
    return offset + 3


# -- shared -------------------------------------------------------------------------------


def _check_signature(data: bytes, signature: bytes) -> None:
    prefix = data[: len(signature)]
    if not signature.startswith(prefix):
        raise ProxyProtocolError("connection does not start with a PROXY protocol signature")


def _show(raw: bytes, limit: int = 60) -> str:
    return repr(raw[:limit])[1:] + ("..." if len(raw) > limit else "")
