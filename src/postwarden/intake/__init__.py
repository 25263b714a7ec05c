"""The intake: the only door into storage (Postfix's cleanup)."""
