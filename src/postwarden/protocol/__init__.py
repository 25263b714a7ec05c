"""Sans-IO protocol machines: bytes in, typed events out, replies in, bytes out."""
