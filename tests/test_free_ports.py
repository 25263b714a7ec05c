"""The tests' own port picker: a port it named once is never named again in the run."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

import serverproc
from serverproc import free_ports, worker_ports


def test_a_port_is_never_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pebble's ports and the ones its test's server will bind are picked one after
    another while none is bound yet: the same random draw must still give new ports."""
    first_in_range = list(worker_ports())[:200]

    def same_draw(population: Sequence[int], k: int) -> list[int]:
        return first_in_range[:k]

    monkeypatch.setattr(random, "sample", same_draw)
    monkeypatch.setattr(serverproc, "_GIVEN", set())
    one, two = free_ports(2), free_ports(2)
    assert len(set(one + two)) == 4
