"""Real IMAP clients from Debian against a real server: mbsync (isync) and curl."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import imapclient
import pytest

from e2e.imap_fixtures import TIMEOUT, IMAPWorld, imap_world
from serverproc import PASSWORD

__all__ = ["imap_world"]

needs_mbsync = pytest.mark.skipif(shutil.which("mbsync") is None,
                                  reason="mbsync (Debian isync) not installed; .ci/run installs it")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def mbsync(config: Path) -> None:
    done = subprocess.run(["mbsync", "-c", str(config), "-a"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def maildir_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (folder / sub).glob("*"))


@needs_mbsync
class TestMbsync:
    def test_two_way_sync(self, imap_world: IMAPWorld, tmp_path: Path) -> None:
        """New mail comes down; a flag, a moved message and a new draft go up."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="to flag")
        imap_world.deliver(account, subject="to move")
        local = tmp_path / "mail"
        local.mkdir()
        config = tmp_path / "mbsyncrc"
        config.write_text(f"""
IMAPAccount pw
Host {imap_world.host}
Port {imap_world.port}
User {account}
Pass "{PASSWORD}"
SSLType None
AuthMechs LOGIN

IMAPStore pw-remote
Account pw

MaildirStore pw-local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel pw
Far :pw-remote:
Near :pw-local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
        mbsync(config)
        inbox = maildir_files(local / "INBOX")
        assert len(inbox) == 2
        assert {"Sent", "Drafts", "Trash", "Junk", "Archive"} <= {p.name for p in local.iterdir()}

        by_subject = {b"to flag" if b"to flag" in p.read_bytes() else b"to move": p
                      for p in inbox}
        flagged = by_subject[b"to flag"]
        base = flagged.name.split(":2,")[0]
        flagged.rename(local / "INBOX" / "cur" / f"{base}:2,F")
        moved = by_subject[b"to move"]
        moved.rename(local / "Archive" / "cur" / moved.name.split(",U=")[0].split(":2,")[0])
        (local / "Drafts" / "new" / "1.local-draft").write_bytes(
            b"From: me@example.test\nSubject: written offline\n\nhello\n")
        mbsync(config)

        client = imapclient.IMAPClient(imap_world.host, imap_world.port, ssl=False,
                                       timeout=TIMEOUT)
        client.login(account, PASSWORD)
        client.select_folder("INBOX")
        subjects = client.fetch(client.search("ALL"),
                                ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert len(subjects) == 1
        only = next(iter(subjects.values()))
        assert b"to flag" in only[b"BODY[HEADER.FIELDS (SUBJECT)]"]
        assert imapclient.FLAGGED in only[b"FLAGS"]
        client.select_folder("Archive")
        archived = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert [b"to move" in v[b"BODY[HEADER.FIELDS (SUBJECT)]"] for v in archived.values()] \
            == [True]
        client.select_folder("Drafts")
        drafts = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
        assert any(b"written offline" in v[b"BODY[]"] for v in drafts.values())
        client.logout()


@needs_curl
class TestCurl:
    def _curl(self, world: IMAPWorld, account: str, path: str) -> str:
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "-u", f"{account}:{PASSWORD}",
             f"imap://{world.host}:{world.port}/{path}"],
            capture_output=True, text=True, timeout=30, check=False,
            env={**os.environ, "NO_PROXY": "*"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    def test_list_and_fetch(self, imap_world: IMAPWorld) -> None:
        """curl lists the mailboxes and fetches a message by UID."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="for curl", body="curl body\n")
        listing = self._curl(imap_world, account, "")
        assert "INBOX" in listing and "Sent" in listing
        message = self._curl(imap_world, account, "INBOX;UID=1")
        assert "Subject: for curl" in message and "curl body" in message
