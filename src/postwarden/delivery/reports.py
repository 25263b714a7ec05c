"""Delivery status notifications (RFC 3464 multipart/report, RFC 3461 options).

Pure: the facts about one message and its recipients in, the report's bytes
out. The queue manager sends the result back through the intake with the null
sender, so a report that cannot be delivered never causes another report.

Composed by hand rather than with ``email.generator`` because the original
message must be quoted byte for byte (RET=FULL), never re-folded.
"""

from __future__ import annotations

import email.utils
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

_ENHANCED = re.compile(r"\A([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class Action(enum.Enum):
    """RFC 3464 §2.3.3 actions this server reports."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"  # handed to a server without DSN: it will not report back


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What happened to one recipient, for its per-recipient DSN fields."""

    address: str
    orcpt: str | None
    action: Action
    status: str  # RFC 3463 code, e.g. "5.7.1"
    reply: str | None  # the diagnostic, verbatim (e.g. "550 5.7.1 Unable to relay")
    remote_mta: str | None  # set when ``reply`` came from that server
    last_attempt: float
    will_retry_until: float | None = None


@dataclass(frozen=True, slots=True)
class ReportInput:
    """The message being reported on, and who reports."""

    hostname: str
    sender: str  # the envelope sender, the report's recipient
    envid: str | None
    ret: str | None  # "FULL" | "HDRS" | None
    arrival: float
    original: bytes


def status_of(reply: str) -> str:
    """The enhanced status of a reply, or one derived from its code class."""
    match = _ENHANCED.match(reply)
    if match and match.group(1) == match.group(2)[0]:
        return match.group(2)
    return f"{reply[:1] if reply[:1] in ('2', '4', '5') else '4'}.0.0"


def permanent_status(status: str) -> str:
    """The same detail as a permanent status (an expired 4.4.1 is reported 5.4.1)."""
    return "5" + status[1:] if status.startswith("4") else status


def _clean(text: str) -> str:
    """One header-safe line: remote replies are multi-line and untrusted."""
    return _CONTROL.sub(" ", text).strip()


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, localtime=False)


_SUBJECTS = {
    Action.FAILED: "Undelivered Mail Returned to Sender",
    Action.DELAYED: "Delayed Mail (still being retried)",
    Action.DELIVERED: "Successful Mail Delivery Report",
    Action.RELAYED: "Successful Mail Delivery Report",
}

_INTRO = {
    Action.FAILED: "I'm sorry to have to inform you that your message could not\r\n"
    "be delivered to one or more recipients. It is attached below.",
    Action.DELAYED: "Your message could not be delivered yet to one or more\r\n"
    "recipients. I will keep trying; you do not need to send it again.",
    Action.DELIVERED: "Your message was delivered to the recipients listed below.",
    Action.RELAYED: "Your message was delivered to the recipients' mail servers,\r\n"
    "which do not send delivery notifications themselves.",
}


def _human_part(info: ReportInput, action: Action, rcpts: Sequence[RecipientReport]) -> str:
    lines = [
        f"This is the mail system at host {info.hostname}.",
        "",
        _INTRO[action],
        "",
    ]
    for r in rcpts:
        where = f" (host {r.remote_mta} said: {_clean(r.reply)})" if r.remote_mta and r.reply else (
            f" ({_clean(r.reply)})" if r.reply else ""
        )
        lines.append(f"<{_clean(r.address)}>{where}")
    return "\r\n".join(lines) + "\r\n"


def _status_part(info: ReportInput, rcpts: Sequence[RecipientReport]) -> str:
    fields = [f"Reporting-MTA: dns; {info.hostname}"]
    if info.envid:
        fields.append(f"Original-Envelope-Id: {_clean(info.envid)}")
    fields.append(f"Arrival-Date: {_date(info.arrival)}")
    blocks = ["\r\n".join(fields)]
    for r in rcpts:
        f = []
        if r.orcpt:
            orcpt = _clean(r.orcpt)
            f.append(f"Original-Recipient: {orcpt if ';' in orcpt else 'rfc822; ' + orcpt}")
        f.append(f"Final-Recipient: rfc822; {_clean(r.address)}")
        f.append(f"Action: {r.action.value}")
        f.append(f"Status: {r.status}")
        if r.remote_mta:
            f.append(f"Remote-MTA: dns; {_clean(r.remote_mta)}")
        if r.reply:
            kind = "smtp" if r.remote_mta else "X-Postwarden"
            f.append(f"Diagnostic-Code: {kind}; {_clean(r.reply)}")
        f.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if r.will_retry_until is not None:
            f.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")
        blocks.append("\r\n".join(f))
    return "\r\n\r\n".join(blocks) + "\r\n"


def _headers_of(message: bytes) -> bytes:
    match = _HEADER_END.search(message)
    return message if match is None else message[: match.start()] + b"\r\n"


def compose_report(
    info: ReportInput,
    action: Action,
    recipients: Sequence[RecipientReport],
    *,
    now: float,
    boundary: str,
    message_id: str,
) -> bytes:
    """A complete RFC 3464 report, ready for the intake.

    The original goes back whole only for failures without RET=HDRS;
    delay and success notices carry the headers alone (RFC 3461 §4.3).
    """
    full = action is Action.FAILED and (info.ret or "FULL").upper() != "HDRS"
    original = info.original if full else _headers_of(info.original)
    eight_bit = not original.isascii()
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{info.hostname}>\r\n"
        f"To: <{_clean(info.sender)}>\r\n"
        f"Subject: {_SUBJECTS[action]}\r\n"
        f"Date: {_date(now)}\r\n"
        f"Message-ID: {message_id}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Description: Notification\r\n"
        "\r\n"
        f"{_human_part(info, action, recipients)}"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n"
        "Content-Description: Delivery report\r\n"
        "\r\n"
        f"{_status_part(info, recipients)}"
        "\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: {'message/rfc822' if full else 'text/rfc822-headers'}\r\n"
        f"Content-Description: {'Undelivered Message' if full else 'Message Headers'}\r\n"
        + ("Content-Transfer-Encoding: 8bit\r\n" if eight_bit else "")
        + "\r\n"
    ).encode("utf-8")
    if not original.endswith(b"\r\n"):
        original += b"\r\n"
    return head + original + f"\r\n--{boundary}--\r\n".encode("ascii")
