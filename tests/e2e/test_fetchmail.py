"""fetchmail (Debian's) pulls a user's mail over POP3 with STLS, as a real client would."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from servers.pop3_fixtures import HOSTNAME, PASSWORD, USER, POP3Harness, pop3

__all__ = ["pop3"]  # the fixture, imported explicitly

FETCHMAIL = shutil.which("fetchmail")
pytestmark = pytest.mark.skipif(
    FETCHMAIL is None, reason="install fetchmail (apt-get install fetchmail)")

MESSAGES = [
    b"From: x@remote.example\r\nSubject: first %d\r\n\r\nhello\r\n.dotted line\r\n" % i
    for i in range(3)
]


def run_fetchmail(pop3: POP3Harness, home: Path, out: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir()
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f'poll 127.0.0.1 with proto POP3 port {pop3.port} uidl\n'
        f'  user "{USER}" there with password "{PASSWORD}" is "nobody" here\n'
        f'  sslproto "TLS1.2+" sslcertck sslcertfile "{pop3.cfg.tls.cert}"\n'
        f'  sslcommonname "{HOSTNAME}"\n'
        f'  fetchall nokeep mda "tee -a {out} >/dev/null"\n'
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    assert FETCHMAIL is not None
    return subprocess.run(
        [FETCHMAIL, "-f", str(rc), "-i", str(home / "ids"), "--nosyslog", "-v"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_fetchmail_pulls_and_deletes(pop3: POP3Harness, tmp_path: Path) -> None:
    """fetchmail retrieves every message over STLS, unstuffs dots, and deletes on QUIT."""
    for message in MESSAGES:
        pop3.deliver(message)
    out = tmp_path / "mbox"
    result = run_fetchmail(pop3, tmp_path / "home", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STLS" in result.stdout + result.stderr
    got = out.read_bytes().replace(b"\r\n", b"\n")
    for i in range(3):
        assert b"Subject: first %d\n" % i in got
    assert got.count(b"\n.dotted line\n") == 3
    pop3.wait_idle()
    client = pop3.login()
    assert client.stat() == (0, 0)
    client.quit()
