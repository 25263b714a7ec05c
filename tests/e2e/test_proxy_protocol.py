"""PROXY protocol v1/v2 from a load balancer, over real sockets: the real client decides."""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postwarden.mail import reply as R
from postwarden.protocol.proxy import V2_SIGNATURE
from serverproc import PASSWORD, ServerProcess

BALANCER = "127.0.5.1"  # in proxy_from
OUTSIDER = "127.0.5.2"  # not in proxy_from
TRUSTED_CLIENT = "192.0.2.9"  # in trusted_networks: may relay
STRANGER = "203.0.113.5"
EXTERNAL = "someone@remote.example"
USER = "alice@example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("proxy")
    srv = ServerProcess(root, listen={"proxy_from": [f"{BALANCER}/32"]},
                        relay={"trusted_networks": ["192.0.2.0/24"]},
                        limits={"max_connections_per_ip": 2, "handshake_timeout_seconds": 5})
    srv.add_user(USER)
    srv.start()
    yield srv
    srv.stop()


def v1(client: str, port: int = 40000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    local = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {local} {port} 25\r\n".encode()


def v2(client: str, port: int = 40000) -> bytes:
    source = ipaddress.ip_address(client)
    local = ipaddress.ip_address("::1" if source.version == 6 else "127.0.0.1")
    family = 0x21 if source.version == 6 else 0x11
    block = source.packed + local.packed + struct.pack("!HH", port, 25)
    tlv = b"\x04\x00\x03abc"  # a NOOP TLV, to be skipped
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block + tlv)) + block + tlv


class ProxiedSMTP(smtplib.SMTP):
    """smtplib behind a balancer: the PROXY header goes out before the banner is read."""

    def __init__(self, header: bytes, source: str, addr: tuple[str, int]) -> None:
        self.header, self.source = header, source
        super().__init__(*addr, timeout=30)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout, source_address=(self.source, 0))
        sock.sendall(self.header)
        return sock


def relay_reply(client: smtplib.SMTP) -> tuple[int, bytes]:
    client.ehlo("client.test")
    assert client.mail("x@sender.example")[0] == 250
    return client.rcpt(EXTERNAL)


class TestRealClientDecides:
    @pytest.mark.parametrize("header", [v1, v2])
    def test_claimed_trusted_client_may_relay(self, server: ServerProcess,
                                            header: Callable[[str], bytes]) -> None:
        """From a proxy_from address, the relay decision is made for the client the header
        names: a trusted network may relay, and the log shows that address."""
        with ProxiedSMTP(header(TRUSTED_CLIENT), BALANCER, server.addr("smtp")) as c:
            assert relay_reply(c)[0] == 250
        server.wait_for_log("smtp transaction", f"ip={TRUSTED_CLIENT}", "trusted")

    @pytest.mark.parametrize("header", [v1, v2])
    def test_claimed_stranger_is_refused(self, server: ServerProcess,
                                         header: Callable[[str], bytes]) -> None:
        """The balancer's own loopback address does not make a stranger local: 550 5.7.1."""
        with ProxiedSMTP(header(STRANGER), BALANCER, server.addr("smtp")) as c:
            code, text = relay_reply(c)
        assert (code, text[:5]) == (550, b"5.7.1")

    def test_header_from_elsewhere_is_just_a_bad_command(self, server: ServerProcess) -> None:
        """From outside proxy_from, a PROXY line is an unknown command and the connection's
        own address decides."""
        with ProxiedSMTP(v1(TRUSTED_CLIENT), OUTSIDER, server.addr("smtp")) as c:
            assert c.getreply()[0] == 500  # the reply to the PROXY line
            code, _ = relay_reply(c)
        assert code == 550

    def test_limits_count_the_real_client(self, server: ServerProcess) -> None:
        """max_connections_per_ip (2) applies to the named client, not to the balancer."""
        held = [ProxiedSMTP(v2("198.51.100.7"), BALANCER, server.addr("smtp")) for _ in range(2)]
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            ProxiedSMTP(v2("198.51.100.7"), BALANCER, server.addr("smtp"))
        assert refused.value.smtp_code == R.TOO_MANY_CONNECTIONS.code
        with ProxiedSMTP(v2("198.51.100.8"), BALANCER, server.addr("smtp")) as other:
            assert other.noop()[0] == 250
        for client in held:
            client.quit()

    def test_ipv6_client_over_implicit_tls(self, server: ServerProcess) -> None:
        """A v2 header naming an IPv6 client, then the TLS handshake, on pop3s: the login is
        logged with the client's address."""
        ctx = ssl.create_default_context(cafile=str(server.cert))
        raw = socket.create_connection(server.addr("pop3s"), timeout=30,
                                       source_address=(BALANCER, 0))
        raw.sendall(v2("2001:db8::42"))
        with ctx.wrap_socket(raw, server_hostname="localhost") as conn:
            reader = conn.makefile("rb")
            assert reader.readline().startswith(b"+OK")
            conn.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\nQUIT\r\n".encode())
            assert all(reader.readline().startswith(b"+OK") for _ in range(3))
        server.wait_for_log("pop3 login", "ip=2001:db8::42", "result=ok")


class TestBadHeaders:
    @pytest.mark.parametrize("garbage", [
        b"EHLO client.test\r\n",
        b"PROXY TCP4 999.0.2.9 127.0.0.1 1 25\r\n",
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # longer than any balancer sends
    ])
    def test_a_bad_header_from_the_balancer_closes_the_connection(
        self, server: ServerProcess, garbage: bytes,
    ) -> None:
        """A proxy_from client that sends no valid header gets no session (the spec: never
        guess), and the server logs why."""
        with socket.create_connection(server.addr("smtp"), timeout=30,
                                      source_address=(BALANCER, 0)) as sock:
            sock.sendall(garbage)
            try:
                received = sock.makefile("rb").read()
            except ConnectionResetError:  # closed with some of our bytes unread
                received = b""
            assert received == b""  # closed without a banner
        server.wait_for_log("proxy refused", f"via={BALANCER}")

    def test_v2_local_keeps_the_balancer_address(self, server: ServerProcess) -> None:
        """LOCAL (a health check) carries no client: the balancer's own address is used."""
        local = V2_SIGNATURE + b"\x20\x00\x00\x00"
        with ProxiedSMTP(local, BALANCER, server.addr("smtp")) as c:
            assert c.noop()[0] == 250
        server.wait_for_log("proxy", f"ip={BALANCER}", f"via={BALANCER}")
