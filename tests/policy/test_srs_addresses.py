"""SRS addresses: made, reversed, and refused when forged, tampered with or expired."""

from __future__ import annotations

from pathlib import Path

import pytest

from postwarden.policy.srs import Srs, load_key

NOW = 1_796_000_000.0
DAY = 86400.0
SRS = Srs(b"k" * 32, "fwd.example.test", 21)


def parts(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain


class TestSrs:
    def test_forward_then_reverse_gives_the_original_sender(self) -> None:
        """SRS0=hash=stamp=domain=local@ours reverses to local@domain."""
        rewritten = SRS.forward("Joe.Bloggs@Sender.Example", NOW)
        assert rewritten.startswith("SRS0=") and rewritten.endswith("@fwd.example.test")
        assert "=Sender.Example=Joe.Bloggs@" in rewritten
        assert SRS.reverse(*parts(rewritten), NOW + DAY) == "Joe.Bloggs@Sender.Example"

    def test_a_host_that_changes_case_does_not_break_it(self) -> None:
        """Local parts may come back upper-cased: the hash is case-insensitive."""
        local, domain = parts(SRS.forward("joe@sender.example", NOW))
        assert SRS.reverse(local.upper(), domain.upper(), NOW) == "JOE@SENDER.EXAMPLE"

    @pytest.mark.parametrize("edit", [
        lambda a: a.replace("=sender.example=", "=victim.example="),  # other target
        lambda a: "SRS0=aaaaaa" + a[11:],  # guessed hash
        lambda a: a.replace("=joe@", "=jim@"),
        lambda a: a.replace("@fwd.example.test", "@other.example"),  # not our SRS domain
    ])
    def test_forged_addresses_reverse_to_nothing(self, edit: object) -> None:
        """Any change to the address or a guessed hash: no forwarding target."""
        address = SRS.forward("joe@sender.example", NOW)
        forged = edit(address)  # type: ignore[operator]
        assert forged != address
        assert SRS.reverse(*parts(forged), NOW) is None

    @pytest.mark.parametrize("local", [
        "SRS0=abc", "SRS0=====", "SRS0=x=y", "SRS1=abc", "SRS1=h=dom=x", "srs0", "joe",
    ])
    def test_malformed_addresses_reverse_to_nothing(self, local: str) -> None:
        """Truncated or empty parts never raise and never forward."""
        assert SRS.reverse(local, "fwd.example.test", NOW) is None

    def test_addresses_expire_after_max_age(self) -> None:
        """21 days old still works; 22 days old is refused."""
        local, domain = parts(SRS.forward("joe@sender.example", NOW))
        assert SRS.reverse(local, domain, NOW + 21 * DAY) is not None
        assert SRS.reverse(local, domain, NOW + 22 * DAY) is None

    def test_forwarding_an_srs0_address_points_back_at_its_host(self) -> None:
        """SRS1 keeps the first forwarder's SRS0 part and reverses to it."""
        first = Srs(b"j" * 32, "first.example", 21)
        srs0 = first.forward("joe@sender.example", NOW)
        srs1 = SRS.forward(srs0, NOW)
        assert srs1.startswith("SRS1=") and "=first.example==" in srs1
        back = SRS.reverse(*parts(srs1), NOW)
        assert back == srs0
        assert first.reverse(*parts(back), NOW) == "joe@sender.example"
        srs1_again = SRS.forward(Srs(b"m" * 32, "third.example", 21).forward(srs0, NOW), NOW)
        assert SRS.reverse(*parts(srs1_again), NOW) == srs0

    def test_our_own_and_null_senders_are_left_alone(self) -> None:
        """An address already in our SRS domain is not wrapped again."""
        ours = SRS.forward("joe@sender.example", NOW)
        assert SRS.forward(ours, NOW) == ours
        assert SRS.forward("", NOW) == ""

    def test_key_is_made_once_and_private(self, tmp_path: Path) -> None:
        """32 random bytes, mode 0600, the same on every later load."""
        path = tmp_path / "srs.key"
        key = load_key(path)
        assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
        assert load_key(path) == key
        assert [p.name for p in tmp_path.iterdir()] == ["srs.key"]
