"""Pure decisions: relay control, sender ownership, passwords, throttling, retries."""
