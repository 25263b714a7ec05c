"""What the SQL backends share: one query layer, spoken in each backend's dialect.

The SQLite and PostgreSQL backends keep the same tables and the same rules;
the logic lives here once, and each backend gives a ``Dialect`` (the few
spellings that differ) and overrides only what really works differently.
"""
