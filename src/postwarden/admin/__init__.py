"""Administration commands too big for ``cli.py``: setup checker, backup, import.

Each module does one command's work and raises ``AdminError`` for what the
admin must fix; ``cli`` prints it as one line.
"""


class AdminError(Exception):
    """A user-facing error: printed as one line, exit status 2."""
