"""SIGHUP on a real server process: the config is read again, never fatal."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from delivery.smtppeers import Peer
from serverproc import DOMAIN, PASSWORD, ServerProcess

CLIENT = "127.0.0.2"
EXTERNAL = "someone@remote.example"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path, listen={"submission": [], "submissions": [], "pop3": [],
                                          "pop3s": []},
                        routes=[{"domain": "remote.example", "to": "127.0.0.1:9"}])
    srv.start()
    yield srv
    srv.stop()


def relay_reply(server: ServerProcess) -> int:
    host, port = server.addr("smtp")
    with smtplib.SMTP(host, port, source_address=(CLIENT, 0), timeout=30) as client:
        client.ehlo("client.test")
        client.mail("x@sender.example")
        return client.rcpt(EXTERNAL)[0]


def hangup(server: ServerProcess, count: int, *words: str) -> str:
    """Send SIGHUP and wait for the ``count``-th log line with ``words``."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    return server.wait_for_log_count(count, *words)[-1]


def test_relay_rule_change_applies_to_the_next_session(server: ServerProcess) -> None:
    assert relay_reply(server) == 550
    text = server.config_path.read_text(encoding="utf-8")
    trusted = f'[relay]\ntrusted_networks = ["{CLIENT}/32"]'
    server.config_path.write_text(text.replace("[relay]", trusted), encoding="utf-8")
    hangup(server, 1, "reloaded")
    assert relay_reply(server) == 250


def test_relay_limit_and_domain_changes_apply_to_the_next_session(
        server: ServerProcess) -> None:
    """One SIGHUP: a trusted network, a recipient limit and a new local domain, all live."""
    host, port = server.addr("smtp")
    recipients = [EXTERNAL, "postmaster@new.example"]

    def replies() -> list[int]:
        with smtplib.SMTP(host, port, source_address=(CLIENT, 0), timeout=30) as client:
            client.ehlo("client.test")
            client.mail("x@sender.example")
            return [client.rcpt(rcpt)[0] for rcpt in recipients]

    assert replies() == [550, 550]
    with smtplib.SMTP(host, port, source_address=(CLIENT, 0), timeout=30) as running:
        running.ehlo("client.test")
        added = server.cli("domain", "add", "new.example")
        assert added.returncode == 0, added.stderr
        text = server.config_path.read_text(encoding="utf-8")
        text = text.replace("[relay]", f'[relay]\ntrusted_networks = ["{CLIENT}/32"]')
        text = text.replace("[limits]", "[limits]\nmax_recipients = 1")
        server.config_path.write_text(text, encoding="utf-8")
        line = hangup(server, 1, "reloaded")
        assert "relay" in line and "limits" in line
        running.mail("x@sender.example")  # relay rules: from the next decision on;
        assert [running.rcpt(rcpt)[0] for rcpt in recipients] == [250, 250]  # limit: kept
    assert replies() == [250, 452]  # relayed now; the second is over the new limit of 1
    recipients.reverse()
    assert replies() == [250, 452]  # the new domain is ours


def test_bad_config_keeps_the_old_one_with_an_error(server: ServerProcess) -> None:
    good = server.config_path.read_text(encoding="utf-8")
    server.config_path.write_text(good.replace("[relay]", '[relay]\ntrusted_networks = ["nope"]'),
                                  encoding="utf-8")
    line = hangup(server, 1, "reload-failed")
    assert "relay.trusted_networks[0]" in line
    assert relay_reply(server) == 550  # alive, with the old rules
    server.config_path.write_text(good.replace('"var/tls/key.pem"', '"var/tls/missing.pem"'),
                                  encoding="utf-8")
    assert "tls.key" in hangup(server, 2, "reload-failed")
    assert relay_reply(server) == 550


def test_listener_change_is_reported_as_needing_a_restart(server: ServerProcess) -> None:
    text = server.config_path.read_text(encoding="utf-8")
    text = text.replace('pop3 = []', 'pop3 = ["127.0.0.1:0"]')
    server.config_path.write_text(text.replace("[limits]", "[limits]\nauth_workers = 2"),
                                  encoding="utf-8")
    hangup(server, 1, "reloaded")
    assert server.wait_for_log("reload-needs-restart", "setting=listen")
    assert server.wait_for_log("reload-needs-restart", "setting=limits.auth_workers")
    assert relay_reply(server) == 550


async def test_route_change_applies_to_the_next_delivery_attempt(tmp_path: Path) -> None:
    """A message deferred on the old route goes out on the new one after SIGHUP."""
    peer = Peer("remote.example")
    port = await peer.start()
    server = ServerProcess(tmp_path, routes=[{"domain": "remote.example", "to": "127.0.0.1:9"}])
    user = server.add_user(f"ann@{DOMAIN}")
    await asyncio.to_thread(server.start)
    try:
        def submit() -> None:
            with smtplib.SMTP(*server.addr("smtp"), timeout=30) as client:
                client.login(user, PASSWORD)
                client.sendmail(user, [EXTERNAL], b"Subject: routed\r\n\r\nhello\r\n")

        await asyncio.to_thread(submit)
        first = await asyncio.to_thread(server.wait_for_log, "delivery", f"rcpt={EXTERNAL}")
        assert "]:9 failed" in first and "outcome=deferred" in first  # nobody listens on 9
        text = server.config_path.read_text(encoding="utf-8")
        server.config_path.write_text(text.replace("127.0.0.1:9", f"127.0.0.1:{port}"),
                                      encoding="utf-8")
        assert "routes" in await asyncio.to_thread(hangup, server, 1, "reloaded")
        [delivered] = await peer.wait_messages(1, timeout=30)
        assert delivered.recipients == [EXTERNAL] and b"hello" in delivered.data
    finally:
        await asyncio.to_thread(server.stop)  # the peer lives on this loop: keep it running
        await peer.close()


def wait_for_file_line(path: Path, words: str, polls: int = 600) -> bool:
    """Poll a log file (no stderr to follow there) until a line holds ``words``; bounded."""
    for _ in range(polls):
        if path.exists() and words in path.read_text(encoding="utf-8"):
            return True
        time.sleep(0.05)
    return False


def test_hangup_reopens_the_log_file_after_logrotate_moved_it(tmp_path: Path) -> None:
    """logrotate renames the file and sends SIGHUP: later lines go to a new file."""
    server = ServerProcess(tmp_path, log={"file": "var/postwarden.log"})
    log_file = tmp_path / "var/postwarden.log"
    server.start()
    try:
        assert relay_reply(server) == 550
        log_file.rename(tmp_path / "var/postwarden.log.1")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        assert wait_for_file_line(log_file, "reloaded")
        assert relay_reply(server) == 550
    finally:
        server.stop()
    assert "smtp transaction" in (tmp_path / "var/postwarden.log.1").read_text(encoding="utf-8")
    assert "reloaded" in log_file.read_text(encoding="utf-8")
    assert "smtp transaction" in log_file.read_text(encoding="utf-8")
