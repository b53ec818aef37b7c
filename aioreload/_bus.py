"""The event bus: lifecycle events fanned out to every subscriber, buffered, none lost."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._types import EventKind, SupervisorClosedError, SupervisorEvent

__all__ = ["EventBus", "EventStream"]

logger = logging.getLogger(__name__)


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


@final
class EventBus:
    """Hands each event to every open subscription; closing ends them all."""

    def __init__(self) -> None:
        self._subscribers: list[MemoryObjectSendStream[SupervisorEvent]] = []
        self._closed = False

    def subscribe(self) -> EventStream:
        """A new subscription that sees every event from now on."""
        send, receive = anyio.create_memory_object_stream[SupervisorEvent](float("inf"))
        if self._closed:
            send.close()
        else:
            self._subscribers.append(send)
        return EventStream(receive)

    def emit(self, event: SupervisorEvent) -> None:
        """Deliver ``event`` to every subscriber; drop the ones that were closed."""
        logger.debug("%s", event)
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                send.close()
                self._subscribers.remove(send)

    def close(self) -> None:
        """End every subscription (iteration stops once the buffered events are read)."""
        self._closed = True
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()
