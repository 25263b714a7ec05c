"""The corpus of tricky messages against hand-verified IMAP expectations.

Each ``corpus/NAME.eml`` (written with LF line ends, sent through as CRLF unless
the name ends in ``.lf.eml``) has a ``NAME.expect`` whose comments give the RFC
reasoning for each expected line:

    ENVELOPE / BODYSTRUCTURE / BODY (and -UTF8)  the s-expression, exactly
    SECTION spec = bytes   what BODY[spec] reads (NONE: the section does not exist)
    BINARY part = bytes    what BINARY[part] gives
    FIELD name = text      a normalised search field
    TEXT = words           the indexed body text, white space collapsed

In values ``{CRLF}``, ``{LF}``, ``{EMPTY}`` and ``\\xNN`` stand for those octets.
"""

from __future__ import annotations

import email
import email.message
import re
from pathlib import Path

import pytest
from fetchshape import imaplib_shape
from imapclient.response_parser import parse_fetch_response

from postwarden.mail.mime import MessageStructure, MimePart, parse_message
from postwarden.mail.mime_decode import decode_body, extract_text
from postwarden.protocol.imap.bodystructure import (
    body_plain,
    bodystructure,
    envelope,
    resolve_section,
)
from postwarden.protocol.imap.fetch import Section, SectionText

CORPUS = Path(__file__).parent / "corpus"
NAMES = sorted(p.name.removesuffix(".expect") for p in CORPUS.glob("*.expect"))


def load(name: str) -> bytes:
    lf = CORPUS / f"{name}.lf.eml"
    if lf.exists():
        return lf.read_bytes()
    return (CORPUS / f"{name}.eml").read_bytes().replace(b"\n", b"\r\n")


def octets(text: str) -> bytes:
    data = text.encode("utf-8")
    data = data.replace(b"{CRLF}", b"\r\n").replace(b"{LF}", b"\n").replace(b"{EMPTY}", b"")
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


def expectations(name: str) -> list[tuple[str, str, str]]:
    """(keyword, argument, value) for each line of NAME.expect."""
    out = []
    for line in (CORPUS / f"{name}.expect").read_text("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        argument, sep, value = (" " + rest).partition(" = ")
        argument = argument.strip()
        if not sep:
            argument, value = "", rest
        out.append((keyword, argument, value))
    return out


def parse_section(spec: str) -> Section:
    """"1.2.HEADER.FIELDS (From To)" as the IMAP parser would give it."""
    fields: tuple[str, ...] = ()
    if "(" in spec:
        spec, _, names = spec.partition(" (")
        fields = tuple(names.rstrip(")").split())
    numbers: list[int] = []
    pieces = spec.split(".") if spec else []
    while pieces and pieces[0].isdigit():
        numbers.append(int(pieces.pop(0)))
    text = SectionText(".".join(pieces)) if pieces else None
    return Section(tuple(numbers), text, fields)


def section(structure: MessageStructure, data: bytes, spec: str) -> bytes | None:
    """BODY[spec] read through resolve_section, as the server will."""
    found = resolve_section(structure, parse_section(spec))
    if found is None:
        return None
    start, end = found.body_range()
    return found.body_data(data[start:end])


def binary(structure: MessageStructure, data: bytes, spec: str) -> bytes | None:
    found = resolve_section(structure, parse_section(spec))
    assert found is not None
    return found.binary_data(data[found.start:found.end])


@pytest.mark.parametrize("name", NAMES)
def test_corpus_message_matches_its_expectations(name: str) -> None:
    """Every expectation line of the message holds."""
    data = load(name)
    structure = parse_message(data)
    checked = 0
    for keyword, argument, value in expectations(name):
        match keyword:
            case "ENVELOPE":
                assert envelope(structure.envelope) == octets(value)
            case "ENVELOPE-UTF8":
                assert envelope(structure.envelope, utf8=True) == octets(value)
            case "BODYSTRUCTURE":
                assert bodystructure(structure) == octets(value)
            case "BODYSTRUCTURE-UTF8":
                assert bodystructure(structure, utf8=True) == octets(value)
            case "BODY":
                assert body_plain(structure) == octets(value)
            case "SECTION":
                want = None if value == "NONE" else octets(value)
                assert section(structure, data, argument) == want, argument
            case "BINARY":
                assert binary(structure, data, argument) == octets(value), argument
            case "FIELD":
                assert structure.field(argument) == value
            case "TEXT":
                text = extract_text(structure, lambda a, b: data[a:b], 10_000)
                assert " ".join(text.split()) == value
            case _:
                raise AssertionError(f"unknown expectation {keyword}")
        checked += 1
    assert checked >= 2


# Messages whose MIME is well-formed, where Python's email package (a whole-message
# parser, used here only as an independent oracle) must agree on every part.
# (Not no-final-boundary: the email package drops the last line break of an
# unterminated last part; we keep it, as no delimiter claims it.)
WELL_FORMED = ["simple", "nested", "attached", "rfc2231", "digest", "encoded-words",
               "missing-headers", "bare-lf", "eightbit"]


def _compare(ours: MimePart, theirs: email.message.Message, data: bytes) -> None:
    assert ours.media_type.lower() == theirs.get_content_maintype()
    assert ours.media_subtype.lower() == theirs.get_content_subtype()
    if ours.is_multipart or ours.is_message:
        payload = theirs.get_payload()
        assert isinstance(payload, list) and len(payload) == len(ours.children)
        for child, other in zip(ours.children, payload, strict=True):
            _compare(child, other, data)
        return
    body = data[ours.body_start:ours.end]
    assert decode_body(ours.encoding, body) == theirs.get_payload(decode=True)


@pytest.mark.parametrize("name", WELL_FORMED)
def test_part_slices_agree_with_the_email_package(name: str) -> None:
    """Each leaf's byte slice, decoded, is the payload the email package finds."""
    data = load(name)
    _compare(parse_message(data).root, email.message_from_bytes(data), data)


def _count_leaves(body: tuple[object, ...]) -> int:
    if isinstance(body[0], list):  # multipart: a list of parts, then the subtype
        return sum(_count_leaves(tuple(part)) for part in body[0])
    return 1


@pytest.mark.parametrize("name", NAMES)
def test_a_real_client_parses_our_fetch_response(name: str) -> None:
    """imapclient's response parser reads our ENVELOPE and BODYSTRUCTURE back."""
    structure = parse_message(load(name))
    response = (b"7 (ENVELOPE " + envelope(structure.envelope) + b" BODYSTRUCTURE "
                + bodystructure(structure) + b" BODY " + body_plain(structure) + b")")
    parsed = parse_fetch_response(imaplib_shape(response))[7]
    env = parsed[b"ENVELOPE"]
    subject = structure.envelope.subject
    assert env.subject == (None if subject is None else subject.encode("utf-8", "surrogateescape"))
    assert len(env.from_ or ()) == len(structure.envelope.from_)
    bs = parsed[b"BODYSTRUCTURE"]
    assert bs.is_multipart == structure.root.is_multipart
    assert _count_leaves(tuple(bs)) == _count_leaves(tuple(parsed[b"BODY"])) == _leaves(
        structure.root)


def _leaves(part: MimePart) -> int:
    """Parts that are not multipart (an attached message counts once)."""
    if part.is_multipart:
        return sum(_leaves(child) for child in part.children)
    return 1
