"""The intake's door on SQLite: the shared ``SqlDelivery`` on this backend's parts.

The message files' bytes are already synced (``FileBlobWriter.commit``);
their directory entries are synced before the batch's transaction, once per
directory, so no row ever refers to a file a crash could lose.
"""

from __future__ import annotations

import sqlite3

from postwarden.storage.sql.delivery import SqlDelivery


class SqliteDelivery(SqlDelivery[sqlite3.Connection]):
    """Commits accepted messages in groups: one fsync for many."""
