"""Blocking-style store code run natively on the event loop: a greenlet bridge.

The store's queries (``storage/sql`` and the PostgreSQL parts) are written
once, against a blocking connection, because SQLite has no other kind and
the CLI wants no event loop. On the event loop the very same code runs in a
greenlet: where it would block on PostgreSQL it hands psycopg's awaitable to
the loop (``await_only``), which awaits it like any coroutine and resumes
the greenlet with the result. So the servers' database I/O is asyncio on
psycopg's async pool (no thread, no second copy of every query), while the
code reads as plain sequential statements.

This is the technique of SQLAlchemy's asyncio extension. Its helpers are not
a public API of any library made for this alone, and they are a few lines
over ``greenlet`` (the well-kept primitive both use), so they are here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, TypeVar, cast

import greenlet

T = TypeVar("T")


class _Bridged(greenlet.greenlet):  # type: ignore[misc]  # greenlet ships no stubs for subclassing
    """A greenlet started by ``run``: its parent is the task awaiting it."""


def bridged() -> bool:
    """Whether this code runs inside ``run`` (so on the event loop, may ``await_only``)."""
    return isinstance(greenlet.getcurrent(), _Bridged)


def await_only(awaitable: Awaitable[T]) -> T:
    """The result of ``awaitable``, awaited by the event loop while this greenlet waits."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Bridged):
        raise RuntimeError("await_only outside a bridged store call")
    return cast(T, current.parent.switch(awaitable))


async def run(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a bridged greenlet; what it awaits is awaited here.

    An exception from an awaitable (cancellation too) is thrown into the
    greenlet at the point that waited, so its ``with`` blocks unwind as in
    blocking code (returning connections, rolling back) before it reaches
    the caller.
    """
    child = _Bridged(func, greenlet.getcurrent())
    step: Any = child.switch(*args)
    while not child.dead:
        try:
            value = await step
        except BaseException as exc:
            step = child.throw(exc)
        else:
            step = child.switch(value)
    return cast(T, step)


def blocking(func: Callable[..., T], *args: Any) -> T:
    """A call that blocks in a library with no asyncio API (boto3 for S3): on a
    thread when bridged, so the loop goes on meanwhile; called directly otherwise."""
    if not bridged():
        return func(*args)
    return await_only(asyncio.get_running_loop().run_in_executor(None, func, *args))


@contextmanager
def entered(manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """An async context manager used as a blocking one, from bridged code."""
    value = await_only(manager.__aenter__())
    try:
        yield value
    except BaseException as exc:
        if not await_only(manager.__aexit__(type(exc), exc, exc.__traceback__)):
            raise
    else:
        await_only(manager.__aexit__(None, None, None))
