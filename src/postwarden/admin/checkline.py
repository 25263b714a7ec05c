"""One line of ``postwarden check``: a status, what was looked at, and the fix."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Line:
    status: Status
    topic: str  # "mx example.org", "certificate", ...
    detail: str  # what was found
    fix: str = ""  # what to do about it (empty when OK)

    def render(self) -> str:
        text = f"{self.status.value:<4}  {self.topic}: {self.detail}"
        return f"{text} -- fix: {self.fix}" if self.fix else text


def ok(topic: str, detail: str) -> Line:
    return Line(Status.OK, topic, detail)


def warn(topic: str, detail: str, fix: str) -> Line:
    return Line(Status.WARN, topic, detail, fix)


def fail(topic: str, detail: str, fix: str) -> Line:
    return Line(Status.FAIL, topic, detail, fix)
