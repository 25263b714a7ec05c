"""IMAP4rev1/IMAP4rev2 (RFC 3501, RFC 9051) as a sans-IO machine; see ``machine``.

The server imports the machine and settings from here, the command values
from ``commands`` (with ``fetch``, ``search`` and ``sequence``), the events
from ``events`` and what it answers with from ``responses``.
"""

from postwarden.protocol.imap.machine import CHUNK_SIZE, IMAPSession, ProtocolError, State
from postwarden.protocol.imap.settings import IMAPSettings

__all__ = ["CHUNK_SIZE", "IMAPSession", "IMAPSettings", "ProtocolError", "State"]
