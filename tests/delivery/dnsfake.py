"""A real DNS server on loopback (UDP and TCP), answering from a small table.

Built with dnspython's message and rrset APIs so the resolver under test
talks real DNS over real sockets: MX, A, AAAA and null-MX answers, NXDOMAIN
for names not in the table and an empty answer (NoAnswer) for missing types.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = dict[tuple[str, str], list[str]]


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if (reply := self.server.answer(data)) is not None:
            self.transport.sendto(reply, addr)


class DNSServer:
    """``records`` maps (name, type) to rdata texts, e.g. ("a.test", "MX"): ["10 mx.a.test."].

    A name with a ("name", "SERVFAIL") entry is answered with SERVFAIL; one with a
    ("name", "TIMEOUT") entry is never answered (the asker times out).
    """

    def __init__(self, records: Records) -> None:
        self.records = {(n.lower().rstrip("."), t.upper()): v for (n, t), v in records.items()}
        self.names = {n for n, _ in self.records}
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def answer(self, wire: bytes) -> bytes | None:
        """The response, or None for a name that never gets one."""
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if (name, "TIMEOUT") in self.records:
            return None
        if (name, "SERVFAIL") in self.records:  # a broken zone: the server cannot answer
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif rdatas := self.records.get((name, rdtype)):
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, rdtype, rdatas)
            )
        wire_out: bytes = response.to_wire()
        return wire_out

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.answer(await reader.readexactly(length))
                if reply is None:
                    continue
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        writer.close()

    async def start(self, port: int = 0) -> int:
        """Bind UDP and TCP on the same port (a free one unless given); returns the port."""
        loop = asyncio.get_running_loop()
        wanted = port
        for _ in range(20 if wanted == 0 else 1):  # bounded: a free UDP port whose TCP twin is free
            transport, _proto = await loop.create_datagram_endpoint(  # a new port each round
                lambda: _UDP(self), local_addr=("127.0.0.1", wanted), family=socket.AF_INET
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, "127.0.0.1", port)
            except OSError:
                transport.close()
                continue
            self._udp = transport
            self.port = port
            return port
        raise RuntimeError("no free port pair for the DNS server")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


class ThreadedDNS:
    """A DNSServer on an event loop in a daemon thread, for synchronous tests and benches."""

    def __init__(self, records: Records) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = DNSServer(records)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
