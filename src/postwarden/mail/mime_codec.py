"""A `MessageStructure` to compact bytes and back, for the store's parsed cache.

JSON arrays in a fixed field order (no keys), ASCII only: surrogate-escaped
8-bit header bytes survive as ``\\udcXX`` escapes. The first element is a
format version; `loads` raises ValueError for anything it did not write, so
the store can re-parse the message instead of trusting a damaged row.
"""

from __future__ import annotations

import json
from typing import Any

from postwarden.mail.addresslist import EnvelopeAddress
from postwarden.mail.mime import MessageEnvelope, MessageStructure, MimePart
from postwarden.mail.mime_headers import MimeParam

FORMAT = 1


def dumps(structure: MessageStructure) -> bytes:
    """The structure as compact ASCII JSON."""
    value = [
        FORMAT,
        structure.size,
        _part(structure.root),
        _envelope(structure.envelope),
        [list(pair) for pair in structure.fields],
        int(structure.degraded),
    ]
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def loads(data: bytes) -> MessageStructure:
    """The structure `dumps` wrote; ValueError for anything else.

    Field types are trusted as JSON gives them back (the row is ours and
    versioned); a row of the wrong shape is a ValueError.
    """
    value = _value(data)
    try:
        return MessageStructure(value[1], _unpart(value[2]), _unenvelope(value[3]),
                                tuple((k, v) for k, v in value[4]), bool(value[5]))
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"damaged structure: {exc}") from None


def loads_envelope(data: bytes) -> MessageEnvelope:
    """Only the envelope of a stored structure (FETCH ENVELOPE needs no more)."""
    value = _value(data)
    try:
        return _unenvelope(value[3])
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"damaged structure: {exc}") from None


def _value(data: bytes) -> Any:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"damaged structure: {exc}") from None
    if not isinstance(value, list) or len(value) != 6 or value[0] != FORMAT:
        raise ValueError("damaged structure: not a format-1 row")
    return value


def _params(params: tuple[MimeParam, ...]) -> list[list[str]]:
    return [[p.name, p.value] if p.language is None else [p.name, p.value, p.language]
            for p in params]


def _unparams(value: list[list[str]]) -> tuple[MimeParam, ...]:
    return tuple(MimeParam(*item[:3]) for item in value)


def _part(part: MimePart) -> list[Any]:
    return [
        part.header_start, part.body_start, part.end, part.body_lines,
        part.media_type, part.media_subtype, _params(part.params),
        part.content_id, part.description, part.encoding, part.md5,
        part.disposition, _params(part.disposition_params), part.language,
        part.location, [_part(child) for child in part.children],
        _envelope(part.envelope) if part.envelope is not None else None,
        int(part.defaulted),
    ]


def _unpart(v: list[Any]) -> MimePart:
    if len(v) != 18:
        raise ValueError("a part of the wrong length")
    return MimePart(
        v[0], v[1], v[2], v[3], v[4], v[5], _unparams(v[6]), v[7], v[8], v[9], v[10], v[11],
        _unparams(v[12]), tuple(v[13]), v[14], tuple(_unpart(child) for child in v[15]),
        None if v[16] is None else _unenvelope(v[16]), bool(v[17]),
    )


def _addresses(addresses: tuple[EnvelopeAddress, ...]) -> list[list[str | None]]:
    return [[a.name, a.adl, a.mailbox, a.host] for a in addresses]


def _unaddresses(value: list[list[str | None]]) -> tuple[EnvelopeAddress, ...]:
    return tuple(EnvelopeAddress(*a[:4]) for a in value)


def _envelope(env: MessageEnvelope) -> list[Any]:
    return [
        env.date, env.subject, _addresses(env.from_), _addresses(env.sender),
        _addresses(env.reply_to), _addresses(env.to), _addresses(env.cc), _addresses(env.bcc),
        env.in_reply_to, env.message_id,
    ]


def _unenvelope(v: list[Any]) -> MessageEnvelope:
    if len(v) != 10:
        raise ValueError("an envelope of the wrong length")
    return MessageEnvelope(
        v[0], v[1], _unaddresses(v[2]), _unaddresses(v[3]), _unaddresses(v[4]),
        _unaddresses(v[5]), _unaddresses(v[6]), _unaddresses(v[7]), v[8], v[9],
    )
