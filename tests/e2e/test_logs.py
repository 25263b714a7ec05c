"""The server's log on a real process: timestamps, formats, and what it never holds."""

from __future__ import annotations

import base64
import json
import re
import smtplib
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
