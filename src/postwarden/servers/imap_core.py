"""What every part of an IMAP session shares: the machine, the socket, the store.

``imap`` (I/O, login, IDLE), ``imap_mailboxes`` (LIST, CREATE, APPEND...)
and ``imap_selected`` (SELECT, FETCH, STORE...) are parts of one session
class; this base holds their common state and the call they all use,
``flush``. The store is ``services.mailboxes``, the async boundary: the
event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import zlib

from postwarden.config import IMAPConfig
from postwarden.protocol.imap import IMAPSession
from postwarden.servers.common import PeerDeadline
from postwarden.servers.services import MailboxServices


class SessionCore:
    machine: IMAPSession
    services: MailboxServices
    settings: IMAPConfig
    writer: asyncio.StreamWriter
    deadline: PeerDeadline
    deflate: zlib._Compress | None
    account: str
    ip: str

    async def flush(self) -> None:
        """Write what the machine has queued (deflated after COMPRESS); wait for room."""
        data = self.machine.data_to_send()
        if not data:
            return
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)
        await self.deadline.wait(self.writer.drain(),
                                 float(self.services.cfg.limits.command_timeout_seconds))
