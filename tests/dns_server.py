"""A real DNS server on loopback (UDP and TCP on one free port) serving a zone from a dict.

    zone = Zone({
        "example.com": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"], "MX": [(10, "mx.example.com")]},
        "mx.example.com": {"A": ["192.0.2.10"], "AAAA": ["2001:db8::10"]},
        reverse_name("192.0.2.10"): {"PTR": ["mx.example.com"]},
        "www.example.com": {"CNAME": "example.com"},
        "_25._tcp.mx.example.com": {"TLSA": ["3 1 1 0123abcd"]},
    })
    zone.broken.add("broken.example")   # SERVFAIL for this name
    zone.authentic = True                # set the AD bit on answers (DANE tests)
    zone.insecure.add("plain.example")   # but never on this name's answers (an unsigned zone)

Names are lowercase without the final dot. A name that is not in the zone is NXDOMAIN, unless
a longer name ends with it (an empty non-terminal: NOERROR, no data). CNAMEs are chased
inside the zone, as a recursive resolver would. The zone can be edited while the server runs.
The ``dns_zone`` fixture starts a server and yields ``(port, zone)``.
"""
from __future__ import annotations

import ipaddress
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.reversename
import dns.rrset
import pytest

TTL = 60


class Zone(dict):
    """name -> {type -> records}; ``broken`` names answer SERVFAIL."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.broken: set[str] = set()
        self.authentic = False
        self.insecure: set[str] = set()
        self.queries: list[tuple[str, str]] = []  # (name, type) asked, in order


def reverse_name(ip: str) -> str:
    """The PTR name of an address: "10.2.0.192.in-addr.arpa" for "192.0.2.10"."""
    return dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text(True)


def _rdata(rdtype: str, value: Any) -> dns.rdata.Rdata:
    cls, typ = dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    if rdtype == "TXT":
        raw = value.encode() if isinstance(value, str) else bytes(value)
        chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        return dns.rdtypes.ANY.TXT.TXT(cls, typ, chunks)
    if rdtype == "MX" and isinstance(value, tuple):
        value = f"{value[0]} {value[1]}"
    text = str(value)
    if rdtype in ("MX", "PTR", "CNAME") and not text.endswith("."):
        text += "."
    return dns.rdata.from_text(cls, typ, text)


def _records(zone: Zone, name: str, rdtype: str) -> list:
    values = zone.get(name, {}).get(rdtype, [])
    if isinstance(values, str | tuple):
        values = [values]
    return list(values)


def answer(zone: Zone, query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.RA
    if not query.question:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    name = question_name = question.name.to_text(omit_final_dot=True).lower()
    rdtype = dns.rdatatype.to_text(question.rdtype)
    zone.queries.append((name, rdtype))
    for _ in range(9):  # chase CNAMEs inside the zone
        if name in zone.broken:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        cname = _records(zone, name, "CNAME")
        if not cname or rdtype == "CNAME":
            break
        target = _rdata("CNAME", cname[0])
        rrset = dns.rrset.RRset(dns.name.from_text(name), dns.rdataclass.IN,
                                dns.rdatatype.CNAME)
        rrset.add(target, TTL)
        response.answer.append(rrset)
        name = target.target.to_text(omit_final_dot=True).lower()
    values = _records(zone, name, rdtype)
    if values:
        rrset = dns.rrset.RRset(dns.name.from_text(name), dns.rdataclass.IN, question.rdtype)
        for value in values:
            rrset.add(_rdata(rdtype, value), TTL)
        response.answer.append(rrset)
    elif name not in zone and not any(k.endswith("." + name) for k in zone):
        response.set_rcode(dns.rcode.NXDOMAIN)
    # RFC 6840 §5.7 / RFC 3225: AD only for a client that asked (AD or DO bit)
    if zone.authentic and question_name not in zone.insecure and (
            query.flags & dns.flags.AD or query.ednsflags & dns.flags.DO):
        response.flags |= dns.flags.AD
    return response


def _wire(zone: Zone, data: bytes, max_size: int) -> bytes | None:
    try:
        query = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return None
    try:
        response = answer(zone, query)
    except (dns.exception.DNSException, ValueError):  # a bad record in the test's zone
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
    if max_size == 512 and query.edns >= 0:  # RFC 6891 §6.2.3: the client's UDP size
        max_size = max(512, query.payload)
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:  # RFC 1035 §4.2.1: truncate, the client retries on TCP
        response.answer.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        out = _wire(self.server.zone, data, 512)  # type: ignore[attr-defined]
        if out is not None:
            sock.sendto(out, self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        while True:
            head = _recv_exact(sock, 2)
            if head is None:
                return
            data = _recv_exact(sock, struct.unpack("!H", head)[0])
            if data is None:
                return
            out = _wire(self.server.zone, data, 65535)  # type: ignore[attr-defined]
            if out is None:
                return
            sock.sendall(struct.pack("!H", len(out)) + out)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """UDP and TCP listeners on 127.0.0.1:port, each served by a thread."""

    def __init__(self, zone: Zone | None = None):
        self.zone = zone if zone is not None else Zone()
        for _ in range(50):
            udp = _UdpServer(("127.0.0.1", 0), _Udp)
            port = udp.server_address[1]
            try:
                tcp = _TcpServer(("127.0.0.1", port), _Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")
        self.port = port
        self._servers = (udp, tcp)
        for server in self._servers:
            server.zone = self.zone  # type: ignore[attr-defined]
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True, name=f"dns-{type(s).__name__}")
            for s in self._servers
        ]

    def start(self) -> DnsServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def dns_zone() -> Iterator[tuple[int, Zone]]:
    """A loopback DNS server: yields (port, zone); edit the zone at will."""
    server = DnsServer().start()
    try:
        yield server.port, server.zone
    finally:
        server.stop()
