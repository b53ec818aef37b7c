"""The request stream: every reason to act, from every producer, consumed by one loop.

Producers are file changes (the watcher), triggers from any thread or a signal handler
(``request_reload``), the child's own messages, crash restarts and child exits. They only put
a :class:`Request` on the stream; the loop in ``_loop`` takes one, drains whatever else is
pending, and acts once for all of them. A caller of ``Supervisor.reload()`` holds a
:class:`Ticket` that the reload its request joined settles.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, final

import anyio

from ._types import ReloadReason

if TYPE_CHECKING:
    from ._childproc import ChildProcess

__all__ = [
    "BeforeReload",
    "Kind",
    "ReloadRequest",
    "Request",
    "RequestStream",
    "Ticket",
    "thread_safe_scheduler",
]


@final
@dataclass(frozen=True)
class ReloadRequest:
    """What a ``before_reload`` hook is told about the reload it may cancel.

    Attributes:
        reason: The first reason gathered into this reload.
        changes: Changed paths gathered so far, sorted.
    """

    reason: ReloadReason
    changes: tuple[str, ...]


BeforeReload = Callable[[ReloadRequest], "bool | Awaitable[bool | None] | None"]
"""A hook run before the old child is stopped; returning ``False`` cancels the reload."""


@final
class Kind(enum.Enum):
    """What a request asks for."""

    RELOAD = "reload"
    """Start a new child (``reason`` says why)."""
    EXITED = "exited"
    """``origin`` exited (its follower noticed); not a reload by itself."""


@final
@dataclass(eq=False)
class Ticket:
    """A caller waiting for the reload its request joins."""

    done: anyio.Event = field(default_factory=anyio.Event)
    started: ChildProcess | None = None
    """The child that reload started; ``None`` when it was cancelled or could not spawn."""
    closed: bool = False
    """The supervisor ended before the reload could happen."""

    def settle(self, started: ChildProcess | None, *, closed: bool = False) -> None:
        """Record the outcome and wake the caller (the first outcome wins)."""
        if not self.done.is_set():
            self.started = started
            self.closed = closed
            self.done.set()


@final
@dataclass(frozen=True, eq=False)
class Request:
    """One reason to act.

    Attributes:
        kind: Reload, or a child's exit.
        reason: Why a reload is wanted.
        changes: Changed paths behind it.
        ticket: Settled by the reload this request joins.
        origin: The child a child-originated request (its trigger, its crash restart, its
            exit) is about; stale when that child is no longer the current one.
    """

    kind: Kind
    reason: ReloadReason = ReloadReason.TRIGGER
    changes: frozenset[str] = frozenset()
    ticket: Ticket | None = None
    origin: ChildProcess | None = None


@final
class RequestStream:
    """An unbounded stream of requests with one consumer.

    :meth:`put` is for the event loop's thread; :meth:`put_threadsafe` for any thread and
    for signal handlers (it only schedules the put on the loop).
    """

    def __init__(self) -> None:
        self._schedule: Callable[[Callable[[], object]], None] | None = None

    def bind(self) -> None:
        """Open the stream in the running event loop (remembered for :meth:`put_threadsafe`)."""
        self._send, self._receive = anyio.create_memory_object_stream[Request](float("inf"))
        self._schedule = thread_safe_scheduler()

    def put(self, request: Request) -> None:
        """Add ``request`` (from the event loop's thread); dropped once the stream is closed."""
        try:
            self._send.send_nowait(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            if request.ticket is not None:
                request.ticket.settle(None, closed=True)

    def put_threadsafe(self, request: Request) -> bool:
        """Add ``request`` from any thread; ``False`` when the stream is not bound to a loop."""
        schedule = self._schedule
        if schedule is None:
            return False
        try:
            schedule(lambda: self.put(request))
        except RuntimeError:  # the loop has closed meanwhile
            return False
        return True

    async def take(self) -> Request:
        """Wait for the next request."""
        return await self._receive.receive()

    def drain(self) -> list[Request]:
        """Every request pending now, without waiting."""
        pending = []
        while True:
            try:
                pending.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return pending

    def close(self) -> None:
        """Refuse further requests; settle the tickets of those still pending as not reloaded."""
        self._schedule = None
        self._send.close()
        for request in self.drain():
            if request.ticket is not None:
                request.ticket.settle(None, closed=True)
        self._receive.close()


def thread_safe_scheduler() -> Callable[[Callable[[], object]], None]:
    """A callable that runs a function soon on the current event loop, from any thread."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        import trio

        token = trio.lowlevel.current_trio_token()

        def on_trio(callback: Callable[[], object]) -> None:
            token.run_sync_soon(callback)

        return on_trio

    def on_asyncio(callback: Callable[[], object]) -> None:
        loop.call_soon_threadsafe(callback)

    return on_asyncio
