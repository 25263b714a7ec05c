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
    """The structure `dumps` wrote; ValueError for anything else."""
    try:
        value = json.loads(data)
        if value[0] != FORMAT:
            raise ValueError(f"unknown structure format {value[0]!r}")
        return MessageStructure(
            size=int(value[1]),
            root=_unpart(value[2]),
            envelope=_unenvelope(value[3]),
            fields=tuple((str(k), str(v)) for k, v in value[4]),
            degraded=bool(value[5]),
        )
    except (TypeError, IndexError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"damaged structure: {exc}") from None


def _params(params: tuple[MimeParam, ...]) -> list[list[str]]:
    return [[p.name, p.value] if p.language is None else [p.name, p.value, p.language]
            for p in params]


def _unparams(value: Any) -> tuple[MimeParam, ...]:
    return tuple(MimeParam(*(str(x) for x in item[:3])) for item in value)


def _part(part: MimePart) -> list[Any]:
    return [
        part.header_start, part.body_start, part.end, part.body_lines,
        part.media_type, part.media_subtype, _params(part.params),
        part.content_id, part.description, part.encoding, part.md5,
        part.disposition, _params(part.disposition_params), list(part.language),
        part.location, [_part(child) for child in part.children],
        _envelope(part.envelope) if part.envelope is not None else None,
        int(part.defaulted),
    ]


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _unpart(v: Any) -> MimePart:
    return MimePart(
        header_start=int(v[0]), body_start=int(v[1]), end=int(v[2]), body_lines=int(v[3]),
        media_type=str(v[4]), media_subtype=str(v[5]), params=_unparams(v[6]),
        content_id=_opt(v[7]), description=_opt(v[8]), encoding=_opt(v[9]), md5=_opt(v[10]),
        disposition=_opt(v[11]), disposition_params=_unparams(v[12]),
        language=tuple(str(x) for x in v[13]), location=_opt(v[14]),
        children=tuple(_unpart(child) for child in v[15]),
        envelope=_unenvelope(v[16]) if v[16] is not None else None,
        defaulted=bool(v[17]),
    )


def _addresses(addresses: tuple[EnvelopeAddress, ...]) -> list[list[str | None]]:
    return [[a.name, a.adl, a.mailbox, a.host] for a in addresses]


def _unaddresses(value: Any) -> tuple[EnvelopeAddress, ...]:
    return tuple(EnvelopeAddress(_opt(a[0]), _opt(a[1]), _opt(a[2]), _opt(a[3])) for a in value)


def _envelope(env: MessageEnvelope) -> list[Any]:
    return [
        env.date, env.subject, _addresses(env.from_), _addresses(env.sender),
        _addresses(env.reply_to), _addresses(env.to), _addresses(env.cc), _addresses(env.bcc),
        env.in_reply_to, env.message_id,
    ]


def _unenvelope(v: Any) -> MessageEnvelope:
    return MessageEnvelope(
        date=_opt(v[0]), subject=_opt(v[1]), from_=_unaddresses(v[2]),
        sender=_unaddresses(v[3]), reply_to=_unaddresses(v[4]), to=_unaddresses(v[5]),
        cc=_unaddresses(v[6]), bcc=_unaddresses(v[7]), in_reply_to=_opt(v[8]),
        message_id=_opt(v[9]),
    )
