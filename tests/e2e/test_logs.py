"""The server's log on a real process: timestamps, formats, and what it never holds."""

from __future__ import annotations

import base64
import json
import re
import smtplib
import socket
import threading
from pathlib import Path

from serverproc import DOMAIN, PASSWORD, ServerProcess

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00\Z")
SECRET_BODY = "the-body-words-that-must-not-be-logged"


def submit_with_auth(server: ServerProcess, user: str) -> None:
    """AUTH PLAIN (the password crosses the wire base64'd) and a message."""
    host, port = server.addr("smtp")
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.test")
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        assert client.docmd("AUTH", f"PLAIN {token}")[0] == 235
        client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0wrong-"
                                                         + PASSWORD.encode()).decode())
        client.sendmail(user, [user], f"Subject: hello\r\n\r\n{SECRET_BODY}\r\n")


def test_text_log_has_rfc3339_times_and_no_password_or_body(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    user = server.add_user(f"bob@{DOMAIN}")
    server.start()
    try:
        submit_with_auth(server, user)
        server.wait_for_log("smtp transaction", "queued")
    finally:
        server.stop()
    lines = [ln for ln in server.output if ln.strip()]
    assert lines
    for line in lines:
        assert RFC3339_MS.match(line.split(" ", 1)[0]), line
    text = "\n".join(lines)
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, token, SECRET_BODY):
        assert secret not in text


def test_json_log_to_a_file(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, log={"format": "json", "file": "var/postwarden.log"})
    user = server.add_user(f"bob@{DOMAIN}")
    server.start()
    try:
        submit_with_auth(server, user)
    finally:
        server.stop()
    events = [json.loads(line) for line in
              (tmp_path / "var/postwarden.log").read_text(encoding="utf-8").splitlines()]
    transactions = [e for e in events if e["message"].startswith("smtp transaction")]
    assert len(transactions) == 1
    assert f"user={user}" in transactions[0]["message"]
    assert all(RFC3339_MS.match(e["time"]) and e["level"] for e in events)
    assert PASSWORD not in json.dumps(events)
    assert SECRET_BODY not in json.dumps(events)


class Syslogd:
    """A datagram socket read by a thread, as syslogd reads /dev/log (its queue is short)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                self.lines.append(self.sock.recv(8192).decode())
            except TimeoutError:
                continue

    def close(self) -> list[str]:
        self.done.set()
        self.thread.join(timeout=30)
        self.sock.close()
        return self.lines


def test_syslog_gets_rfc3164_lines_with_facility_mail(tmp_path: Path) -> None:
    """``[log] syslog``: each event is also a ``<22>postwarden[PID]: INFO ...`` datagram."""
    syslogd = Syslogd(tmp_path / "log.sock")
    server = ServerProcess(tmp_path, log={"syslog": True, "syslog_socket": str(syslogd.path)})
    user = server.add_user(f"bob@{DOMAIN}")
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        submit_with_auth(server, user)
        server.wait_for_log("smtp transaction", "queued")
    finally:
        server.stop()  # every line was sent before the process ended
    lines = syslogd.close()
    prefix = f"<22>postwarden[{pid}]: INFO smtp transaction"  # facility mail (2), info (6)
    transactions = [line for line in lines if line.startswith(prefix)]
    assert len(transactions) == 1 and f"user={user}" in transactions[0]
    assert not any(PASSWORD in line or SECRET_BODY in line for line in lines)


def test_a_missing_syslog_socket_is_one_line_error(tmp_path: Path) -> None:
    """Nobody listening at syslog_socket: serve stops at once, naming the path."""
    server = ServerProcess(tmp_path, log={"syslog": True, "syslog_socket": str(tmp_path / "no")})
    result = server.cli("serve")
    assert result.returncode == 2
    assert result.stderr.startswith(f"postwarden: error: cannot open the log {tmp_path / 'no'}:")
    assert len(result.stderr.strip().splitlines()) == 1
