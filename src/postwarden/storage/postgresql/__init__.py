"""The PostgreSQL backend: several postwarden nodes sharing one database."""

from postwarden.storage.postgresql.store import PgStore

__all__ = ["PgStore"]
