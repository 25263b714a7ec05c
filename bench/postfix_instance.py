"""A throwaway Postfix on loopback, the third server of ``smtp_accept.py``.

Debian's ``postfix`` package (installed by ``common.apt_install`` when missing
and running as root), started as its own instance: ``postfix -c DIR`` with a
main.cf and master.cf written here, queue, data and mail directories in a temp
dir, one SMTP listener on 127.0.0.1 and a port of its own, no chroot. The
system instance (``/etc/postfix``) is neither used nor touched.

What it does with mail is what a Postfix mailbox host does: ``smtpd`` hands
the message to ``cleanup``, which writes and fsyncs the queue file before the
``250``; ``qmgr`` then hands it to ``virtual``, which writes it into a Maildir
(fsync, rename). Every Postfix default that shapes throughput is kept
(``in_flow_delay``, process limits, ``max_use``, peer name lookup); only what
an isolated instance needs is set.

It cannot send mail anywhere: the only domain it accepts is ``bench.test``
(``reject_unauth_destination``, no ``permit_mynetworks``); everything else
(bounces included) would go to the ``discard`` transport; master.cf has no
``smtp``/``lmtp``/``local``/``pipe`` client at all.

Postfix needs root to start (``master`` drops to ``mail_owner`` = the
``postfix`` user the package creates; ``setgid_group`` = ``postdrop``), so
without root there is no Postfix column. ``stop`` runs ``postfix stop`` and
waits for the master; the caller removes the directory. A benchmark killed
with SIGKILL leaves the master running: ``postfix -c DIR/etc stop`` ends it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

from common import free_port, log_tail

DOMAIN = "bench.test"
POSTFIX = "/usr/sbin/postfix"
READY_TIMEOUT = 30.0

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.{domain}
mydomain = {domain}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtpd_relay_restrictions = reject_unauth_destination
default_transport = discard
relay_transport = discard
local_transport = discard
alias_maps =
alias_database =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}/vmail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = {uid}
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
biff = no
"""

# No chroot (the temp dir is not set up as one); no client that could reach
# another host. Columns: service type private unpriv chroot wakeup maxproc command.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60  1 pickup
cleanup   unix  n - n -   0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -   - trivial-rewrite
bounce    unix  - - n -   0 bounce
defer     unix  - - n -   0 bounce
trace     unix  - - n -   0 bounce
verify    unix  - - n -   1 verify
proxymap  unix  - - n -   - proxymap
showq     unix  n - n -   - showq
error     unix  - - n -   - error
retry     unix  - - n -   - error
discard   unix  - - n -   - discard
virtual   unix  - n n -   - virtual
anvil     unix  - - n -   1 anvil
scache    unix  - - n -   1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def why_unavailable() -> str | None:
    """None when a Postfix instance can be started here, else the reason."""
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    if not os.access(POSTFIX, os.X_OK):
        return f"{POSTFIX} missing (Debian package postfix)"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "no postfix user or postdrop group (the package creates them)"
    return None


class PostfixInstance:
    """One Postfix instance under ``root``; the same surface as ``common.Server``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.master_pid = 0
        self.stderr: list[str] = []
        self.started = False

    @property
    def pid(self) -> int:
        """The master process: every other Postfix process is its child."""
        return self.master_pid

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([POSTFIX, "-c", str(self.root / "etc"), *args],
                              capture_output=True, text=True, timeout=60, check=False)

    def start(self) -> PostfixInstance:
        """Write the config, ``postfix start``, wait (bounded) for the SMTP banner."""
        user = pwd.getpwnam("postfix")
        self.root.chmod(0o755)  # the daemons, running as postfix, must traverse it
        for sub in ("etc", "queue"):  # root-owned; post-install makes the queue subdirs
            (self.root / sub).mkdir(mode=0o755)
        for sub in ("data", "vmail"):
            (self.root / sub).mkdir(mode=0o700)
            os.chown(self.root / sub, user.pw_uid, user.pw_gid)
        self.port = free_port()
        (self.root / "etc" / "main.cf").write_text(MAIN_CF.format(
            root=self.root, domain=DOMAIN, uid=user.pw_uid, gid=user.pw_gid))
        (self.root / "etc" / "master.cf").write_text(MASTER_CF.format(port=self.port))
        result = self._postfix("start")
        self.started = True
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stdout}{result.stderr}"
                               f"{self.log_tail()}")
        self.master_pid = int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        deadline = time.monotonic() + READY_TIMEOUT
        while True:  # bounded by the deadline
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=5) as s:
                if s.recv(512).startswith(b"220"):
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError("postfix did not answer on its port" + self.log_tail())
            time.sleep(0.1)

    def delivered(self) -> int:
        """Messages written to the Maildir so far."""
        new = self.root / "vmail" / "inbox" / "new"
        try:
            return sum(1 for _ in os.scandir(new))
        except FileNotFoundError:
            return 0

    def log_tail(self) -> str:
        """The last warnings and errors in the instance's maillog."""
        return log_tail(self.root / "maillog", ("warning:", "fatal:", "error:"))

    def stop(self) -> int | None:
        """``postfix stop``, wait for the master to go (then ``abort``, then SIGKILL)."""
        if not self.started:
            return None
        self.started = False
        self._postfix("stop")
        for attempt in ("wait", "abort", "kill"):
            deadline = time.monotonic() + 15
            while self.master_pid and alive(self.master_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.master_pid or not alive(self.master_pid):
                return 0
            if attempt == "wait":
                self._postfix("abort")
            elif attempt == "abort":
                os.kill(self.master_pid, signal.SIGKILL)
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")

