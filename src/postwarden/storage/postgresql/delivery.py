"""The intake's door on PostgreSQL: the shared ``SqlDelivery`` on this backend's parts.

A message's bytes go in the same transaction as the rows that refer to
them (or to S3, every PUT of the group completed before it commits), so
they are durable when those rows are. The staged copies are taken out as
they are stored; a refused or failed acceptance's writer drops its own.
"""

from __future__ import annotations

from postwarden.storage.postgresql.db import Conn
from postwarden.storage.sql.delivery import SqlDelivery


class PgDelivery(SqlDelivery[Conn]):
    """Commits accepted messages in groups: one transaction (one WAL flush) for many."""
