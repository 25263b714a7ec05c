"""What every listener shares: connection limits, peer facts, and login checks."""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from postwarden.config import AuthConfig, IPAddress
from postwarden.log import kv
from postwarden.policy.passwords import verify_password
from postwarden.policy.relay import normalise_ip
from postwarden.policy.throttle import AuthThrottle
from postwarden.servers.hashing import HashPool, HashPoolBusy
from postwarden.storage.boundary import AsyncDirectory
from postwarden.storage.interfaces import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger("postwarden.auth")


class PeerDeadline:
    """Bounds how long a session waits on its peer, with one timer per connection.

    ``asyncio.timeout()`` around every read and drain creates, schedules and
    cancels a timer each time: py-spy put that at a tenth of the event loop's
    time under smtp-source load. Here a wait only stores its deadline; the one
    timer is re-armed when it fires early, or when a wait needs it sooner.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "PeerDeadline belongs to a session task"
        self._task = task
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def wait(self, awaitable: Awaitable[T], seconds: float) -> T:
        """Await the peer; TimeoutError once ``seconds`` pass."""
        self._deadline = self._loop.time() + seconds
        if self._timer is None or self._timer.when() > self._deadline:
            self._arm()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._expired and self._task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._deadline = math.inf
            self._expired = False

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._deadline == math.inf:
            return  # not waiting now: the next wait arms the timer again
        if self._loop.time() < self._deadline:
            self._arm()
        else:
            self._expired = True
            self._task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress:
    """Parsing is a measurable part of a short connection, and clients come back."""
    return normalise_ip(ipaddress.ip_address(text))


@dataclass(frozen=True, slots=True)
class Peer:
    """Both ends of a connection, as the policy sees them."""

    client_ip: IPAddress
    client_port: int
    local_ip: IPAddress
    local_port: int

    @classmethod
    def of(cls, writer: asyncio.StreamWriter) -> Peer:
        remote = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        local = writer.get_extra_info("sockname") or ("0.0.0.0", 0)
        return cls(_parse_ip(remote[0]), int(remote[1]), _parse_ip(local[0]), int(local[1]))

    @property
    def is_loopback(self) -> bool:
        return self.client_ip.is_loopback


def peer_of_socket(sock: socket.socket) -> Peer:
    """The peer of an accepted socket (OSError if the client has already gone)."""
    remote, local = sock.getpeername(), sock.getsockname()
    return Peer(_parse_ip(remote[0]), int(remote[1]), _parse_ip(local[0]), int(local[1]))


class ConnectionLimiter:
    """``max_connections`` in total, a budget per service, and ``max_connections_per_ip``.

    The per-service budgets keep a flood on one port (the MX, say) from
    taking the slots that submission and POP3 users need.
    """

    def __init__(self, total: int, per_ip: int, per_service: Mapping[str, int]) -> None:
        self.total = total
        self.per_ip = per_ip
        self.per_service = dict(per_service)
        self._by_ip: Counter[str] = Counter()
        self._by_service: Counter[str] = Counter()
        self._count = 0

    def resize(self, total: int, per_ip: int, per_service: Mapping[str, int]) -> None:
        """SIGHUP: new limits for the next admission; open connections are not cut."""
        self.total, self.per_ip, self.per_service = total, per_ip, dict(per_service)

    def try_acquire(self, service: str, ip: str) -> bool:
        if (self._count >= self.total or self._by_ip[ip] >= self.per_ip
                or self._by_service[service] >= self.per_service.get(service, self.total)):
            return False
        self._count += 1
        self._by_ip[ip] += 1
        self._by_service[service] += 1
        return True

    def release(self, service: str, ip: str) -> None:
        self._count -= 1
        self._by_service[service] -= 1
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]

    @property
    def count(self) -> int:
        return self._count


def plaintext_auth_allowed(auth: AuthConfig, peer: Peer, tls_active: bool) -> bool:
    """``[auth] plaintext_without_tls``: may a password cross without TLS?"""
    if tls_active:
        return True
    match auth.plaintext_without_tls:
        case "always":
            return True
        case "loopback":
            return peer.is_loopback
        case _:
            return False


class LoginResult(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    THROTTLED = "throttled"
    BUSY = "busy"  # no password check could start in time (or no store): try again later


class Authenticator:
    """Checks user/password for SMTP AUTH, POP3 and IMAP alike.

    The argon2 verification runs in a small pool of its own (``HashPool``) so
    a login never stalls the other connections and a flood of logins cannot
    queue ahead of a client with a clean record; unknown users cost the same
    time as wrong passwords, and failures are counted per client IP and per
    account in the store, so every process and node sharing it sees them.

    A verified login is remembered (as Dovecot's auth_cache): a keyed hash
    of the password with the stored hash it matched, so a mail client that
    logs in every few minutes does not pay argon2 each time. The entry only
    counts while the account's stored hash is the same one: a password
    change (or removal) makes it worthless at once. The key lives in memory
    only, so the cache reveals nothing if read.
    """

    def __init__(self, directory: AsyncDirectory, throttle: AuthThrottle,
                 hashes: HashPool | None = None, cache_entries: int = 10000) -> None:
        self.directory = directory
        self.throttle = throttle
        self.hashes = hashes or HashPool(workers=1, queue_timeout=5.0)
        self.cache_entries = cache_entries
        self._key = os.urandom(32)
        self._verified: dict[str, tuple[bytes, str]] = {}  # user -> (keyed digest, stored hash)

    async def login_as(self, ip: str, authzid: str, username: str, password: str
                       ) -> tuple[LoginResult, str]:
        """A SASL login: the authorization identity, if given, must be the user itself
        (no logging in as somebody else)."""
        wanted = authzid.strip().lower()
        if wanted and wanted != username.strip().lower():
            return LoginResult.FAILED, ""
        return await self.login(ip, username, password)

    async def login(self, ip: str, username: str, password: str) -> tuple[LoginResult, str]:
        """Returns the result and the canonical account name (lower-case key).

        With the store unreachable the answer is BUSY (try again later), not
        a failure: the password was never checked.
        """
        try:
            return await self._login(ip, username, password)
        except StoreUnavailable as exc:
            log.warning(kv("login-unavailable", ip=ip, error=str(exc)))
            return LoginResult.BUSY, ""

    async def _login(self, ip: str, username: str, password: str) -> tuple[LoginResult, str]:
        user = username.strip().lower()
        now = time.time()  # wall time: failures are shared with other processes and nodes
        failed = await self.directory.login_failures(ip, user, self.throttle.since(now))
        if self.throttle.is_blocked(failed.by_ip, failed.by_account, ip, user, now):
            return LoginResult.THROTTLED, ""
        delay = self.throttle.penalty(failed.by_ip, now)
        if delay:
            await asyncio.sleep(delay)
        account = await self.directory.get_account(user) if "@" in user else None
        stored = account.password_hash if account else None
        digest = hmac.new(self._key, password.encode("utf-8", "surrogatepass"),
                          hashlib.sha256).digest()
        cached = self._verified.get(user)
        if (cached is not None and stored is not None and cached[1] == stored
                and hmac.compare_digest(cached[0], digest)):
            ok = True
        else:
            self._verified.pop(user, None)
            try:
                ok = await self.hashes.run(self.throttle.priority(failed.by_ip, ip, now),
                                           verify_password, stored, password)
            except HashPoolBusy:
                return LoginResult.BUSY, ""
            if ok and stored is not None:
                if len(self._verified) >= self.cache_entries:
                    del self._verified[next(iter(self._verified))]  # the oldest
                self._verified[user] = (digest, stored)
        if ok and account is not None:
            self.throttle.record_success(ip, user, time.time())
            if failed.by_ip or failed.by_account:  # else there is nothing to forget
                await self.directory.forget_login_failures(ip, user)
            return LoginResult.OK, account.address
        self.throttle.record_failure(time.time())
        await self.directory.record_login_failure(ip, user, time.time())
        return LoginResult.FAILED, ""

    def close(self) -> None:
        self.hashes.close()
