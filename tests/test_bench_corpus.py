"""The benchmark corpus (``bench/corpus.py``): deterministic, valid MIME, known search hits."""

from __future__ import annotations

import importlib.util
import sys
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

COUNT = 400  # enough for every shape and a few hits of the 1 % marker; ~0.1 s to generate


def load_corpus() -> ModuleType:
    """Import bench/corpus.py by path: bench/ is a folder of scripts, not a package."""
    path = Path(__file__).resolve().parent.parent / "bench" / "corpus.py"
    spec = importlib.util.spec_from_file_location("bench_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building Marker
    spec.loader.exec_module(module)
    return module


corpus = load_corpus()


@pytest.fixture(scope="module")
def messages() -> list[bytes]:
    """The first COUNT messages of the default seed."""
    return list(corpus.generate(COUNT))


@pytest.fixture(scope="module")
def parsed(messages: list[bytes]) -> list[EmailMessage]:
    """Each message parsed by the stdlib with the modern policy."""
    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(raw) for raw in messages]  # type: ignore[misc]


def texts(msg: EmailMessage) -> str:
    """Decoded content of every text part, forwarded messages' too, lower-cased."""
    return " ".join(str(part.get_content()) for part in msg.walk()
                    if part.get_content_maintype() == "text").lower()


class TestDeterminism:
    def test_same_seed_gives_the_same_bytes(self, messages: list[bytes]) -> None:
        """A second generation with the same seed is byte-for-byte equal."""
        assert list(corpus.generate(COUNT)) == messages

    def test_any_message_can_be_made_alone(self, messages: list[bytes]) -> None:
        """message(i) and a slice starting at i equal the i-th message of a full run."""
        assert corpus.message(123) == messages[123]
        assert list(corpus.generate(3, start=200)) == messages[200:203]

    def test_another_seed_gives_other_messages(self, messages: list[bytes]) -> None:
        """A different seed changes every message."""
        other = list(corpus.generate(20, seed=2))
        assert all(a != b for a, b in zip(other, messages, strict=False))


class TestValidMime:
    def test_every_message_parses_without_defects(self, parsed: list[EmailMessage]) -> None:
        """The stdlib parser finds no defect in any part of any message."""
        for i, msg in enumerate(parsed):
            defects = [d for part in msg.walk() for d in part.defects]
            assert defects == [], f"message {i}: {defects}"
            assert msg["Message-ID"] and msg["Date"] and msg["From"] and msg["Subject"]

    def test_sizes_are_between_2_and_20_kb(self, messages: list[bytes]) -> None:
        """Every message is 2-20 KB and lines stay under 1000 octets."""
        assert all(corpus.MIN_SIZE <= len(raw) <= corpus.MAX_SIZE for raw in messages)
        # A small forward whose parts were all at their minimum sizes: once no size fitted.
        assert corpus.MIN_SIZE <= len(corpus.message(26760)) <= corpus.MAX_SIZE
        assert max(len(line) for raw in messages for line in raw.split(b"\r\n")) < 998

    def test_all_shapes_occur(self, parsed: list[EmailMessage]) -> None:
        """Plain, alternative, attachments, nested multiparts and forwarded messages."""
        types = {part.get_content_type() for msg in parsed for part in msg.walk()}
        assert {"text/plain", "text/html", "multipart/alternative", "multipart/mixed",
                "message/rfc822"} <= types
        assert any(part.get_content_disposition() == "attachment"
                   for msg in parsed for part in msg.walk())

    def test_some_headers_are_encoded_words(self, messages: list[bytes]) -> None:
        """RFC 2047 words occur in Subject and in display names, in B and Q forms."""
        heads = [raw.split(b"\r\n\r\n", 1)[0] for raw in messages]
        assert any(b"Subject: =?UTF-8?B?" in h for h in heads)
        assert any(b"Subject: =?UTF-8?Q?" in h for h in heads)
        assert any(b"From: =?UTF-8?" in h for h in heads)


class TestMarkers:
    @pytest.mark.parametrize("marker", [m for m in corpus.MARKERS if m.where == "subject"],
                             ids=lambda m: m.word)
    def test_subject_word_is_in_exactly_the_documented_messages(
            self, parsed: list[EmailMessage], marker: Any) -> None:
        """The decoded Subject holds the word iff index % every == offset."""
        found = [i for i, msg in enumerate(parsed) if marker.word in str(msg["Subject"]).lower()]
        assert found == [i for i in range(COUNT) if marker.present(i)]
        assert len(found) == marker.hits(COUNT) > 0

    @pytest.mark.parametrize("marker", [m for m in corpus.MARKERS if m.where == "body"],
                             ids=lambda m: m.word)
    def test_body_word_is_in_exactly_the_documented_messages(
            self, messages: list[bytes], parsed: list[EmailMessage], marker: Any) -> None:
        """The decoded text parts hold the word iff index % every == offset, never a header."""
        found = [i for i, msg in enumerate(parsed) if marker.word in texts(msg)]
        assert found == [i for i in range(COUNT) if marker.present(i)]
        assert len(found) == marker.hits(COUNT)
        assert not any(marker.word.encode() in raw.split(b"\r\n\r\n", 1)[0]
                       for raw in messages)
