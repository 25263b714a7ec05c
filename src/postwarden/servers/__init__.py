"""Thin asyncio listeners: read, feed the protocol machine, act on events, write."""
