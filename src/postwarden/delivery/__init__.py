"""Outbound delivery: the queue manager, the SMTP client, MX lookup and reports."""
