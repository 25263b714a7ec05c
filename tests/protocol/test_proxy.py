"""The PROXY protocol header parser, bytes in, result out (no sockets)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

import pytest

from postwarden.protocol.proxy import (
    V1_MAX_LENGTH,
    V2_MAX_PAYLOAD,
    V2_SIGNATURE,
    ProxiedAddress,
    ProxyError,
    ProxyHeaderParser,
    ProxyLocal,
    ProxyResult,
)

V4 = ProxiedAddress(ipaddress.ip_address("192.0.2.7"), 40000,
                    ipaddress.ip_address("198.51.100.1"), 25)
V6 = ProxiedAddress(ipaddress.ip_address("2001:db8::7"), 40000,
                    ipaddress.ip_address("2001:db8::1"), 993)


def v2(command: int = 0x1, family: int = 0x1, transport: int = 0x1, payload: bytes | None = None,
       version: int = 2) -> bytes:
    if payload is None:
        payload = (V4.source.packed + V4.destination.packed
                   + struct.pack("!HH", V4.source_port, V4.destination_port))
    return (V2_SIGNATURE + bytes([version << 4 | command, family << 4 | transport])
            + struct.pack("!H", len(payload)) + payload)


def parse_at_once(data: bytes) -> tuple[ProxyResult | None, bytes]:
    """Everything in one feed: the result and the bytes after the header."""
    parser = ProxyHeaderParser()
    taken = parser.feed(data)
    return parser.result, data[taken:]


def parse_as_a_socket_would(data: bytes) -> tuple[ProxyResult | None, bytes]:
    """Reading only what ``need()`` allows, one byte short of it where possible."""
    parser = ProxyHeaderParser()
    pos = 0
    while parser.need() and pos < len(data):  # bounded: pos grows every round
        size = max(1, parser.need() - 1)
        assert parser.feed(data[pos:pos + size]) == len(data[pos:pos + size])
        pos += size
    return parser.result, data[pos:]


Parse = Callable[[bytes], tuple[ProxyResult | None, bytes]]
PARSERS = [parse_at_once, parse_as_a_socket_would]


@pytest.mark.parametrize("parse", PARSERS)
class TestVersion1:
    def test_tcp4_gives_both_addresses_and_leaves_the_rest(self, parse: Parse) -> None:
        """The client address and the one it connected to; the SMTP bytes after stay unread."""
        assert parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n") == (
            V4, b"EHLO x\r\n")

    def test_tcp6(self, parse: Parse) -> None:
        """IPv6 addresses in their text form."""
        assert parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 993\r\n") == (V6, b"")

    def test_unknown_means_use_the_connection(self, parse: Parse) -> None:
        """UNKNOWN, with or without addresses after it: the real endpoints stand."""
        assert parse(b"PROXY UNKNOWN\r\n") == (ProxyLocal(), b"")
        assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX") == (ProxyLocal(), b"X")

    @pytest.mark.parametrize("line", [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",  # a field missing
        b"PROXY TCP4 192.0.2.7  198.51.100.1 40000 25\r\n",  # double space
        b"PROXY TCP4 2001:db8::7 198.51.100.1 40000 25\r\n",  # IPv6 under TCP4
        b"PROXY TCP6 192.0.2.7 2001:db8::1 40000 25\r\n",  # IPv4 under TCP6
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",  # port out of range
        b"PROXY TCP4 192.0.2.7 198.51.100.1 040000 25\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n",
        b"PROXY TCP4 192.0.2.07 198.51.100.1 1 25\r\n",  # octal-looking octet
        b"PROXY UDP4 192.0.2.7 198.51.100.1 40000 25\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\n",  # bare LF
        b"PROXY TCP4 192.0.2.7\r198.51.100.1 40000 25\r\n",  # bare CR
        b"PROXY TCP4 \xff.0.2.7 198.51.100.1 40000 25\r\n",  # not ASCII
    ])
    def test_malformed_lines_are_errors(self, parse: Parse, line: bytes) -> None:
        """Anything but the exact grammar is refused, never guessed at."""
        result, _ = parse(line)
        assert isinstance(result, ProxyError)

    def test_a_line_without_end_is_refused_at_the_bound(self, parse: Parse) -> None:
        """No CRLF within 107 bytes: an error, having read no more than the bound."""
        result, rest = parse(b"PROXY UNKNOWN " + b"x" * 200)
        assert isinstance(result, ProxyError) and "107" in result.reason
        assert len(rest) == 214 - V1_MAX_LENGTH


@pytest.mark.parametrize("parse", PARSERS)
class TestVersion2:
    def test_ipv4_proxy_command(self, parse: Parse) -> None:
        """PROXY over TCP/IPv4: addresses and ports from the block; what follows stays."""
        assert parse(v2() + b"\x16\x03\x01") == (V4, b"\x16\x03\x01")

    def test_ipv6(self, parse: Parse) -> None:
        """PROXY over TCP/IPv6."""
        payload = (V6.source.packed + V6.destination.packed
                   + struct.pack("!HH", V6.source_port, V6.destination_port))
        assert parse(v2(family=0x2, payload=payload)) == (V6, b"")

    def test_tlvs_after_the_addresses_are_skipped(self, parse: Parse) -> None:
        """Type-length-value extensions (here ALPN and an authority) are read and ignored."""
        base = v2()[16:]
        tlvs = b"\x01\x00\x02h2" + b"\x02\x00\x0bexample.com"
        assert parse(v2(payload=base + tlvs) + b"EHLO") == (V4, b"EHLO")

    def test_local_command_uses_the_connection(self, parse: Parse) -> None:
        """LOCAL (the proxy's health check) carries no client: the real endpoints stand."""
        assert parse(v2(command=0x0, family=0x0, transport=0x0, payload=b"")) == (
            ProxyLocal(), b"")
        assert parse(v2(command=0x0)) == (ProxyLocal(), b"")  # its addresses are ignored

    def test_unspec_and_unix_families_use_the_connection(self, parse: Parse) -> None:
        """No IP address to take: the connection's own endpoints stand."""
        assert parse(v2(family=0x0, transport=0x0, payload=b""))[0] == ProxyLocal()
        assert parse(v2(family=0x3, payload=b"\x00" * 216))[0] == ProxyLocal()

    @pytest.mark.parametrize(("kwargs", "reason"), [
        ({"version": 1}, "version"),
        ({"command": 0x2}, "command"),
        ({"transport": 0x2}, "transport"),  # DGRAM on a stream listener
        ({"payload": b"\x00" * 8}, "shorter"),  # IPv4 needs 12 bytes
        ({"family": 0x2}, "shorter"),  # an IPv4-sized block for IPv6
    ])
    def test_malformed_headers_are_errors(self, parse: Parse, kwargs: dict[str, int],
                                          reason: str) -> None:
        """Wrong version, command, transport or a short address block."""
        result, _ = parse(v2(**kwargs))
        assert isinstance(result, ProxyError) and reason in result.reason

    def test_an_oversized_header_is_refused_before_its_body(self, parse: Parse) -> None:
        """A length past the bound is an error after 16 bytes, without reading the rest."""
        header = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_PAYLOAD + 1)
        result, rest = parse(header + b"\x00" * 100)
        assert isinstance(result, ProxyError) and len(rest) == 100


class TestNotAHeader:
    @pytest.mark.parametrize("data", [b"EHLO client.example\r\n", b"\x16\x03\x01\x02\x00",
                                      b"PROXY", b"\r\n\r\n\x00\r\nQUIT\r"])
    def test_other_protocols_are_refused(self, data: bytes) -> None:
        """SMTP, a TLS ClientHello or a near-miss signature: an error, or (for a prefix of a
        header) still waiting for more."""
        parser = ProxyHeaderParser()
        parser.feed(data + b"\x00" * 16)
        assert isinstance(parser.result, ProxyError)

    def test_waits_for_more_while_the_bytes_could_still_be_a_header(self) -> None:
        """A prefix of either signature is not yet a verdict."""
        for prefix in (b"PROX", V2_SIGNATURE[:7], b"PROXY TCP4 1.2"):
            parser = ProxyHeaderParser()
            assert parser.feed(prefix) == len(prefix)
            assert parser.result is None and parser.need() > 0

    def test_need_is_zero_once_done(self) -> None:
        """Nothing more is asked for after the verdict."""
        parser = ProxyHeaderParser()
        parser.feed(b"PROXY UNKNOWN\r\n")
        assert parser.need() == 0 and parser.feed(b"more") == 0
