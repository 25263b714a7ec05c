"""HeldWriter.release: our Authentication-Results header first, forged ones claiming our
authserv-id dropped (RFC 8601 §5), every other byte as received."""

from __future__ import annotations

import pytest

from postwarden.intake.held import HeldWriter
from postwarden.storage.interfaces import BlobRef

OURS = b"Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=a@b.test\r\n"


class Sink:
    """The blob writer underneath: keeps what reaches it."""

    def __init__(self) -> None:
        self.data = b""

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, data: bytes) -> None:
        self.data += data

    def commit(self) -> BlobRef:
        return BlobRef("q", len(self.data))

    def abort(self) -> None:
        self.data = b""


def released(message: bytes) -> tuple[bytes, int]:
    sink = Sink()
    held = HeldWriter(sink)
    held.write(message[:10])
    held.write(message[10:])
    removed = held.release(OURS, "MX.example.test")
    return sink.data, removed


@pytest.mark.parametrize("message", [
    b"From: a@b.test\r\nSubject: hi\r\n\r\nbody\r\nAuthentication-Results: mx.example.test\r\n",
    b"Authentication-Results: other.test; dkim=pass\r\nFrom: a@b.test\r\n\r\nbody\r\n",
    b"X-Authentication-Results: mx.example.test; spf=pass\r\n\r\n",
    b"From: a@b.test\r\n",  # no body, no blank line
])
def test_a_message_without_our_results_is_written_as_received(message: bytes) -> None:
    assert released(message) == (OURS + message, 0)


def test_results_claiming_our_name_are_dropped_others_kept() -> None:
    forged = (b"authentication-results :\r\n mx.example.test; spf=pass\r\n"
              b"Authentication-Results: other.test; dkim=pass\r\n"
              b"AUTHENTICATION-RESULTS: MX.EXAMPLE.TEST; dmarc=pass\r\n"
              b"From: a@b.test\r\n\r\n"
              b"Authentication-Results: mx.example.test; in the body, kept\r\n")
    data, removed = released(forged)
    assert removed == 2
    assert data == (OURS + b"Authentication-Results: other.test; dkim=pass\r\n"
                    b"From: a@b.test\r\n\r\n"
                    b"Authentication-Results: mx.example.test; in the body, kept\r\n")
