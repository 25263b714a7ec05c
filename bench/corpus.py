"""A seeded generator of varied, real-looking messages for the store and IMAP benchmarks.

    from corpus import generate, MARKERS
    for raw in generate(100_000, to="user@bench.test"):  # bytes, CRLF, 2-20 KB each
        ...

Why hand-built bytes and not ``email.message.EmailMessage``: 100,000 messages
must come out in seconds, and a benchmark needs the exact same bytes on every
run and every Python version; the stdlib serialiser is ~50x slower and its
folding has changed between releases. The test suite parses a sample with the
stdlib ``email`` package to prove the output is valid MIME.

Message ``i`` depends only on ``(seed, i)``, so any slice can be made on its
own (``message(i)``), in any order or process. Shapes, by share:

- 50 % text/plain (some quoted-printable with non-ASCII words, some 8-bit);
- 20 % multipart/alternative, text/plain + text/html;
- 15 % multipart/mixed, text + a base64 attachment (pdf, png, zip, ...);
- 10 % multipart/mixed with an alternative part and an attachment (nested);
- 5 % multipart/mixed, a note + a forwarded message/rfc822.

Subjects are sometimes encoded words (RFC 2047, B or Q), sometimes replies
carrying In-Reply-To/References; senders, names, recipients, Cc and dates
(two years, several time zones) vary. Sizes are log-uniform in 2-20 KB.

Searches hit a known fraction: the words of ``MARKERS`` appear only where
each marker says (the decoded Subject, or the top-level text parts), in
exactly the messages with ``index % every == offset``; no other generated
text contains them (the vocabulary and name lists exclude them).
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Literal

MIN_SIZE = 2048
MAX_SIZE = 20480
DEFAULT_SEED = 1
DEFAULT_TO = "user@bench.test"


@dataclass(frozen=True, slots=True)
class Marker:
    """A search word placed in exactly the messages with ``index % every == offset``."""

    word: str
    where: Literal["subject", "body"]  # the decoded Subject, or the top-level text parts
    every: int
    offset: int

    def present(self, index: int) -> bool:
        """Whether message ``index`` carries this word."""
        return index % self.every == self.offset

    def hits(self, count: int) -> int:
        """How many of messages ``0 .. count-1`` carry it."""
        return max(0, (count - self.offset + self.every - 1) // self.every)


MARKERS = (
    Marker("kumquat", "subject", 10, 3),     # 10 % of subjects
    Marker("zeppelin", "subject", 100, 42),  # 1 % of subjects
    Marker("marzipan", "body", 20, 7),       # 5 % of bodies
    Marker("quixotic", "body", 1000, 500),   # 0.1 % of bodies
)
SUBJECT_WORD = MARKERS[0].word
BODY_WORD = MARKERS[2].word

VOCABULARY = (  # common words of office mail; none contains a marker word
    "the of and to in is for that on with as this be by are from at it or have an not we "
    "will can all your our more about which their has one was new time may some other "
    "meeting report project budget review draft schedule office team update plan release "
    "customer order invoice payment account contract delivery shipment warehouse supplier "
    "quarter revenue forecast target market product feature design server network backup "
    "database migration incident outage ticket support request approval deadline agenda "
    "minutes summary proposal estimate quote travel hotel flight conference workshop "
    "training holiday birthday lunch dinner coffee weekend morning afternoon evening "
    "tomorrow yesterday monday tuesday wednesday thursday friday please thanks regards "
    "attached below above following question answer issue problem solution change version "
    "document spreadsheet presentation slides photo picture garden kitchen bicycle river "
    "mountain harbour village station library museum concert theatre football tennis "
    "weather rain sunshine winter summer autumn spring green blue orange yellow purple "
    "quickly slowly carefully finally already still again soon later early late today "
    "important urgent simple clear short long small large first last next previous "
    "should would could might must need want know think see look find give take make "
    "send receive check confirm cancel postpone discuss agree decide prepare finish start"
)
WORDS = tuple(VOCABULARY.split())
NON_ASCII_WORDS = ("café", "Grüße", "naïve", "Überweisung", "résumé", "São Paulo",
                   "Zürich", "fiancée", "Ærø", "smörgåsbord", "Kraków", "日本", "Привет")
FIRST = ("Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan",
         "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor",
         "Walter", "Yvonne", "José", "Zoë", "Łukasz", "Søren", "Amélie", "Jürgen")
LAST = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
        "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green",
        "Hall", "Wood", "Jackson", "Clarke", "Müller", "García", "Dubois", "Kowalski")
DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com", "corp.example",
           "lists.example.org", "shop.example", "university.example.edu", "bank.example")
ATTACHMENTS = (("application/pdf", "pdf"), ("image/png", "png"), ("image/jpeg", "jpg"),
               ("application/zip", "zip"), ("application/octet-stream", "bin"),
               ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"))
MAILERS = ("Thunderbird 128.5.0", "Apple Mail (2.3826)", "Microsoft Outlook 16.0",
           "K-9 Mail 6.9", "Roundcube Webmail/1.6.9", "Mutt/2.2.13")
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
ZONES = tuple(timezone(timedelta(minutes=m)) for m in (0, 60, 120, -300, -420, 330, 540, -180))


def generate(count: int, *, seed: int = DEFAULT_SEED, to: str = DEFAULT_TO,
             start: int = 0) -> Iterator[bytes]:
    """Messages ``start .. start+count-1`` for recipient ``to``, as wire bytes (CRLF)."""
    for index in range(start, start + count):
        yield message(index, seed=seed, to=to)


def message(index: int, *, seed: int = DEFAULT_SEED, to: str = DEFAULT_TO) -> bytes:
    """Message number ``index``; the same arguments always give the same bytes."""
    rng = random.Random(seed * 10_000_019 + index)
    target = int(MIN_SIZE * (MAX_SIZE / MIN_SIZE) ** rng.random())
    state = rng.getstate()
    budget = target - 900  # headers and MIME scaffolding take about this much
    for attempt in range(1, 13):  # bounded; the first correction almost always lands
        rng.setstate(state)
        raw = _build(rng, index, seed, to, max(300, budget))
        if MIN_SIZE <= len(raw) <= MAX_SIZE:
            return raw
        # Move by the miss, more each time: a part's minimum size can absorb small moves.
        budget += (target - len(raw)) * attempt
    raise AssertionError(f"message {index}: no size in range after 12 tries")


def _build(rng: random.Random, index: int, seed: int, to: str, budget: int) -> bytes:
    """One message whose body parts take about ``budget`` bytes."""
    subject_words = [m.word for m in MARKERS if m.where == "subject" and m.present(index)]
    body_words = [m.word for m in MARKERS if m.where == "body" and m.present(index)]
    head = _headers(rng, index, seed, to, subject_words)
    shape = rng.random()
    if shape < 0.50:
        return head + _text_entity(rng, budget, body_words)
    if shape < 0.70:
        return head + _alternative(rng, budget // 2, body_words)
    if shape < 0.85:
        text = rng.randint(300, max(300, budget // 3))
        return head + _mixed(rng, [_text_entity(rng, text, body_words),
                                   _attachment(rng, budget - text)])
    if shape < 0.95:
        text = rng.randint(300, max(300, budget // 4))
        return head + _mixed(rng, [_alternative(rng, text, body_words),
                                   _attachment(rng, budget - 2 * text)])
    note = _text_entity(rng, 300, body_words)
    inner = _forwarded(rng, seed, index, max(600, budget - 400))
    return head + _mixed(rng, [note, b"Content-Type: message/rfc822\r\n"
                                     b"Content-Disposition: inline\r\n\r\n" + inner])


def _address(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = f"{first}.{last}".lower().encode("ascii", "ignore").decode()
    local = "".join(c for c in local if c.isalnum() or c == ".") or "someone"
    return f"{first} {last}", f"{local}@{rng.choice(DOMAINS)}"


def _encode_word(text: str, rng: random.Random) -> str:
    """RFC 2047 encoded words (B or Q) under 76 characters each, never splitting a character."""
    if rng.random() < 0.5:
        pieces = _split(text, 30, lambda ch: len(ch.encode("utf-8")))
        return " ".join(f"=?UTF-8?B?{base64.b64encode(p.encode()).decode()}?=" for p in pieces)
    pieces = _split(text, 45, lambda ch: len(_q(ch)))
    return " ".join("=?UTF-8?Q?" + "".join(_q(ch) for ch in p) + "?=" for p in pieces)


def _q(ch: str) -> str:
    """One character in RFC 2047 Q encoding."""
    if ch == " ":
        return "_"
    if ch.isascii() and (ch.isalnum() or ch in "!*+-/"):
        return ch
    return "".join(f"={b:02X}" for b in ch.encode("utf-8"))


def _split(text: str, limit: int, cost: Callable[[str], int]) -> list[str]:
    """Cut ``text`` between characters so each piece costs at most ``limit``."""
    pieces, current, used = [], "", 0
    for ch in text:
        if current and used + cost(ch) > limit:
            pieces.append(current)
            current, used = "", 0
        current += ch
        used += cost(ch)
    pieces.append(current)
    return pieces


def _display(name: str, addr: str, rng: random.Random) -> str:
    if name.isascii():
        return f'"{name}" <{addr}>' if rng.random() < 0.3 else f"{name} <{addr}>"
    return f"{_encode_word(name, rng)} <{addr}>"


def _fold(name: str, value: str) -> bytes:
    """``Name: value``, folded at spaces before 78 columns where possible."""
    line, lines = f"{name}:", []
    for word in value.split(" "):
        if len(line) + 1 + len(word) > 76 and line.strip() and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _subject(rng: random.Random, markers: list[str]) -> tuple[str, bool]:
    words = rng.choices(WORDS, k=rng.randint(2, 8))
    for word in markers:
        words.insert(rng.randint(0, len(words)), word)
    non_ascii = rng.random() < 0.15
    if non_ascii:
        words.insert(rng.randint(0, len(words)), rng.choice(NON_ASCII_WORDS))
    text = " ".join(words)
    return text[0].upper() + text[1:], non_ascii


def _headers(rng: random.Random, index: int, seed: int, to: str, markers: list[str]) -> bytes:
    name, sender = _address(rng)
    when = (EPOCH + timedelta(seconds=rng.randint(0, 2 * 365 * 86400))).astimezone(
        rng.choice(ZONES))
    domain = sender.split("@", 1)[1]
    subject, non_ascii = _subject(rng, markers)
    reply = rng.random() < 0.25
    if reply:
        subject = ("Re: " if rng.random() < 0.8 else "Fwd: ") + subject
    # Non-ASCII subjects are encoded; some senders encode even plain ASCII ones.
    encode = non_ascii or rng.random() < 0.05
    subject_field = _encode_word(subject, rng) if encode else subject
    received = (f"from {domain} ({domain} [192.0.2.{rng.randint(1, 254)}]) by mx.bench.test "
                f"with ESMTPS id {rng.getrandbits(48):012x} for <{to}>; "
                f"{format_datetime(when + timedelta(seconds=rng.randint(1, 90)))}")
    out = [_fold("Received", received), _fold("From", _display(name, sender, rng))]
    recipients = [to]
    if rng.random() < 0.3:
        recipients += [_display(*_address(rng), rng) for _ in range(rng.randint(1, 4))]
    out.append(_fold("To", ", ".join(recipients)))
    if rng.random() < 0.2:
        out.append(_fold("Cc", ", ".join(_display(*_address(rng), rng)
                                         for _ in range(rng.randint(1, 3)))))
    out.append(_fold("Subject", subject_field))
    out.append(_fold("Date", format_datetime(when)))
    out.append(_fold("Message-ID", f"<{seed}.{index}.{rng.getrandbits(32):08x}@{domain}>"))
    if reply:
        earlier = rng.randint(0, max(0, index - 1))
        parent = f"<{seed}.{earlier}.{rng.getrandbits(32):08x}@{domain}>"
        out.append(_fold("In-Reply-To", parent))
        out.append(_fold("References", parent))
    if rng.random() < 0.5:
        out.append(_fold("X-Mailer", rng.choice(MAILERS)))
    if rng.random() < 0.1:
        out.append(_fold("List-Id", f"Team news <news.{domain}>"))
    out.append(b"MIME-Version: 1.0\r\n")
    return b"".join(out)


def _paragraphs(rng: random.Random, size: int, markers: list[str]) -> bytes:
    """Plain text of about ``size`` bytes in lines under 78 columns, markers placed inside."""
    words = rng.choices(WORDS, k=max(8, size // 6))
    for word in markers:
        words.insert(rng.randint(0, len(words)), word)
    if rng.random() < 0.3:
        words.insert(rng.randint(0, len(words)), rng.choice(NON_ASCII_WORDS))
    lines, line = [], ""
    for n, word in enumerate(words):
        if len(line) + len(word) + 1 > 72:
            lines.append(line)
            line = ""
            if n % 11 == 0:
                lines.append("")
        line = f"{line} {word}" if line else word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _text_entity(rng: random.Random, size: int, markers: list[str]) -> bytes:
    """A text/plain entity (headers + body): 7/8-bit or quoted-printable."""
    text = _paragraphs(rng, size, markers)
    if text.isascii():
        return b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text
    if rng.random() < 0.5:
        return (b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text)
    return (b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + binascii.b2a_qp(text, istext=True))


def _html_entity(text: bytes) -> bytes:
    paragraphs = text.replace(b"&", b"&amp;").replace(b"<", b"&lt;").split(b"\r\n\r\n")
    html = b"<html><body>\r\n" + b"".join(
        b"<p>" + p.strip() + b"</p>\r\n" for p in paragraphs if p.strip()) + b"</body></html>\r\n"
    return (b"Content-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + binascii.b2a_qp(html, istext=True))


def _boundary(rng: random.Random) -> bytes:
    return f"=_bench_{rng.getrandbits(64):016x}".encode()


def _multipart(rng: random.Random, subtype: bytes, parts: list[bytes]) -> bytes:
    boundary = _boundary(rng)
    out = [b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary + b'"\r\n\r\n',
           b"This is a multi-part message in MIME format.\r\n"]
    for part in parts:
        out.append(b"--" + boundary + b"\r\n" + part + b"\r\n")
    out.append(b"--" + boundary + b"--\r\n")
    return b"".join(out)


def _alternative(rng: random.Random, size: int, markers: list[str]) -> bytes:
    plain = _paragraphs(rng, size, markers)
    text = (b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + plain)
    return _multipart(rng, b"alternative", [text, _html_entity(plain)])


def _mixed(rng: random.Random, parts: list[bytes]) -> bytes:
    return _multipart(rng, b"mixed", parts)


def _attachment(rng: random.Random, size: int) -> bytes:
    """A base64 attachment whose encoded form is about ``size`` bytes."""
    mime, ext = rng.choice(ATTACHMENTS)
    data = rng.randbytes(max(64, size * 3 // 4 - 200))
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    name = f"{rng.choice(WORDS)}-{rng.randint(1, 999)}.{ext}"
    return (f'Content-Type: {mime}; name="{name}"\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + encoded


def _forwarded(rng: random.Random, seed: int, index: int, size: int) -> bytes:
    """A simple complete message (headers + text) to attach as message/rfc822."""
    inner_rng = random.Random(rng.getrandbits(64))
    head = _headers(inner_rng, index, seed, _address(inner_rng)[1], [])
    return head + _text_entity(inner_rng, max(200, size - len(head) - 80), [])
