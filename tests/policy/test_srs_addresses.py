"""SRS addresses: made, reversed, and refused when forged, tampered with or expired."""

from __future__ import annotations

from pathlib import Path

import pytest

from postwarden.policy.srs import Reversed, Srs, load_key

NOW = 1_796_000_000.0
DAY = 86400.0
SRS = Srs(b"k" * 32, "fwd.example.test", 21)


def parts(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain


class TestSrs:
    def test_forward_then_reverse_gives_the_original_sender(self) -> None:
        """SRS0=hash=stamp=domain=local@ours reverses to local@domain."""
        rewritten = SRS.forward("Joe.Bloggs@Sender.Example", NOW, proven=True)
        assert rewritten.startswith("SRS0=") and rewritten.endswith("@fwd.example.test")
        assert "=Sender.Example=Joe.Bloggs@" in rewritten
        assert SRS.reverse(*parts(rewritten), NOW + DAY) == Reversed(
            "Joe.Bloggs@Sender.Example", True)

    def test_a_host_that_changes_case_does_not_break_it(self) -> None:
        """Local parts may come back upper-cased: the hash is case-insensitive."""
        local, domain = parts(SRS.forward("joe@sender.example", NOW, proven=True))
        assert SRS.reverse(local.upper(), domain.upper(), NOW) == Reversed(
            "JOE@SENDER.EXAMPLE", True)

    @pytest.mark.parametrize("edit", [
        lambda a: a.replace("=sender.example=", "=victim.example="),  # other target
        lambda a: "SRS0=aaaaaa" + a[11:],  # guessed hash
        lambda a: a.replace("=joe@", "=jim@"),
        lambda a: a.replace("@fwd.example.test", "@other.example"),  # not our SRS domain
    ])
    def test_forged_addresses_reverse_to_nothing(self, edit: object) -> None:
        """Any change to the address or a guessed hash: no forwarding target."""
        address = SRS.forward("joe@sender.example", NOW, proven=True)
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
        local, domain = parts(SRS.forward("joe@sender.example", NOW, proven=True))
        assert SRS.reverse(local, domain, NOW + 21 * DAY) is not None
        assert SRS.reverse(local, domain, NOW + 22 * DAY) is None

    def test_forwarding_an_srs0_address_points_back_at_its_host(self) -> None:
        """SRS1 keeps the first forwarder's SRS0 part and reverses to it."""
        first = Srs(b"j" * 32, "first.example", 21)
        srs0 = first.forward("joe@sender.example", NOW, proven=True)
        srs1 = SRS.forward(srs0, NOW, proven=True)
        assert srs1.startswith("SRS1=") and "=first.example==" in srs1
        back = SRS.reverse(*parts(srs1), NOW)
        assert back == Reversed(srs0, True)
        assert first.reverse(*parts(back.address), NOW) == Reversed("joe@sender.example", True)
        third = Srs(b"m" * 32, "third.example", 21).forward(srs0, NOW, proven=True)
        srs1_again = SRS.forward(third, NOW, proven=True)
        assert SRS.reverse(*parts(srs1_again), NOW) == Reversed(srs0, True)

    def test_our_own_and_null_senders_are_left_alone(self) -> None:
        """An address already in our SRS domain is not wrapped again."""
        ours = SRS.forward("joe@sender.example", NOW, proven=True)
        assert SRS.forward(ours, NOW, proven=True) == ours
        assert SRS.forward("", NOW, proven=True) == ""

    @pytest.mark.parametrize("sender", ["joe@sender.example",
                                        "SRS0=abcdef=aa=x.example=joe@hop.example"])
    def test_the_address_says_whether_the_sender_was_proven(self, sender: str) -> None:
        """SRS0 and SRS1 alike: same form, a different hash; each reverses to its own bit."""
        proven = SRS.forward(sender, NOW, proven=True)
        unproven = SRS.forward(sender, NOW, proven=False)
        assert proven != unproven and proven[:4] == unproven[:4]
        assert proven.split("=", 2)[2] == unproven.split("=", 2)[2]  # only the hash differs
        back = SRS.reverse(*parts(proven), NOW)
        assert back is not None and back.proven
        assert SRS.reverse(*parts(unproven), NOW) == Reversed(back.address, False)

    def test_flipping_the_bit_needs_the_key(self) -> None:
        """An unproven address under another key, or with its hash edited, is forged."""
        unproven = SRS.forward("joe@sender.example", NOW, proven=False)
        other = Srs(b"x" * 32, "fwd.example.test", 21).forward("joe@sender.example", NOW,
                                                                proven=True)
        assert SRS.reverse(*parts(other), NOW) is None
        tampered = unproven[:5] + ("a" if unproven[5] != "a" else "b") + unproven[6:]
        assert SRS.reverse(*parts(tampered), NOW) is None

    def test_key_is_made_once_and_private(self, tmp_path: Path) -> None:
        """32 random bytes, mode 0600, the same on every later load."""
        path = tmp_path / "srs.key"
        key = load_key(path)
        assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
        assert load_key(path) == key
        assert [p.name for p in tmp_path.iterdir()] == ["srs.key"]
