"""The HTTP listener: Prometheus metrics, health probes, client autoconfiguration, and
ACME HTTP-01 answers under ``/.well-known/acme-challenge/``.

HTTP parsing is h11's (a maintained sans-IO HTTP/1.1 library, the model our
own protocol machines follow), driven here by the same asyncio glue as the
mail listeners; a web framework would bring far more than five fixed
routes need. Each connection carries one request, bounded in every way:
``http_max_header_size`` for the request line and headers (h11 answers
431 past it), ``http_max_body_size`` (413), ``http_timeout_seconds`` for the
whole request (408); methods other than GET and POST get 405, unknown
paths 404, malformed requests 400. The listener comes through the Gate,
so connection limits apply as on every other port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from postwarden.config import Config
from postwarden.log import kv
from postwarden.mail.address import Address, AddressError
from postwarden.metrics import CONTENT_TYPE, Metrics
from postwarden.servers import autoconfig
from postwarden.servers.common import Peer

log = logging.getLogger("postwarden.http")
READ_SIZE = 16 * 1024
TEXT = "text/plain; charset=utf-8"
XML = "application/xml; charset=utf-8"
MOBILECONFIG = "application/x-apple-aspen-config"
THUNDERBIRD_PATHS = frozenset({"/mail/config-v1.1.xml",
                               "/.well-known/autoconfig/mail/config-v1.1.xml"})
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"  # compared lower-cased: Outlook varies
APPLE_PATH = re.compile(r"/apple/(?P<address>[^/]+)\.mobileconfig\Z")
MOBILECONFIG_PATH = "/mobileconfig"  # ?email=
ACME_PREFIX = "/.well-known/acme-challenge/"
OCTETS = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, list[str]]
    body: bytes

    def param(self, *names: str) -> str | None:
        for name in names:
            if values := self.query.get(name):
                return values[0]
        return None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    allow: str = ""  # for 405
    attachment: str = ""  # a file name to download as


def text(status: int, message: str) -> Response:
    return Response(status, message.encode() + b"\n")


class Site:
    """What each path answers. ``ready`` returns None, or why the server is not ready;
    ``refresh`` brings the metrics read at scrape time (the queue) up to date;
    ``ports`` gives the port bound per listener kind, for autoconfiguration;
    ``acme_http01`` the key authorization pending for an HTTP-01 token, if any."""

    def __init__(self, hostname: str, metrics: Metrics,
                 ready: Callable[[], Awaitable[str | None]],
                 refresh: Callable[[], Awaitable[None]],
                 ports: Callable[[], Mapping[str, int]],
                 acme_http01: Callable[[str], str | None] = lambda token: None) -> None:
        self.hostname = hostname
        self.acme_http01 = acme_http01
        self.ports = ports
        self.metrics = metrics
        self.ready = ready
        self.refresh = refresh

    async def answer(self, request: Request) -> Response:
        path, method = request.path, request.method
        allowed = "POST" if path.lower() == AUTODISCOVER_PATH else "GET"
        if method not in ("GET", "POST"):
            return Response(405, b"method not allowed\n", allow=allowed)
        match path:
            case "/metrics" | "/healthz" | "/readyz" if method != "GET":
                return Response(405, b"method not allowed\n", allow="GET")
            case "/metrics":
                await self.refresh()
                return Response(200, self.metrics.exposition(), CONTENT_TYPE)
            case "/healthz":
                return text(200, "ok")
            case "/readyz":
                reason = await self.ready()
                return text(200, "ready") if reason is None else text(503, f"not ready: {reason}")
        if path.startswith(ACME_PREFIX):
            answer = self.acme_http01(path[len(ACME_PREFIX):]) if method == "GET" else None
            if answer is None:
                return text(404, "no such challenge")
            return Response(200, answer.encode("ascii"), OCTETS)  # RFC 8555 §8.3: exactly it
        return self._autoconfig(request)

    @property
    def cfg(self) -> autoconfig.Servers:
        return autoconfig.Servers(self.hostname, self.ports())

    def _autoconfig(self, request: Request) -> Response:
        path = request.path
        apple = APPLE_PATH.match(path)
        if path in THUNDERBIRD_PATHS:
            if request.method != "GET":
                return Response(405, b"method not allowed\n", allow="GET")
            given = request.param("emailaddress", "email")
            if given is None:  # Thunderbird fills in %EMAILADDRESS% itself
                return Response(200, autoconfig.thunderbird(self.cfg, None), XML)
            return self._address_then(given, lambda a: Response(
                200, autoconfig.thunderbird(self.cfg, a), XML))
        if path.lower() == AUTODISCOVER_PATH:
            if request.method != "POST":
                return Response(405, b"method not allowed\n", allow="POST")
            try:
                given = autoconfig.autodiscover_request(request.body)
            except ValueError as exc:
                return text(400, f"bad Autodiscover request: {exc}")
            return self._address_then(given, lambda a: Response(
                200, autoconfig.autodiscover(self.cfg, a), XML))
        if apple is not None or path == MOBILECONFIG_PATH:
            if request.method != "GET":
                return Response(405, b"method not allowed\n", allow="GET")
            given = apple.group("address") if apple else request.param("email", "emailaddress")
            return self._address_then(given, self._profile)
        return text(404, "not found")

    def _profile(self, address: Address) -> Response:
        try:
            body = autoconfig.mobileconfig(self.cfg, address)
        except LookupError as exc:
            return text(404, str(exc))
        return Response(200, body, MOBILECONFIG, attachment="mail.mobileconfig")

    @staticmethod
    def _address_then(given: str | None, build: Callable[[Address], Response]) -> Response:
        if given is None:
            return text(400, "an email address is required")
        try:
            address = autoconfig.parse_email(given)
        except AddressError as exc:
            return text(400, f"bad email address: {exc}")
        return build(address)


class HTTPServer:
    """Reads one bounded request per connection, answers it from the Site, closes."""

    def __init__(self, site: Site, cfg: Config) -> None:
        self.site = site
        self.limits = cfg.limits

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: Peer) -> None:
        conn = h11.Connection(h11.SERVER,
                              max_incomplete_event_size=self.limits.http_max_header_size)
        try:
            async with asyncio.timeout(self.limits.http_timeout_seconds):
                response = await self._respond(conn, reader)
        except TimeoutError:
            response = text(408, "request timeout")
        except (ConnectionError, OSError):
            return
        if response is None:
            return
        log.info(kv("http", ip=peer.client_ip, status=response.status))
        with contextlib.suppress(ConnectionError, OSError, h11.LocalProtocolError):
            writer.write(self._encode(conn, response))
            async with asyncio.timeout(self.limits.http_timeout_seconds):
                await writer.drain()

    async def _respond(self, conn: h11.Connection, reader: asyncio.StreamReader,
                       ) -> Response | None:
        try:
            request = await self._read(conn, reader)
        except h11.RemoteProtocolError as exc:
            return text(exc.error_status_hint, f"bad request: {exc}")
        if request is None:
            return None
        if isinstance(request, Response):
            return request
        return await self.site.answer(request)

    async def _read(self, conn: h11.Connection, reader: asyncio.StreamReader,
                    ) -> Request | Response | None:
        """The whole request; a Response when it is refused on the way; None if it vanished."""
        head: h11.Request | None = None
        body = bytearray()
        limit = self.limits.http_max_body_size
        fed = 0
        while True:  # bounded: every round reads or ends, under the request's timeout
            event = conn.next_event()
            match event:
                case h11.Request():
                    head = event
                    # h11 bounds only a head still incomplete; one read can hold a whole one.
                    if fed - len(conn.trailing_data[0]) > self.limits.http_max_header_size:
                        return text(431, "request header fields too large")
                    length = dict(event.headers).get(b"content-length", b"0")
                    if int(length) > limit:  # h11 has checked it is a number
                        return text(413, "request body too large")
                case h11.Data(data=data):
                    body += data
                    if len(body) > limit:
                        return text(413, "request body too large")
                case h11.EndOfMessage():
                    assert head is not None
                    target = urlsplit(head.target.decode("ascii", "replace"))
                    return Request(head.method.decode("ascii", "replace").upper(),
                                   unquote(target.path), parse_qs(target.query), bytes(body))
                case h11.ConnectionClosed():
                    return None
                case _ if event is h11.NEED_DATA:
                    data = await reader.read(READ_SIZE)
                    fed += len(data)
                    conn.receive_data(data)

    @staticmethod
    def _encode(conn: h11.Connection, response: Response) -> bytes:
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))),
                   ("Connection", "close"),
                   ("Cache-Control", "no-store")]
        if response.allow:
            headers.append(("Allow", response.allow))
        if response.attachment:
            headers.append(("Content-Disposition",
                            f'attachment; filename="{response.attachment}"'))
        return b"".join((
            conn.send(h11.Response(status_code=response.status, headers=headers)) or b"",
            conn.send(h11.Data(data=response.body)) or b"",
            conn.send(h11.EndOfMessage()) or b"",
        ))
