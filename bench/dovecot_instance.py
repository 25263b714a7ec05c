"""A throwaway Dovecot IMAP server on loopback, the reference side of ``imap.py``.

Debian's ``dovecot-imapd`` (installed by ``common.apt_install`` when missing
and running as root), run in the foreground as a child of the benchmark with
its own ``dovecot.conf`` in a temp dir: base_dir, state_dir, log file, one
IMAP listener on 127.0.0.1 and a free port (imaps off), ``ssl = no``, one
user in a passwd-file, Maildir under the temp dir. No system service, no
``/etc/dovecot`` setting is used.

The auth cache is on, but Dovecot's cache keeps the password *hash* and
verifies every login against it again: with an ARGON2ID hash each LOGIN costs
an argon2 run (~0.2-0.4 s here) in one auth process, and 1,000 sessions take
minutes to open. postwarden's issue 10 asks for a cache of *verified*
credentials, so a warm LOGIN costs no hash at all; the closest Dovecot setting
is a cheap scheme, so the user's password is stored as SSHA512 by default
(``scheme`` picks another, e.g. ARGON2ID). No full-text-search plugin:
Debian's default, so BODY searches read the messages.

Dovecot will not run mail processes as root: when the benchmark runs as root,
mail is owned by and read as the system ``mail`` user, and the login and
internal processes use Debian's ``dovenull`` and ``dovecot`` users. Run as
another user, everything runs as that user (Dovecot's rootless setup).

Messages are written straight into the Maildir's ``cur/`` with Dovecot's
own file names (``S=`` size and ``W=`` wire size included, as Dovecot's LDA
writes them), in corpus order, so UIDs follow that order once Dovecot
indexes the folder on the first SELECT.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from common import free_port, log_tail, stop_process

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
READY_TIMEOUT = 30.0
USER = "user"
PASSWORD = "bench-password-1"
FIRST_NAME_TIME = 1_700_000_000  # file names sort in corpus order

CONF = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = bench-{port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 10M
log_path = {root}/dovecot.log
mail_location = maildir:{root}/home/%u/Maildir
first_valid_uid = {uid}
{users}
default_process_limit = {processes}
default_client_limit = {clients}
passdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
protocol imap {{
  mail_max_userip_connections = {processes}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = {processes}
}}
service anvil {{
  chroot =
}}
"""


def why_unavailable() -> str | None:
    """None when a Dovecot instance can be started here, else the reason."""
    for path in (DOVECOT, DOVEADM, "/usr/lib/dovecot/imap"):
        if not os.access(path, os.X_OK):
            return f"{path} missing (Debian package dovecot-imapd)"
    if os.geteuid() == 0:
        try:
            for name in ("mail", "dovenull", "dovecot"):
                pwd.getpwnam(name)
        except KeyError as exc:
            return f"no system user {exc}"
    return None


class DovecotInstance:
    """One Dovecot under ``root``: ``load`` messages, ``start``, ``stop``."""

    def __init__(self, root: Path, sessions: int, scheme: str = "SSHA512") -> None:
        self.root = root
        self.sessions = sessions  # concurrent IMAP sessions it must allow
        self.scheme = scheme  # of the stored password hash
        self.proc: subprocess.Popen[bytes] | None = None  # dovecot -F, our child
        self.port = 0
        if os.geteuid() == 0:
            mail = pwd.getpwnam("mail")
            self.uid, self.gid = mail.pw_uid, mail.pw_gid
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
        self.maildir = root / "home" / USER / "Maildir"

    @property
    def pid(self) -> int:
        """The Dovecot master: every other Dovecot process is its child."""
        assert self.proc is not None
        return self.proc.pid

    def load(self, messages: Iterable[bytes]) -> tuple[int, int]:
        """Write messages (CRLF wire form) as Maildir files; returns (count, bytes on disk).

        Files hold LF line ends, as Dovecot stores them; ``W=`` keeps the CRLF size.
        """
        self.root.chmod(0o755)  # processes running as the mail user must traverse it
        home = self.maildir.parent
        for path in (home.parent, home, self.maildir, *(self.maildir / d
                                                          for d in ("cur", "new", "tmp"))):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, self.uid, self.gid)
        (home.parent).chmod(0o755)
        cur = self.maildir / "cur"
        count = total = 0
        for count, raw in enumerate(messages, 1):
            data = raw.replace(b"\r\n", b"\n")
            name = (f"{FIRST_NAME_TIME + count}.M{count}P1.bench,S={len(data)},W={len(raw)}:2,")
            path = cur / name
            path.write_bytes(data)
            os.chown(path, self.uid, self.gid)
            total += len(data)
        return count, total

    def start(self) -> DovecotInstance:
        """Write the config and the user, start ``dovecot -F``, wait (bounded) for the banner."""
        self.port = free_port()
        if os.geteuid() == 0:
            users = ""  # Debian's dovenull / dovecot defaults
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            users = f"default_login_user = {me}\ndefault_internal_user = {me}"
        processes = self.sessions + 50
        conf = self.root / "dovecot.conf"
        conf.write_text(CONF.format(root=self.root, port=self.port, uid=self.uid, gid=self.gid,
                                    users=users, processes=processes, clients=4 * processes))
        hashed = subprocess.run([DOVEADM, "-c", str(conf), "pw", "-s", self.scheme, "-p",
                                 PASSWORD], capture_output=True, text=True, timeout=60,
                                check=True).stdout.strip()
        users_file = self.root / "users"
        users_file.write_text(f"{USER}:{hashed}\n")
        users_file.chmod(0o644)  # read by the auth process (the dovecot user when root)
        with (self.root / "stderr.log").open("wb") as err:
            self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], cwd=self.root,
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:  # bounded by the deadline
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if s.recv(512).startswith(b"* OK"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                err = (self.root / "stderr.log").read_text(errors="replace")
                raise RuntimeError(f"dovecot did not start: {err}{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self) -> str:
        """The last errors and warnings in the instance's log."""
        return log_tail(self.root / "dovecot.log", ("Error:", "Fatal:", "Warning:"))

    def stop(self) -> int | None:
        """SIGTERM to the master (it stops its children), SIGKILL after 30 s."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        return stop_process(proc)
