"""RFC 3461 xtext: what ENVID and ORCPT look like on the wire, both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postwarden.protocol.smtp.params import decode_xtext, encode_xtext


@pytest.mark.parametrize(
    ("text", "xtext"),
    [
        ("bob@example.test", "bob@example.test"),
        ("a b", "a+20b"),
        ("1+1=2", "1+2B1+3D2"),
        ("x\r\nRCPT TO:<evil@x>", "x+0D+0ARCPT+20TO:<evil@x>"),
        ("jörg", "j+C3+B6rg"),
    ],
)
def test_encodes_anything_that_could_end_or_split_a_parameter(text: str, xtext: str) -> None:
    """Spaces, line breaks, '+', '=' and non-ASCII are escaped; the rest passes as is."""
    assert encode_xtext(text) == xtext
    assert decode_xtext(xtext) == text


@given(st.text())
def test_round_trip(text: str) -> None:
    """Whatever a client sent us (decoded), we pass on exactly, as printable ASCII."""
    wire = encode_xtext(text)
    assert all(0x21 <= ord(c) <= 0x7E for c in wire)
    if text:
        assert decode_xtext(wire) == text
    else:
        assert wire == ""
