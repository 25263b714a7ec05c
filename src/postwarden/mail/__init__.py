"""Value types shared by every room: addresses, envelopes, replies."""
