"""Address parsing: one strict parser decides what is local, so it must never be fooled."""

from __future__ import annotations

import pytest

from postwarden.mail.address import (
    MAX_LOCAL_PART,
    Address,
    AddressError,
    normalise_domain,
    parse_address,
    parse_mailbox,
    parse_path,
)


def _mailbox_of_length(n: int) -> str:
    """A syntactically valid ``u@aaa.aaa...`` of exactly ``n`` characters."""
    labels: list[str] = []
    left = n - 2
    while left > 0:
        size = min(63, left)
        if left - size == 1:  # a lone dot would be left over: shorten this label
            size -= 2
        labels.append("a" * size)
        left -= size + 1
    text = "u@" + ".".join(labels)
    assert len(text) == n
    return text


class TestParsePath:
    @pytest.mark.parametrize(
        ("path", "local", "domain"),
        [
            ("<user@example.test>", "user", "example.test"),
            ("<User@Example.TEST>", "User", "example.test"),
            ("<first.last+tag@sub.example.test>", "first.last+tag", "sub.example.test"),
            ("<u%remote.test@example.test>", "u%remote.test", "example.test"),
            ("<remote.test!u@example.test>", "remote.test!u", "example.test"),
            ("<user@example.test.>", "user", "example.test"),
        ],
    )
    def test_accepts_valid_paths(self, path: str, local: str, domain: str) -> None:
        """Ordinary paths parse into the sender's local part and a lower-case domain."""
        assert parse_path(path).address == Address(local, domain)

    @pytest.mark.parametrize(
        ("path", "local"),
        [
            ('<"a@remote.test"@example.test>', '"a@remote.test"'),
            ('<"a b"@example.test>', '"a b"'),
            (r'<"a\"b"@example.test>', r'"a\"b"'),
            (r'<"a\@b"@example.test>', r'"a\@b"'),
        ],
    )
    def test_keeps_needed_quotes_and_the_at_sign_inside_them(self, path: str, local: str) -> None:
        """An @ inside a quoted local part stays in the local part; the domain is the last one."""
        address = parse_path(path).address
        assert address == Address(local, "example.test")

    @pytest.mark.parametrize(
        "path", ['<"john"@example.test>', r'<"jo\hn"@example.test>', '<"j.ohn"@example.test>']
    )
    def test_unquotes_needless_quotes(self, path: str) -> None:
        """A quoted local part that is a plain dot-atom is canonicalised without quotes."""
        address = parse_path(path).address
        assert address is not None
        assert address.local.replace(".", "") == "john"
        assert '"' not in address.local

    @pytest.mark.parametrize(
        "path",
        ["<@relay.test:user@example.test>", "<@relay.test,@other.test:user@example.test>"],
    )
    def test_drops_source_routes(self, path: str) -> None:
        """The final mailbox is the destination; the route hosts are forgotten."""
        assert parse_path(path).address == Address("user", "example.test")

    @pytest.mark.parametrize("path", ["<postmaster>", "<PostMaster>", "<POSTMASTER>"])
    def test_postmaster_without_domain_has_an_empty_domain(self, path: str) -> None:
        """``<postmaster>`` is the local postmaster (RFC 5321 §4.5.1), whatever its case."""
        assert parse_path(path).address == Address("postmaster", "")

    def test_null_path_is_allowed_only_when_asked(self) -> None:
        """``<>`` is the null reverse-path for MAIL FROM, refused elsewhere."""
        assert parse_path("<>", allow_null=True).address is None
        assert str(parse_path("<>", allow_null=True)) == ""
        with pytest.raises(AddressError):
            parse_path("<>")

    def test_international_domain_needs_smtputf8(self) -> None:
        """A U-label domain is refused without SMTPUTF8 and encoded to A-labels with it."""
        with pytest.raises(AddressError):
            parse_path("<u@bücher.example>")
        address = parse_path("<u@bücher.example>", smtputf8=True).address
        assert address == Address("u", "xn--bcher-kva.example")

    def test_a_label_domain_needs_no_smtputf8(self) -> None:
        """An IDN already written in A-labels is plain ASCII."""
        assert parse_path("<u@xn--bcher-kva.example>").address == Address(
            "u", "xn--bcher-kva.example"
        )

    def test_utf8_local_part_needs_smtputf8(self) -> None:
        """A non-ASCII local part is a syntax error unless SMTPUTF8 was given."""
        with pytest.raises(AddressError):
            parse_path("<jörg@example.test>")
        address = parse_path("<jörg@example.test>", smtputf8=True).address
        assert address is not None
        assert address.local == "jörg"
        assert address.needs_smtputf8

    @pytest.mark.parametrize(
        ("path", "domain"),
        [
            ("<u@[192.0.2.1]>", "[192.0.2.1]"),
            ("<u@[192.0.2.01]>", "[192.0.2.1]"),
            ("<u@[IPv6:2001:DB8:0:0:0:0:0:1]>", "[IPv6:2001:db8::1]"),
            ("<u@[ipv6:::1]>", "[IPv6:::1]"),
        ],
    )
    def test_accepts_address_literals_in_canonical_form(self, path: str, domain: str) -> None:
        """IPv4 and IPv6 address literals keep their brackets, normalised."""
        address = parse_path(path).address
        assert address is not None
        assert address.domain == domain
        assert address.is_literal

    @pytest.mark.parametrize(
        "path",
        [
            # not in angle brackets
            "user@example.test",
            "<user@example.test",
            # address literals
            "<u@[256.0.0.1]>",
            "<u@[1.2.3]>",
            "<u@[1.2.3.4.5]>",
            "<u@[example.test]>",
            "<u@[IPv6:zz::1]>",
            "<u@[IPv6:192.0.2.1]>",
            "<u@[]>",
            # trailing dots: one is the root, two are an empty label
            "<u@example.test..>",
            "<u@.>",
            # @ signs
            "<a@b@example.test>",
            "<u@example.test.@remote.test>",
            "<userexample.test>",
            # empty parts
            "<@example.test>",
            "<u@>",
            '<"abc"def@example.test>',
            # spaces and bad dots
            "<u @example.test>",
            "<u@exa mple.test>",
            "< u@example.test>",
            "<a..b@example.test>",
            "<.a@example.test>",
            "<a.@example.test>",
            # bad domain labels and source routes
            "<u@-bad.test>",
            "<u@bad-.test>",
            "<u@under_score.test>",
            "<@relay.test user@example.test>",
            "<@:user@example.test>",
            # unterminated quotes
            '<"abc@example.test>',
        ],
    )
    def test_refuses_bad_paths(self, path: str) -> None:
        """Anything not an RFC 5321 path is refused rather than guessed at."""
        with pytest.raises(AddressError):
            parse_path(path)

    def test_local_part_of_64_octets_is_the_limit(self) -> None:
        """RFC 5321 §4.5.3.1.1: 64 octets of local part are fine, 65 are not."""
        assert parse_path(f"<{'a' * MAX_LOCAL_PART}@example.test>").address is not None
        with pytest.raises(AddressError, match="too long"):
            parse_path(f"<{'a' * (MAX_LOCAL_PART + 1)}@example.test>")

    def test_local_part_limit_counts_octets_not_characters(self) -> None:
        """33 two-octet characters are 66 octets, over the limit."""
        with pytest.raises(AddressError):
            parse_path(f"<{'ü' * 33}@example.test>", smtputf8=True)

    def test_path_of_256_octets_is_accepted(self) -> None:
        """The longest path RFC 5321 allows, brackets included, parses."""
        assert parse_path(f"<{_mailbox_of_length(254)}>").address is not None

    def test_path_far_over_256_octets_is_refused(self) -> None:
        """A path well past the limit is refused."""
        with pytest.raises(AddressError):
            parse_path(f"<{_mailbox_of_length(300)}>")

    def test_path_of_257_octets_is_refused(self) -> None:
        """RFC 5321 §4.5.3.1.3: the 256-octet path limit includes the punctuation."""
        with pytest.raises(AddressError):
            parse_path(f"<{_mailbox_of_length(255)}>")


class TestParseMailbox:
    def test_has_no_angle_brackets(self) -> None:
        """A bare mailbox parses; brackets belong to paths."""
        assert parse_mailbox("u@example.test") == Address("u", "example.test")
        with pytest.raises(AddressError):
            parse_mailbox("<u@example.test>")

    @pytest.mark.parametrize("text", ["", "postmaster", "u@", "@example.test"])
    def test_refuses_empty_or_missing_parts(self, text: str) -> None:
        """A mailbox always has both a local part and a domain."""
        with pytest.raises(AddressError):
            parse_mailbox(text)


class TestParseAddress:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("bob@example.test", Address("bob", "example.test")),
            ("  bob@example.test\n", Address("bob", "example.test")),
            ("<bob@example.test>", Address("bob", "example.test")),
            ("Bob@Bücher.Example", Address("Bob", "xn--bcher-kva.example")),
            ("jörg@example.test", Address("jörg", "example.test")),
        ],
    )
    def test_accepts_what_an_administrator_types(self, text: str, expected: Address) -> None:
        """Whitespace and optional brackets are tolerated; UTF-8 is always allowed."""
        assert parse_address(text) == expected

    @pytest.mark.parametrize("text", ["bob", "bob@", "a@b@example.test", "b ob@example.test"])
    def test_refuses_bad_addresses(self, text: str) -> None:
        """The CLI and config get the same strict syntax as the wire."""
        with pytest.raises(AddressError):
            parse_address(text)


class TestNormaliseDomain:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("example.test", "example.test"),
            ("EXAMPLE.Test", "example.test"),
            ("example.test.", "example.test"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example.", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("localhost", "localhost"),
        ],
    )
    def test_gives_lower_case_a_labels(self, text: str, expected: str) -> None:
        """Case, one trailing dot and U-labels all fold to one spelling."""
        assert normalise_domain(text) == expected

    @pytest.mark.parametrize(
        "text",
        ["", ".", "example.test..", ".example.test", "a..b", f"{'a' * 64}.test", "a b.test",
         "exa_mple.test", "-a.test", "xn--.test", "a" * 256],
    )
    def test_refuses_bad_domains(self, text: str) -> None:
        """Empty labels, over-long labels and stray characters are refused."""
        with pytest.raises(AddressError):
            normalise_domain(text)


class TestAddress:
    def test_key_folds_local_part_case_and_keeps_domain(self) -> None:
        """Local mailboxes are looked up case-insensitively; display keeps the spelling."""
        address = parse_address("Bob.Smith@EXAMPLE.test")
        assert address.key == "bob.smith@example.test"
        assert str(address) == "Bob.Smith@example.test"

    def test_same_mailbox_in_different_case_has_one_key(self) -> None:
        """Two spellings of one mailbox meet at the same key."""
        assert parse_address("ALICE@Example.Test").key == parse_address("alice@example.test").key

    @pytest.mark.parametrize(
        ("text", "literal"),
        [("u@[192.0.2.1]", True), ("u@[IPv6:::1]", True), ("u@example.test", False)],
    )
    def test_is_literal_only_for_address_literals(self, text: str, literal: bool) -> None:
        """Only a bracketed domain is an address literal."""
        assert parse_address(text).is_literal is literal
