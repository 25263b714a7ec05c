"""Autoconfig documents without sockets: preference order, escaping, bad requests."""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET

import pytest

from postwarden.mail.address import AddressError
from postwarden.servers import autoconfig as ac

ALL = ac.Servers("mx.example.test", {"imap": 143, "imaps": 993, "pop3": 110,
                                     "submission": 587, "submissions": 465})


class TestAutoconfig:
    def test_implicit_tls_comes_first(self) -> None:
        """imaps before imap before pop3; submissions before submission."""
        assert [(e.protocol, e.port, e.implicit_tls) for e in ac.incoming(ALL)] == [
            ("imap", 993, True), ("imap", 143, False), ("pop3", 110, False)]
        assert [e.port for e in ac.outgoing(ALL)] == [465, 587]

    def test_markup_in_an_address_is_escaped_text(self) -> None:
        """A quoted local part with <, & and quotes round-trips as text in every format."""
        hostile = ac.parse_email('"x</username><a>&amp;"@example.test')
        tb = ET.fromstring(ac.thunderbird(ALL, hostile))
        assert {e.text for e in tb.iter("username")} == {str(hostile)}
        pox = ET.fromstring(ac.autodiscover(ALL, hostile))
        assert {e.text for e in pox.iter() if e.tag.endswith("LoginName")} == {str(hostile)}
        assert plistlib.loads(ac.mobileconfig(ALL, hostile))["PayloadContent"][0][
            "EmailAddress"] == str(hostile)

    def test_bad_addresses_and_requests_are_refused(self) -> None:
        """No @, an overlong address, a DOCTYPE, no EMailAddress: each an error, not a crash."""
        for text in ("no-at-sign", "a" * 400 + "@example.test"):
            with pytest.raises(AddressError):
                ac.parse_email(text)
        for body in (b'<!doctype a [<!ENTITY x "y">]><a>&x;</a>', b"<a", b"<a><b/></a>"):
            with pytest.raises(ValueError):
                ac.autodiscover_request(body)

    def test_profile_needs_both_directions(self) -> None:
        """Without an outgoing listener there is no account to describe."""
        with pytest.raises(LookupError):
            ac.mobileconfig(ac.Servers("mx.example.test", {"imaps": 993}),
                            ac.parse_email("a@example.test"))
