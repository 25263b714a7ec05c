"""Certificates for the hostname from an ACME CA (RFC 8555), renewed before expiry.

The protocol (JWS, nonces, accounts, orders, polling) is the acme library's,
certbot's own client. This module decides when to renew, answers the
challenge through our own listeners (HTTP-01 on ``[listen] http``,
TLS-ALPN-01 on ``[listen] acme_tls``), keeps the account key and the
certificate under ``data_dir/acme``, and hands each new pair to ``install``,
the same swap SIGHUP uses. A failure is one log line and a retry after a
doubling wait; it never stops the server, which keeps serving the pair it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from postwarden import __version__
from postwarden.config import AcmeConfig, Config
from postwarden.log import kv
from postwarden.servers.certificates import Challenges, Issued, stored_pair

log = logging.getLogger("postwarden.acme")
T = TypeVar("T")
REQUEST_TIMEOUT = 30  # one HTTPS request to the CA; the whole issuance has its own deadline


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) answer to a TLS-ALPN-01 challenge; acme 4 dropped its own class."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737 as a challenge type of the library, so it parses like HTTP-01."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: JWK, **unused_kwargs: Any) -> str:
        return self.key_authorization(account_key)


def seconds_until_due(cfg: Config, now: datetime.datetime) -> float:
    """How long until renewal is due: 0 with no certificate, one that does not name the
    hostname, or one expiring within ``renew_before_days``."""
    try:
        leaf = x509.load_pem_x509_certificates(stored_pair(cfg.data_dir).cert.read_bytes())[0]
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return 0.0
    if cfg.hostname.lower() not in (n.lower() for n in names.value.get_values_for_type(
            x509.DNSName)):
        return 0.0
    due = leaf.not_valid_after_utc - datetime.timedelta(days=cfg.acme.renew_before_days)
    return max(0.0, (due - now).total_seconds())


class Issuer:
    """One certificate order, start to finish; blocking (run it off the event loop)."""

    def __init__(self, cfg: Config, challenges_: Challenges) -> None:
        self.hostname = cfg.hostname
        self.acme: AcmeConfig = cfg.acme
        self.folder = cfg.data_dir / "acme"
        self.challenges = challenges_

    def issue(self) -> Issued:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        account_key = self._account_key()
        acme = self._client(account_key)
        private = ec.generate_private_key(ec.SECP256R1())
        key_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(key_pem, [self.hostname]))
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.acme.timeout_seconds)
        published: list[Callable[[], None]] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA remembers a recent validation
                challb = self._chosen(authz)
                response, validation = challb.chall.response_and_validation(account_key)
                published.append(self._publish(challb.chall, validation))
                acme.answer_challenge(challb, response)
            done = acme.poll_and_finalize(order, deadline)
        finally:
            for withdraw in published:
                withdraw()
        return self._store(key_pem, done.fullchain_pem.encode("ascii"))

    def _client(self, account_key: JWKEC) -> client.ClientV2:
        net = client.ClientNetwork(account_key, alg=ES256, timeout=REQUEST_TIMEOUT,
                                   user_agent=f"postwarden/{__version__}")
        if self.acme.ca_bundle is not None:
            # requests' `verify` takes a CA bundle path; the attribute is annotated bool.
            net.verify_ssl = str(self.acme.ca_bundle)  # type: ignore[assignment]
        acme = client.ClientV2(client.ClientV2.get_directory(self.acme.directory, net), net)
        contact = (f"mailto:{self.acme.contact}",) if self.acme.contact else ()
        try:
            acme.new_account(messages.NewRegistration(contact=contact,
                                                      terms_of_service_agreed=True))
        except errors.ConflictError as known:  # this key has an account: use it (RFC 8555 §7.3.1)
            net.account = messages.RegistrationResource(uri=known.location,
                                                        body=messages.Registration())
        return acme

    def _account_key(self) -> JWKEC:
        path = self.folder / "account-key.json"
        with contextlib.suppress(FileNotFoundError):
            key = JWK.json_loads(path.read_text(encoding="ascii"))
            if isinstance(key, JWKEC):
                return key
        key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        _write_private(path, key.json_dumps().encode("ascii"))
        return key

    def _chosen(self, authz: messages.AuthorizationResource) -> messages.ChallengeBody:
        for challb in authz.body.challenges:
            if challb.chall.typ == self.acme.challenge:
                return challb
        offered = ", ".join(c.chall.typ for c in authz.body.challenges)
        raise errors.Error(f"the CA does not offer {self.acme.challenge} (offers {offered})")

    def _publish(self, chall: challenges.Challenge, validation: str) -> Callable[[], None]:
        """Make a listener answer ``chall``; returns the call that stops it."""
        match chall:
            case challenges.HTTP01():
                token = chall.encode("token")
                self.challenges.http[token] = validation

                def withdraw() -> None:
                    self.challenges.http.pop(token, None)
                return withdraw
            case TLSALPN01():
                self.challenges.alpn.publish(self.hostname, validation)
                return lambda: self.challenges.alpn.withdraw(self.hostname)
        raise errors.Error(f"cannot answer {chall.typ}")

    def _store(self, key_pem: bytes, fullchain: bytes) -> Issued:
        leaf = x509.load_pem_x509_certificates(fullchain)[0]
        pair = stored_pair(self.folder.parent)
        _write_private(pair.cert, key_pem + fullchain)
        serial = format(leaf.serial_number, "X")
        return Issued(pair, serial.zfill(len(serial) + len(serial) % 2), leaf.not_valid_after_utc)


def _write_private(path: Path, data: bytes) -> None:
    """Owner-only, replaced in one rename so no reader sees half a file."""
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def reason(exc: BaseException) -> str:
    """One line saying why an attempt failed, for the log."""
    match exc:
        case errors.ValidationError(failed_authzrs=failed):
            details = [c.error for a in failed for c in a.body.challenges if c.error is not None]
            text = "validation failed: " + "; ".join(
                f"{e.typ.rsplit(':', 1)[-1]}: {e.detail}" for e in details)
        case messages.Error(typ=typ, detail=detail):
            text = f"{typ.rsplit(':', 1)[-1]}: {detail}"
        case errors.TimeoutError():
            text = "the CA did not finish within acme.timeout_seconds"
        case requests.ConnectionError():
            text = f"cannot reach the CA: {exc}"
        case _:
            text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


class Renewer:
    """The background task: issue when due, retry failures with a doubling wait."""

    def __init__(self, cfg: Config, install: Callable[[Issued], None],
                 challenges_: Challenges) -> None:
        self.cfg = cfg
        self.install = install
        self.challenges = challenges_  # the listeners' answers, which Issuer publishes
        self.failures = 0
        self._wake = asyncio.Event()

    def configure(self, cfg: Config) -> None:
        """SIGHUP: the new [acme] settings, looked at now."""
        self.cfg = cfg
        self._wake.set()

    async def run(self) -> None:
        while True:  # one attempt or one wait per round, until cancelled at shutdown
            self._wake.clear()  # a SIGHUP during the round makes the next one start at once
            wait = await self._round()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _round(self) -> float:
        """Renew if due; returns how long to wait before the next look."""
        acme = self.cfg.acme
        if not acme.enabled:
            return acme.check_interval_seconds
        due_in = seconds_until_due(self.cfg, datetime.datetime.now(datetime.UTC))
        if due_in > 0:
            return min(due_in, acme.check_interval_seconds)
        log.info(kv("acme-renewing", hostname=self.cfg.hostname, challenge=acme.challenge))
        try:
            issued = await in_daemon_thread(Issuer(self.cfg, self.challenges).issue)
            self.install(issued)
        except Exception as exc:  # any failure: logged, retried, the server goes on
            self.failures += 1
            wait = min(acme.retry_seconds << min(self.failures - 1, 30),
                       acme.retry_max_seconds)
            log.warning(kv("acme-failed", reason=reason(exc), retry_in=f"{wait}s"))
            return wait
        self.failures = 0
        log.info(kv("acme-issued", hostname=self.cfg.hostname, serial=issued.serial,
                    not_after=issued.not_after.isoformat()))
        return acme.check_interval_seconds


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """``work()`` in a daemon thread: unlike the default executor, a shutdown never waits
    for an order still polling the CA (up to ``acme.timeout_seconds``)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def body() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the awaiting task, as to_thread does
            captured = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(captured))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=body, name="acme", daemon=True).start()
    return await future
