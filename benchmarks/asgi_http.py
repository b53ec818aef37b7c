"""The ASGI scenario's HTTP clients: one request per TCP connection, as a browser reload does.

Every request opens a new connection to 127.0.0.1, sends ``GET`` with ``Connection: close``
and reads until the server closes; its latency runs from before ``connect`` until the response
is complete (or the request failed). The clients run in the harness's asyncio loop.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 5.0  # a request not complete by then is a failure ("timeout")
POLL_INTERVAL = 0.005  # between polls, and between open-loop poll starts
RETRY_PAUSE = 0.005  # a load client's pause after a failed request (so a refusing port is not spun on)
LOAD_PATHS = ("/", "/owners")  # the load alternates: the version, and a database read


@dataclass(frozen=True)
class Reply:
    """One request's outcome: ``status`` 200 etc., or ``error`` (refused, reset, timeout...)."""

    path: str
    status: int | None
    body: bytes
    error: str | None
    began_ns: int
    ended_ns: int

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def ms(self) -> float:
        return (self.ended_ns - self.began_ns) / 1e6

    @property
    def failure(self) -> str | None:
        """What went wrong, for the failure counts: ``None`` for a 200."""
        if self.ok:
            return None
        return self.error or f"HTTP {self.status}"

    def version(self) -> int | None:
        """The VERSION a ``GET /`` answered, if this is one."""
        if self.path != "/" or not self.ok:
            return None
        try:
            return int(self.body)
        except ValueError:
            return None


async def _exchange(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()  # until the server closes
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionAbortedError("closed without a response" if not data else "malformed response")
    return int(parts[1]), body


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionAbortedError):
        return str(exc) or "aborted"
    return type(exc).__name__


async def get(port: int, path: str = "/", timeout: float = REQUEST_TIMEOUT) -> Reply:
    began = time.monotonic_ns()
    try:
        status, body = await asyncio.wait_for(_exchange(port, path), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return Reply(path, None, b"", _error_name(exc), began, time.monotonic_ns())
    return Reply(path, status, body, None, began, time.monotonic_ns())


async def until_version(port: int, want: int, timeout: float) -> tuple[Reply | None, list[Reply]]:
    """Poll ``GET /`` (one client, ``POLL_INTERVAL`` between polls) until it answers ``want``.

    Returns that reply (``None`` after ``timeout`` seconds) and every poll made.
    """
    deadline = time.monotonic() + timeout
    polls: list[Reply] = []
    while (left := deadline - time.monotonic()) > 0:
        reply = await get(port, "/", min(REQUEST_TIMEOUT, left))
        polls.append(reply)
        if reply.version() == want:
            return reply, polls
        await asyncio.sleep(POLL_INTERVAL)
    return None, polls


async def open_loop(port: int, seconds: float) -> list[Reply]:
    """Start a ``GET /`` every ``POLL_INTERVAL`` for ``seconds``, whether or not earlier ones
    were answered (each with the usual timeout); every reply, once all have ended."""
    began = time.monotonic()
    tasks: list[asyncio.Task[Reply]] = []
    while time.monotonic() - began < seconds:
        tasks.append(asyncio.create_task(get(port, "/")))
        await asyncio.sleep(max(0.0, began + len(tasks) * POLL_INTERVAL - time.monotonic()))
    return list(await asyncio.gather(*tasks))


@dataclass
class LoadStats:
    replies: int = 0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)  # every request, failed ones too
    stale: int = 0  # "/" answered with an older version than one already served before it began

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


class Load:
    """``clients`` concurrent clients requesting ``LOAD_PATHS`` in turn until ``stop()``."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.stats = LoadStats()
        self.newest = -1  # the newest version any load request got
        self.first_seen_ns = 0  # when the first response carrying it ended
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, index: int) -> None:
        turn = index
        while not self._stopping.is_set():
            path = LOAD_PATHS[turn % len(LOAD_PATHS)]
            turn += 1
            newest_before = self.newest
            reply = await get(self.port, path)
            self.stats.replies += 1
            self.stats.latencies_ms.append(reply.ms)
            failure = reply.failure
            if failure is not None:
                self.stats.failures[failure] += 1
                await asyncio.sleep(RETRY_PAUSE)
                continue
            version = reply.version()
            if version is None:
                continue
            if version < newest_before:
                self.stats.stale += 1
            if version > self.newest:
                async with self._changed:
                    self.newest = version
                    self.first_seen_ns = reply.ended_ns
                    self._changed.notify_all()

    async def wait_version(self, want: int, timeout: float) -> int | None:
        """Wait until a load request got ``want`` (or newer); when its response ended (ns)."""
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.newest >= want), timeout)
                return self.first_seen_ns
        except asyncio.TimeoutError:
            return None

    async def stop(self) -> LoadStats:
        """Let each client finish its request in flight, then return the figures."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        return self.stats
