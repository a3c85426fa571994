"""PROXY protocol v1/v2 parser: spec examples, incremental feeding, malformed input, fuzz."""
from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from stalwart_mp.worker.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    V2_SIGNATURE,
    ProxyProtocolError,
    ProxyResult,
    crc32c,
    parse_proxy_header,
    required_prefix_len,
)

PAYLOAD = b"EHLO client.example\r\n"


def v2(command: int = 0x1, fam: int = 0x11, addresses: bytes = b"", tlvs: bytes = b"",
       length: int | None = None) -> bytes:
    body = addresses + tlvs
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([0x20 | command, fam]) + struct.pack("!H", size) + body


def inet(src: str = "192.0.2.1", dst: str = "198.51.100.2", sport: int = 50000,
         dport: int = 25) -> bytes:
    return (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
            + struct.pack("!HH", sport, dport))


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def feed_bytewise(data: bytes) -> ProxyResult:
    """Feed one byte at a time, as a slow client would; every prefix must say 'need more'."""
    for end in range(len(data) + 1):
        result = parse_proxy_header(data[:end])
        if result is not None:
            return result
    raise AssertionError("header never completed")


def both_ways(data: bytes) -> ProxyResult:
    whole = parse_proxy_header(data + PAYLOAD)
    assert whole is not None
    assert feed_bytewise(data) == whole
    assert (data + PAYLOAD)[whole.consumed:] == PAYLOAD
    return whole


# -- version 1 ----------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    result = both_ways(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n")
    assert result == ProxyResult(1, "PROXY", "AF_INET", ("192.168.0.1", 56324),
                                 ("192.168.0.11", 443), {}, 47)


def test_v1_tcp6() -> None:
    header = b"PROXY TCP6 2001:db8::1 2001:0db8:0:0::2 65535 0\r\n"
    result = both_ways(header)
    assert (result.version, result.command, result.family) == (1, "PROXY", "AF_INET6")
    assert result.source == ("2001:db8::1", 65535)
    assert result.destination == ("2001:db8::2", 0)
    assert result.consumed == len(header)


def test_v1_unknown_ignores_the_rest_of_the_line() -> None:
    for header in (b"PROXY UNKNOWN\r\n",
                   b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"):
        result = both_ways(header)
        assert (result.command, result.family, result.source, result.destination) == (
            "UNKNOWN", "AF_UNSPEC", None, None)
        assert result.consumed == len(header)


def test_v1_worst_case_length_is_accepted() -> None:
    # §2.1: the longest line, 107 bytes with CRLF.
    addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    header = f"PROXY UNKNOWN {addr} {addr} 65535 65535\r\n".encode()
    assert len(header) == 107
    assert both_ways(header).consumed == 107


@pytest.mark.parametrize("header, message", [
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 65536\r\n", "not a port"),
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 25\r\n", "not a port"),
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 0025 25\r\n", "not a port"),
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 +25 25\r\n", "not a port"),
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 25\r\n", "expected 'src dst sport dport'"),
    (b"PROXY TCP4 192.168.0.1  192.168.0.11 1 25\r\n", "expected 'src dst sport dport'"),
    (b"PROXY TCP4 2001:db8::1 192.168.0.11 1 25\r\n", "not an IPv4 address"),
    (b"PROXY TCP6 192.168.0.1 2001:db8::1 1 25\r\n", "not an IPv6 address"),
    (b"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 25\r\n", "not an IPv6 address"),
    (b"PROXY TCP4 192.168.000.1 192.168.0.11 1 25\r\n", "not an IPv4 address"),
    (b"PROXY UDP4 192.168.0.1 192.168.0.11 1 25\r\n", "unknown protocol"),
    (b"PROXY TCP4\r\n", "expected 'src dst sport dport'"),
    (b"PROXY tcp4 192.168.0.1 192.168.0.11 1 25\r\n", "unknown protocol"),
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 1 25\n", "control or non-ASCII"),
    (b"PROXY UNKNOWN\x00\r\n", "control or non-ASCII"),
])
def test_v1_malformed(header: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse_proxy_header(header)


def test_v1_oversize_without_crlf() -> None:
    data = b"PROXY UNKNOWN " + b"x" * 93
    assert len(data) == 107
    assert parse_proxy_header(data[:106]) is None
    with pytest.raises(ProxyProtocolError, match="no CRLF in the first 107 bytes"):
        parse_proxy_header(data)
    # A CRLF right after the limit is still too late.
    with pytest.raises(ProxyProtocolError, match="no CRLF"):
        parse_proxy_header(data + b"\r\n")


@pytest.mark.parametrize("data", [
    b"EHLO x\r\n", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x00", b"PROXX TCP4", b"proxy ",
    b"PROXYTCP4", b"\r\n\r\n\x01",
])
def test_bad_signature(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError, match="does not start with a PROXY protocol"):
        parse_proxy_header(data)


def test_need_more_data_for_every_prefix_of_a_signature() -> None:
    assert parse_proxy_header(b"") is None
    for signature in (b"PROXY ", V2_SIGNATURE):
        for end in range(1, len(signature) + 1):
            assert parse_proxy_header(signature[:end]) is None


# -- version 2 ----------------------------------------------------------------------------


def test_v2_inet() -> None:
    header = v2(addresses=inet())
    result = both_ways(header)
    assert result == ProxyResult(2, "PROXY", "AF_INET", ("192.0.2.1", 50000),
                                 ("198.51.100.2", 25), {}, 28)


def test_v2_inet6_with_tlvs() -> None:
    addresses = inet("2001:db8::1", "2001:db8::25", 40000, 993)
    tlvs = tlv(PP2_TYPE_ALPN, b"imap") + tlv(PP2_TYPE_AUTHORITY, b"mail.example.com") \
        + tlv(PP2_TYPE_NOOP, b"") + tlv(PP2_TYPE_NOOP, b"second")
    header = v2(fam=0x21, addresses=addresses, tlvs=tlvs)
    result = both_ways(header)
    assert result.family == "AF_INET6"
    assert result.source == ("2001:db8::1", 40000)
    assert result.destination == ("2001:db8::25", 993)
    assert result.tlvs == {PP2_TYPE_ALPN: b"imap", PP2_TYPE_AUTHORITY: b"mail.example.com",
                           PP2_TYPE_NOOP: b""}
    assert result.consumed == 16 + 36 + len(tlvs)


def test_v2_unix() -> None:
    block = b"/run/haproxy.sock".ljust(108, b"\0") + b"/run/stalwart.sock".ljust(108, b"\0")
    result = both_ways(v2(fam=0x31, addresses=block))
    assert result.family == "AF_UNIX"
    assert result.source == ("/run/haproxy.sock", 0)
    assert result.destination == ("/run/stalwart.sock", 0)


def test_v2_unspec_uses_real_endpoints() -> None:
    result = both_ways(v2(fam=0x00, tlvs=tlv(PP2_TYPE_AUTHORITY, b"x.test")))
    assert (result.command, result.family, result.source, result.destination) == (
        "PROXY", "AF_UNSPEC", None, None)
    assert result.tlvs == {PP2_TYPE_AUTHORITY: b"x.test"}


def test_v2_local_discards_the_block() -> None:
    # §2.2: LOCAL - keep the real endpoints and ignore the family and the address block.
    header = v2(command=0x0, fam=0x11, addresses=inet(), tlvs=b"\xff\xff")
    result = both_ways(header)
    assert (result.command, result.source, result.destination, result.tlvs) == (
        "LOCAL", None, None, {})
    assert result.consumed == len(header)
    assert both_ways(v2(command=0x0, fam=0xFF)).command == "LOCAL"


def test_v2_crc32c() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 / iSCSI check value
    unsigned = v2(addresses=inet(), tlvs=tlv(PP2_TYPE_CRC32C, b"\0\0\0\0"))
    checksum = crc32c(unsigned).to_bytes(4, "big")
    signed = unsigned[:-4] + checksum
    assert both_ways(signed).tlvs[PP2_TYPE_CRC32C] == checksum
    corrupt = signed[:20] + bytes([signed[20] ^ 1]) + signed[21:]  # source address
    with pytest.raises(ProxyProtocolError, match="CRC32C checksum mismatch"):
        parse_proxy_header(corrupt)
    with pytest.raises(ProxyProtocolError, match="CRC32C TLV has 2 bytes"):
        parse_proxy_header(v2(addresses=inet(), tlvs=tlv(PP2_TYPE_CRC32C, b"\0\0")))


@pytest.mark.parametrize("header, message", [
    (V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + inet(), "unsupported version 1"),
    (V2_SIGNATURE + bytes([0x31, 0x11, 0, 12]) + inet(), "unsupported version 3"),
    (v2(command=0x2, addresses=inet()), "unknown command 0x2"),
    (v2(fam=0x41, addresses=inet()), "unknown address family/transport 0x41"),
    (v2(fam=0x13, addresses=inet()), "unknown address family/transport 0x13"),
    (v2(fam=0x11, addresses=inet()[:8]), "too short for AF_INET"),
    (v2(fam=0x21, addresses=inet()), "too short for AF_INET6"),
    (v2(addresses=inet(), tlvs=b"\x01\x00"), "truncated TLV header"),
    (v2(addresses=inet(), tlvs=b"\x01\x00\x05abc"), "overruns the header"),
])
def test_v2_malformed(header: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse_proxy_header(header + PAYLOAD)


def test_v2_fixed_part_is_checked_before_the_body_arrives() -> None:
    with pytest.raises(ProxyProtocolError, match="unknown command"):
        parse_proxy_header(v2(command=0xF, length=12))


def test_v2_oversize() -> None:
    header = v2(addresses=inet(), length=4096 - 16 + 1)
    with pytest.raises(ProxyProtocolError, match="4097 bytes exceeds the limit of 4096"):
        parse_proxy_header(header[:16])
    big = v2(addresses=inet(), tlvs=tlv(PP2_TYPE_NOOP, b"x" * (4096 - 16 - 12 - 3)))
    assert len(big) == 4096
    assert both_ways(big).consumed == 4096
    with pytest.raises(ProxyProtocolError, match="exceeds the limit of 100"):
        parse_proxy_header(big, max_v2_length=100)


def test_v2_waits_for_the_declared_length() -> None:
    header = v2(addresses=inet(), tlvs=tlv(PP2_TYPE_ALPN, b"smtp"))
    assert parse_proxy_header(header[:-1]) is None
    assert required_prefix_len(header[:10]) == 6
    assert required_prefix_len(header[:20]) == len(header) - 20
    assert required_prefix_len(header) == 0
    assert required_prefix_len(b"PROX") == 1


def test_accepts_bytearray_and_memoryview() -> None:
    header = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    assert parse_proxy_header(bytearray(header)) == parse_proxy_header(header)
    assert parse_proxy_header(memoryview(v2(addresses=inet()))).source == ("192.0.2.1", 50000)


# -- fuzz ---------------------------------------------------------------------------------


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(3)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        elif buf:
            del buf[min(pos, len(buf) - 1)]
    return bytes(buf)


SEEDS = [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(addresses=inet(), tlvs=tlv(PP2_TYPE_ALPN, b"smtp")),
    v2(fam=0x21, addresses=inet("::1", "::2")),
    v2(fam=0x31, addresses=b"\0" * 216),
    v2(command=0x0),
]


def _check(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    if result is not None:
        assert 0 < result.consumed <= len(data)
        assert result.command in ("PROXY", "LOCAL", "UNKNOWN")


def test_fuzz_random_and_mutated_input() -> None:
    rng = random.Random(20240601)
    for _ in range(3000):
        _check(bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
        prefix = rng.choice([b"PROXY ", V2_SIGNATURE])
        _check(prefix + bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
        mutated = _mutate(rng, rng.choice(SEEDS))
        for end in (len(mutated), rng.randint(0, len(mutated))):
            _check(mutated[:end])
