"""The PROXY protocol header (HAProxy's spec, versions 1 and 2), sans-IO.

A load balancer in front of the server sends this header first, so the
server learns the real client address instead of the balancer's. It is
accepted only from ``[listen] proxy_from`` networks; deciding that is the
listener's job, this module only reads bytes.

Hand-written because no maintained Python library parses both versions
without owning the socket, and the job is small: one bounded line (v1) or
a 16-byte header and a length-prefixed block (v2).

The parser never consumes a byte past the header: ``need()`` says how many
more bytes may be read without running into the protocol that follows
(the TLS ClientHello, or an early SMTP command), and ``feed()`` returns how
many of the given bytes were the header's.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the spec's bound, CRLF included
V2_HEADER_LENGTH = 16
V2_MAX_PAYLOAD = 4096  # addresses plus TLVs; the spec allows 64 KiB, no balancer sends that
_V2_ADDRESS_LENGTH = {0x1: 12, 0x2: 36}  # AF_INET, AF_INET6 (with ports)
_Family = type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]
_V1_FAMILIES: dict[bytes, _Family] = {b"TCP4": ipaddress.IPv4Address,
                                      b"TCP6": ipaddress.IPv6Address}


@dataclass(frozen=True, slots=True)
class ProxiedAddress:
    """The client and the address it connected to, as the proxy saw them."""

    source: IPAddress
    source_port: int
    destination: IPAddress
    destination_port: int


@dataclass(frozen=True, slots=True)
class ProxyLocal:
    """No client address in the header (v2 LOCAL, v1 UNKNOWN, other families): the
    connection's own endpoints stand, as the spec asks."""


@dataclass(frozen=True, slots=True)
class ProxyError:
    """Not a valid header; the spec says to close the connection."""

    reason: str


ProxyResult = ProxiedAddress | ProxyLocal | ProxyError


class ProxyHeaderParser:
    """Feed bytes until ``result`` is set; at most ``need()`` bytes at a time over a socket."""

    def __init__(self) -> None:
        self._buffer = b""
        self.result: ProxyResult | None = None

    def need(self) -> int:
        """How many bytes may be read next without reading past the header; 0 when done."""
        buf = self._buffer
        if self.result is not None:
            return 0
        if len(buf) < len(V2_SIGNATURE):  # v1 lines are longer than the v2 signature
            return len(V2_SIGNATURE) - len(buf)
        if buf.startswith(V2_SIGNATURE):
            if len(buf) < V2_HEADER_LENGTH:
                return V2_HEADER_LENGTH - len(buf)
            return V2_HEADER_LENGTH + _v2_length(buf) - len(buf)
        # a v1 line ends in CRLF: at least 2 bytes away, or 1 after a CR
        return min(1 if buf.endswith(b"\r") else 2, V1_MAX_LENGTH - len(buf))

    def feed(self, data: bytes) -> int:
        """Take header bytes from ``data``; returns how many were the header's."""
        taken = 0
        while self.result is None and taken < len(data):
            step = data[taken:taken + self.need()]
            self._buffer += step
            taken += len(step)
            self.result = self._parse()
        return taken

    def _parse(self) -> ProxyResult | None:
        buf = self._buffer
        if buf.startswith(V2_SIGNATURE):
            if len(buf) < V2_HEADER_LENGTH:
                return None
            if _v2_length(buf) > V2_MAX_PAYLOAD:
                return ProxyError(f"v2 header longer than {V2_MAX_PAYLOAD} bytes")
            if len(buf) < V2_HEADER_LENGTH + _v2_length(buf):
                return None
            return _parse_v2(buf)
        if V2_SIGNATURE.startswith(buf) or V1_PREFIX.startswith(buf):
            return None  # could still be either
        if not buf.startswith(V1_PREFIX):
            return ProxyError("not a PROXY protocol header")
        if buf.endswith(b"\r\n"):
            return _parse_v1(buf[:-2])
        if b"\n" in buf or b"\r" in buf[:-1]:
            return ProxyError("v1 header: bare CR or LF")
        if len(buf) >= V1_MAX_LENGTH:
            return ProxyError(f"v1 header longer than {V1_MAX_LENGTH} bytes")
        return None


def _v2_length(buf: bytes) -> int:
    return int(struct.unpack_from("!H", buf, 14)[0])


def _parse_v2(buf: bytes) -> ProxyResult:
    version, command = buf[12] >> 4, buf[12] & 0x0F
    family, transport = buf[13] >> 4, buf[13] & 0x0F
    payload = buf[V2_HEADER_LENGTH:]
    if version != 2:
        return ProxyError(f"v2 header: version {version}")
    if command == 0x0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyLocal()
    if command != 0x1:
        return ProxyError(f"v2 header: command {command}")
    size = _V2_ADDRESS_LENGTH.get(family)
    if size is None or transport != 0x1:  # UNSPEC, AF_UNIX or not a stream: no IP to use
        return ProxyLocal() if transport in (0x0, 0x1) else ProxyError(
            f"v2 header: transport {transport} on a stream listener")
    if len(payload) < size:
        return ProxyError("v2 header: address block shorter than its family")
    half = (size - 4) // 2
    cls: _Family = ipaddress.IPv4Address if family == 0x1 else ipaddress.IPv6Address
    source_port, destination_port = struct.unpack_from("!HH", payload, 2 * half)
    # whatever follows the addresses is TLVs: optional facts we do not use
    return ProxiedAddress(cls(payload[:half]), source_port,
                          cls(payload[half:2 * half]), destination_port)


def _parse_v1(line: bytes) -> ProxyResult:
    fields = line.split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return ProxyLocal()  # the rest of the line is to be ignored
    if len(fields) != 6 or fields[1] not in _V1_FAMILIES:
        return ProxyError("v1 header: expected PROXY TCP4|TCP6 src dst sport dport")
    cls = _V1_FAMILIES[fields[1]]
    try:
        source, destination = (cls(f.decode("ascii")) for f in fields[2:4])
        ports = [_port(f) for f in fields[4:6]]
    except (ValueError, UnicodeDecodeError):
        return ProxyError("v1 header: bad address or port")
    return ProxiedAddress(source, ports[0], destination, ports[1])


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (text.startswith(b"0") and text != b"0"):
        raise ValueError(text)
    port = int(text)
    if port > 65535:
        raise ValueError(text)
    return port
