"""What a supervisor tells its users: the event stream, and what a ``before_reload`` hook gets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ._types import EventKind, ReloadReason, SupervisorClosedError, SupervisorEvent

__all__ = ["BeforeReload", "EventStream", "ReloadRequest", "thread_safe_scheduler"]


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
class EventStream:
    """A subscription to a supervisor's lifecycle events.

    Iterate it with ``async for``; use it as a context manager (``with sup.events() as events``)
    so it is closed when you are done. Events are buffered, none is lost; iteration ends when
    the supervisor closes.
    """

    def __init__(self, receive: MemoryObjectReceiveStream[SupervisorEvent]) -> None:
        self._receive = receive

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[SupervisorEvent]:
        return self

    async def __anext__(self) -> SupervisorEvent:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def next(self, kind: EventKind | None = None) -> SupervisorEvent:
        """The next event (of ``kind``, skipping others).

        Raises:
            SupervisorClosedError: the supervisor closed first.
        """
        async for event in self:
            if kind is None or event.kind is kind:
                return event
        raise SupervisorClosedError(f"the supervisor closed before a {kind or 'new'} event")

    def close(self) -> None:
        """Stop receiving events."""
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
