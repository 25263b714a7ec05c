"""Storage behind narrow interfaces; SQLite is the default backend."""
