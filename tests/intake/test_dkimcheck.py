"""Our DKIM verification (dkimpy's parsing, OpenSSL's arithmetic) agrees with dkimpy's own,
but for the two verdicts RFC 8601 §2.7.1 sorts differently (body hash mismatch: fail;
no key record: permerror)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import CanonicalizationPolicy, Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from postwarden.delivery import dkimsign
from postwarden.intake import dkimcheck

MESSAGE = (b"From: Joe <joe@sig.test>\r\nTo: bob@example.test\r\nSubject: hello\r\n"
           b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@sig.test>\r\n\r\n"
           b"Hi there,  \r\ntrailing space above.\r\n\r\n")


def lookup(records: dict[str, str]) -> Callable[..., bytes | None]:
    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        value = records.get(text.rstrip("."))
        return value.encode() if value is not None else None
    return dnsfunc


def both_verdicts(signed: bytes, records: dict[str, str], idx: int = 0) -> tuple[object, object]:
    """(ours, dkimpy's): True/False, or the exception class raised."""
    out: list[object] = []
    for check in (lambda: dkimcheck.failure(dkimcheck.parse(signed), idx,
                                            lookup(records)) is None,
                  lambda: dkim.DKIM(signed, minkey=1024).verify(idx=idx,
                                                                 dnsfunc=lookup(records))):
        try:
            out.append(bool(check()))
        except dkim.DKIMException as exc:
            out.append(type(exc))
    return out[0], out[1]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, dict[str, str]]]:
    """MESSAGE signed by our signer with an RSA and with an Ed25519 key, and the key records."""
    data_dir = tmp_path_factory.mktemp("keys")
    out = {}
    for algorithm in dkimsign.ALGORITHMS:
        key = dkimsign.generate(data_dir, "sig.test", None, algorithm, time.time())
        head = dkimsign.sign(MESSAGE, [dkimsign.SigningKey(key, dkimsign.parse_private(key))])
        out[algorithm] = (head + MESSAGE, {f"{key.selector}._domainkey.sig.test":
                                           "".join(key.txt_strings())})
    return out


@pytest.mark.parametrize("algorithm", dkimsign.ALGORITHMS)
class TestAgreesWithDkimpy:
    def test_a_good_signature_passes(self, signed: dict[str, tuple[bytes, dict[str, str]]],
                                     algorithm: str) -> None:
        data, records = signed[algorithm]
        assert both_verdicts(data, records) == (True, True)

    @pytest.mark.parametrize(("label", "edit"), [
        ("subject", lambda m: m.replace(b"Subject: hello", b"Subject: hullo")),
        ("added From", lambda m: b"From: mallory@evil.test\r\n" + m),
    ])
    def test_edited_messages_fail_alike(self, signed: dict[str, tuple[bytes, dict[str, str]]],
                                        algorithm: str, label: str,
                                        edit: Callable[[bytes], bytes]) -> None:
        data, records = signed[algorithm]
        assert both_verdicts(edit(data), records) == (False, False), label

    def test_a_body_edited_after_signing_fails(
            self, signed: dict[str, tuple[bytes, dict[str, str]]], algorithm: str) -> None:
        """A failed verification (dkim=fail), where dkimpy raises (which reads as permerror)."""
        data, records = signed[algorithm]
        edited = data.replace(b"Hi there", b"Hi where")
        assert both_verdicts(edited, records) == (False, dkim.ValidationError)
        why = dkimcheck.failure(dkimcheck.parse(edited), 0, lookup(records))
        assert why is not None and why.startswith("body hash mismatch")

    def test_a_missing_key_record_is_an_error(
            self, signed: dict[str, tuple[bytes, dict[str, str]]], algorithm: str) -> None:
        """Nothing to verify with (permerror), where dkimpy returns False (which reads as fail)."""
        data, records = signed[algorithm]
        assert both_verdicts(data.replace(b"s=pw", b"s=xx"), records) == (
            dkim.KeyFormatError, False)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_a_small_rsa_key_is_refused() -> None:
    """RFC 8301: a 512-bit RSA key (cryptography will not make one: openssl does) never
    makes a pass; ours raises what dkimpy raises."""
    pem = subprocess.run(["openssl", "genrsa", "512"], capture_output=True, check=True,
                         timeout=30).stdout
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 512
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    records = {"small._domainkey.sig.test": "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()}
    data = dkim.sign(MESSAGE, b"small", b"sig.test", pem) + MESSAGE
    assert both_verdicts(data, records) == (dkim.KeyFormatError, dkim.KeyFormatError)


def test_an_algorithm_that_does_not_fit_the_key_is_an_error(
        signed: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    """a=ed25519-sha256 against an RSA key record: an error, never a pass."""
    data, _ = signed["ed25519-sha256"]
    _, rsa_records = signed["rsa-sha256"]
    [(name, record)] = rsa_records.items()
    selector = name.split(".")[0]
    ed_selector = data.split(b"s=")[1].split(b";")[0].decode()
    swapped = {name.replace(selector, ed_selector): record}
    ours, _theirs = both_verdicts(data, swapped)
    assert ours is dkim.ValidationError


@pytest.mark.parametrize(("label", "field"), [
    ("tag without a name", b"v=1; a=rsa-sha256; d=sig.test; s=pw; h=from; bh=AA==; b=AA==; =x"),
    ("repeated tag", b"v=1; a=rsa-sha256; d=sig.test; d=sig.test; s=pw; h=from; bh=AA==; b=AA=="),
    ("no b= tag", b"v=1; a=rsa-sha256; d=sig.test; s=pw; h=from; bh=AA=="),
])
def test_a_malformed_tag_list_is_an_error(
        signed: dict[str, tuple[bytes, dict[str, str]]], label: str, field: bytes) -> None:
    """A signature that cannot be parsed is never evaluated: permerror, as dkimpy."""
    _, records = signed["rsa-sha256"]
    data = b"DKIM-Signature: " + field + b"\r\n" + MESSAGE
    ours, theirs = both_verdicts(data, records)
    assert ours == theirs and isinstance(ours, type) and issubclass(ours, dkim.DKIMException)


# --- the shortcuts give dkimpy's bytes ------------------------------------------------------

# Pieces that matter to the parsers: line ends (bare LF and CR too), folding whitespace,
# field names, tag syntax and base64 letters.
FIELD_BYTES = st.lists(st.sampled_from([b"\r\n", b"\r\n\r\n", b"\n", b"\r", b" ", b"  ",
                                        b"\t", b"From: a", b"x-y:", b"B", b"\x0b"]),
                       max_size=30).map(b"".join)
TAG_BYTES = st.lists(st.sampled_from([b";", b"; b=", b" b =", b"bh=", b"b", b"=", b" ", b"\t",
                                      b"\r\n", b"\n", b"\r", b"\x0c", b"aZ9+/", b"-"]),
                     max_size=30).map(b"".join)


def rfc822(message: bytes) -> tuple[object, object]:
    """dkimpy's split, or the exception class it raises."""
    try:
        return dkim.rfc822_parse(message)
    except Exception as exc:
        return type(exc), None


def ours(message: bytes) -> tuple[object, object]:
    try:
        parsed = dkimcheck.parse(message)
    except Exception as exc:
        return type(exc), None
    return parsed.headers, parsed.body


# Messages as SMTP delivers them: CRLF line ends only (the fast path).
CRLF_MESSAGES = st.lists(st.sampled_from([b"\r\n", b"\r\n\r\n", b"\r\n ", b"\r\n\t", b" ",
                                          b"From: a", b"x-y:", b"B", b"From x", b"\r"]),
                         max_size=30).map(b"".join)


@settings(max_examples=400)
@given(FIELD_BYTES)
def test_parse_splits_as_dkimpy_does(message: bytes) -> None:
    assert ours(message) == rfc822(message)


@settings(max_examples=400)
@given(CRLF_MESSAGES)
def test_parse_splits_crlf_messages_as_dkimpy_does(message: bytes) -> None:
    assert ours(message) == rfc822(message)


@pytest.mark.parametrize("message", [
    MESSAGE, b"\r\n" + MESSAGE, MESSAGE.replace(b"\r\n\r\n", b"\r\n\n"),
    MESSAGE + b"bare\nLF\r\n", b"A: b\r\n", b"A: b", b" folded first\r\n\r\nbody\r\n",
    b"Bad line\r\n\r\nbody", b"A: b\r\n\r\n\r\n\r\n",
    b"A: b\r\n c\r\n\td\r\nE:f\r\n\r\nbody\r\n", b"From x\r\nA: b\r\n\r\n",
])
def test_parse_splits_these_as_dkimpy_does(message: bytes) -> None:
    assert ours(message) == rfc822(message)


@settings(max_examples=400)
@given(TAG_BYTES)
def test_emptying_b_is_dkimpys_substitution(value: bytes) -> None:
    assert dkimcheck.without_signature(value) == dkim.RE_BTAG.sub(rb"\1", value)


@pytest.mark.parametrize("value", [
    b" v=1; a=rsa-sha256; bh=abc=; b=dGhp\r\n\tcyBp cw==\r\n",
    b"b=abc; b =  de\r\n f; bh=x", b"a=1;b= \r\n", b"x; b=abc  ;", b"; b=\r\n",
])
def test_emptying_b_in_these_is_dkimpys(value: bytes) -> None:
    assert dkimcheck.without_signature(value) == dkim.RE_BTAG.sub(rb"\1", value)


@settings(max_examples=400)
@given(FIELD_BYTES, st.sampled_from([b"relaxed/relaxed", b"simple/simple", b"simple/relaxed"]))
def test_body_canonicalisation_is_dkimpys(body: bytes, c: bytes) -> None:
    policy = CanonicalizationPolicy.from_c_value(c)
    assert dkimcheck.signed_body(policy, body) == policy.canonicalize_body(body)


@settings(max_examples=400)
@given(FIELD_BYTES, FIELD_BYTES)
def test_relaxed_field_canonicalisation_is_dkimpys(name: bytes, value: bytes) -> None:
    assert [dkimcheck.relaxed_field(name, value)] == Relaxed.canonicalize_headers([(name, value)])
