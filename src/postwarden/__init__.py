"""postwarden: a mail server with strict relay control, a durable queue, POP3 and IMAP4."""

__version__ = "0.1.0"
