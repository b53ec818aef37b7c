"""Running a supervisor as the program itself: signals, status lines and the terminal.

Used by the command line and by :func:`aioreload.run`, the two entry points that own their
process. The embeddable :class:`Supervisor` never touches any of this.

Signals: SIGINT and SIGTERM stop the child gracefully and end the program with the child's
exit code (128+N when it died of signal N); a second one kills the child's group at once;
SIGHUP reloads. Handlers installed through the event loop replace any inherited ``SIG_IGN``
(``nohup aioreload ... &``), and ``exec`` resets handled signals to their default, so the
child never inherits an ignored stop signal from us. Windows has no loop signal handlers;
there ``signal.signal`` handlers hand over to the loop thread-safely.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, TextIO

import anyio

from ._types import Event, EventKind, SpawnError

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["Status", "run_in_foreground"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f} ms"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with code {code}"


class Status:
    """Turns supervisor events into short human status lines on stderr."""

    def __init__(self, command: Sequence[str], stream: TextIO, *, quiet: bool = False) -> None:
        self.command = " ".join(command)
        self.stream = stream
        self.quiet = quiet
        self._stopped = ""
        self.watched_files: Callable[[], int] = lambda: 0

    def line(self, text: str, *, error: bool = False) -> None:
        """Print one status line (errors even when quiet)."""
        if self.quiet and not error:
            return
        print(f"aioreload: {text}", file=self.stream, flush=True)

    def on(self, event: Event) -> None:
        """Report one event."""
        kind = event.kind
        if kind is EventKind.STOPPED:
            self._stopped = f"{'killed' if event.killed else 'stopped'} in {_ms(event.elapsed)}"
        elif kind is EventKind.STARTED:
            parts = []
            if event.changes:
                more = len(event.changes) - 1
                parts.append(f"changed {os.path.relpath(event.changes[0])}" + (f" (+{more})" if more else ""))
            elif event.reason is not None and event.reason.value != "start":
                parts.append(event.reason.value)
            if self._stopped:
                parts.append(self._stopped)
            parts.append(f"started {self.command} [pid {event.pid}]")
            self.line(" · ".join(parts))
            self._stopped = ""
        elif kind is EventKind.READY:
            watched = f" · watching {self.watched_files()} imported files" if self.watched_files() else ""
            self.line(f"ready in {_ms(event.elapsed)}{watched}")
        elif kind is EventKind.EXITED:
            then = "" if event.message == "finished" else " · waiting for changes"
            self.line(
                f"{self.command} {_describe_exit(event.returncode)}{then}",
                error=event.returncode not in (0, None),
            )
        elif kind is EventKind.SKIPPED:
            self.line("reload cancelled by before_reload")
        elif kind is EventKind.SPAWN_FAILED:
            self.line(f"error: {event.message} · waiting for changes", error=True)


class _Terminal:
    """Puts the terminal back as it was (echo on...) after a child dies mid-prompt (POSIX)."""

    def __init__(self) -> None:
        self._saved: list[object] | None = None
        if sys.platform != "win32":
            import termios

            with contextlib.suppress(OSError, termios.error, ValueError):
                if sys.stdin is not None and sys.stdin.isatty():
                    self._saved = termios.tcgetattr(sys.stdin.fileno())

    def restore(self) -> None:
        if self._saved is None or sys.platform == "win32":
            return
        import termios

        with contextlib.suppress(OSError, termios.error, ValueError):
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, self._saved)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _signal_stream() -> AsyncIterator[AsyncIterator[int]]:
    if sys.platform != "win32":
        with anyio.open_signal_receiver(*_STOP_SIGNALS, signal.SIGHUP) as signals:
            yield signals
        return
    send, receive = anyio.create_memory_object_stream[int](16)
    loop_call = _loop_caller()
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}

    def handler(signum: int, _frame: object) -> None:
        loop_call(lambda: send.send_nowait(signum))

    for signum in _STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        with send, receive:
            yield receive
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _loop_caller() -> Callable[[Callable[[], object]], None]:
    import asyncio

    loop = asyncio.get_running_loop()

    def call(callback: Callable[[], object]) -> None:
        loop.call_soon_threadsafe(callback)

    return call


async def run_in_foreground(supervisor: Supervisor, status: Status) -> int:
    """Run ``supervisor`` until it finishes or a stop signal arrives; return the exit code."""
    received: list[int] = []
    code = 0
    body = anyio.CancelScope()
    terminal = _Terminal()
    status.watched_files = lambda: supervisor.watched_files
    async with _signal_stream() as signals:
        events = supervisor.events()
        async with anyio.create_task_group() as tg:

            async def report() -> None:
                with events:
                    async for event in events:
                        if event.kind in (EventKind.STOPPED, EventKind.EXITED):
                            terminal.restore()
                        status.on(event)

            async def handle_signals() -> None:
                async for signum in signals:
                    if signum not in _STOP_SIGNALS:  # SIGHUP
                        if supervisor.state != "closed" and not received:
                            supervisor.request_reload()
                    elif received:
                        supervisor._kill_now()  # a second Ctrl+C: stop waiting
                    else:
                        received.append(signum)
                        body.cancel()

            tg.start_soon(handle_signals)
            tg.start_soon(report)
            try:
                async with supervisor:
                    with body:
                        code = await supervisor.wait()
            except SpawnError as exc:
                status.line(f"error: {exc}", error=True)
                return 127 if isinstance(exc.__cause__, FileNotFoundError) else 126
            finally:
                tg.cancel_scope.cancel()
    if not received:
        return code
    last = supervisor.last_returncode
    if last is None:
        return 128 + received[0]
    return 128 - last if last < 0 else last
