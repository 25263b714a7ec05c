"""Argument syntax of MAIL FROM and RCPT TO: the path and the ESMTP parameters.

Each parser returns a value or the Reply that refuses the command, so the
machine never has to know which RFC a parameter came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postwarden.mail.reply import PARAM_NOT_RECOGNISED, PARAM_SYNTAX, Reply

_KEYWORD = re.compile(r"[A-Z0-9][A-Z0-9-]*\Z")
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+\Z")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
_SIZE = re.compile(r"[0-9]{1,20}\Z")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
MAX_ENVID = 100  # RFC 3461 §4.4
NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


def decode_xtext(text: str) -> str | None:
    """RFC 3461 §4 xtext to text (``+XX`` escapes, UTF-8), or None if invalid."""
    if not _XTEXT.match(text):
        return None
    raw = _HEXCHAR.sub(lambda m: chr(int(m[1], 16)), text).encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def encode_xtext(text: str) -> str:
    """Text to RFC 3461 §4 xtext, for passing ENVID and ORCPT on to the next server.

    Everything but printable ASCII other than ``+`` and ``=`` becomes ``+XX``
    (per UTF-8 byte), so a decoded value can never carry a line break or a
    space into the command it is written into.
    """
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D) else f"+{b:02X}"
        for b in text.encode("utf-8")
    )


def _path_end(text: str) -> int:
    """Index of the ``>`` closing the path that ``text`` starts with, or -1."""
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return i
    return -1


def split_path(arg: str, keyword: str) -> tuple[str, str] | None:
    """``FROM:<path> params`` -> (``<path>``, ``params``); None without ``keyword``.

    Spaces after the colon are tolerated (many clients send one). A path
    that does not end where the parameters begin is returned whole, so that
    address parsing refuses it.
    """
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].lstrip(" ")
    end = _path_end(rest) if rest.startswith("<") else -1
    if end < 0:
        path, _, params = rest.partition(" ")
        return path, params
    params = rest[end + 1 :]
    if params and not params.startswith(" "):
        return rest, ""
    return rest[: end + 1], params


def _keywords(text: str) -> dict[str, str | None] | Reply:
    found: dict[str, str | None] = {}
    for token in text.split(" "):
        if not token:
            continue
        key, eq, value = token.partition("=")
        key = key.upper()
        if not _KEYWORD.match(key) or key in found:
            return PARAM_SYNTAX
        found[key] = value if eq else None
    return found


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value.upper() if value is not None and value.upper() in allowed else None


def parse_mail_params(text: str) -> MailParams | Reply:
    """The parameters after MAIL FROM:<path>; SIZE is checked by the caller."""
    found = _keywords(text)
    if isinstance(found, Reply):
        return found
    size: int | None = None
    body = ret = envid = auth = None
    smtputf8 = False
    for key, value in found.items():
        match key:
            case "SIZE":
                if value is None or not _SIZE.match(value):
                    return PARAM_SYNTAX
                size = int(value)
            case "BODY":
                body = _choice(value, ("7BIT", "8BITMIME"))
                if body is None:
                    return PARAM_SYNTAX
            case "SMTPUTF8":
                if value is not None:
                    return PARAM_SYNTAX
                smtputf8 = True
            case "RET":
                ret = _choice(value, ("FULL", "HDRS"))
                if ret is None:
                    return PARAM_SYNTAX
            case "ENVID":
                envid = decode_xtext(value or "")
                if envid is None or len(envid) > MAX_ENVID:
                    return PARAM_SYNTAX
            case "AUTH":
                auth = decode_xtext(value or "")
                if auth is None:
                    return PARAM_SYNTAX
            case _:
                return PARAM_NOT_RECOGNISED
    return MailParams(size, body, smtputf8, ret, envid, auth)


def _notify(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    items = tuple(item.upper() for item in value.split(","))
    if items == ("NEVER",):
        return items
    if len(set(items)) != len(items) or not set(items) <= NOTIFY_VALUES:
        return None
    return items


def _orcpt(value: str | None) -> str | None:
    addr_type, semicolon, xtext = (value or "").partition(";")
    if not semicolon or not _ADDR_TYPE.match(addr_type):
        return None
    decoded = decode_xtext(xtext)
    return None if decoded is None else f"{addr_type};{decoded}"


def parse_rcpt_params(text: str) -> RcptParams | Reply:
    """The RFC 3461 parameters after RCPT TO:<path>."""
    found = _keywords(text)
    if isinstance(found, Reply):
        return found
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    for key, value in found.items():
        match key:
            case "NOTIFY":
                parsed = _notify(value)
                if parsed is None:
                    return PARAM_SYNTAX
                notify = parsed
            case "ORCPT":
                orcpt = _orcpt(value)
                if orcpt is None:
                    return PARAM_SYNTAX
            case _:
                return PARAM_NOT_RECOGNISED
    return RcptParams(notify, orcpt)
