"""Running a supervisor as the program itself: signals, status lines and the terminal.

Used by the command line and by :func:`aioreload.run`, the two entry points that own their
process. The embeddable :class:`Supervisor` never touches any of this.

Signals: SIGINT and SIGTERM stop the child gracefully and end the program with the child's
exit code (128+N when it died of signal N); a second one kills the child's group at once;
SIGHUP reloads, unless it comes from our terminal hanging up (then it stops, like SIGTERM).
Handlers installed through the event loop replace any inherited ``SIG_IGN`` (``nohup
aioreload ... &``), and ``exec`` resets handled signals to their default, so the child never
inherits an ignored stop signal from us. Windows has no loop signal handlers; there
``signal.signal`` handlers hand over to the loop thread-safely.

Job control (POSIX): Ctrl+Z stops the child's process group, then us; ``fg`` and ``bg``
continue both; and the terminal's modes are restored only while we are its foreground job
(see ``_terminal``).

Status lines are a courtesy: when writing them fails (a closed stderr), they stop, and
supervision goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio
import anyio.to_thread

from ._sdnotify import SystemdNotifier
from ._terminal import Terminal, handle_job_control, job_control_signals
from ._types import (
    ConfigError,
    EventKind,
    ReloadReason,
    SpawnError,
    SupervisorClosedError,
    SupervisorEvent,
)

if TYPE_CHECKING:
    from ._control import ControlServer
    from ._filter import PathFilter
    from ._supervisor import Supervisor

__all__ = ["Status", "count_files", "run_in_foreground", "use_color"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_CLEAR = "\x1b[H\x1b[2J\x1b[3J"  # home, clear the screen, clear the scrollback
_COLORS = {"ok": "32", "note": "33", "error": "31"}
# How long the first status line waits for the count of watched files.
_COUNT_WAIT = 1.0
# How many changed paths a status line checks for one that still exists.
_NAME_LOOKS = 32


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


def use_color(stream: TextIO) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set to anything (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and _isatty(stream)


def count_files(roots: Sequence[Path], keep: PathFilter, stop: threading.Event | None = None) -> int:
    """How many files under ``roots`` pass ``keep``; folders it skips are not entered.

    Args:
        roots: The watch roots (folders or files).
        keep: The supervisor's filter.
        stop: Set it to end the count early.
    """
    total = 0
    pending = []
    for root in roots:
        if root.is_dir():
            pending.append(str(root))
        elif keep(str(root)):
            total += 1
    while pending and not (stop is not None and stop.is_set()):
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        if not keep.skip_folder(entry.path):
                            pending.append(entry.path)
                    elif entry.is_file() and keep(entry.path):
                        total += 1
    return total


class Status:
    """Turns supervisor events into short human status lines on stderr.

    Args:
        command: The program, as shown in the lines.
        stream: Where the lines go (stderr).
        quiet: Print errors only.
        color: Colour the lines (default: on a terminal, unless ``NO_COLOR`` is set).
        clear: Clear the terminal before each restart (only when ``stream`` is a terminal).
        restart_on_crash: The supervisor restarts a crashed child by itself.
        watching: What is watched (``src``, ``3 paths``...), for the first line.
        imports: Imported modules are watched too.
        verbose: Also report the warm spare's preparation.
    """

    def __init__(
        self,
        command: Sequence[str],
        stream: TextIO,
        *,
        quiet: bool = False,
        color: bool | None = None,
        clear: bool = False,
        restart_on_crash: bool = False,
        watching: str = "",
        imports: bool = False,
        verbose: bool = False,
    ) -> None:
        self.command = " ".join(command)
        self.verbose = verbose
        self.stream = stream
        self.quiet = quiet
        self.color = use_color(stream) if color is None else color
        self.clear = clear and _isatty(stream)
        self.restart_on_crash = restart_on_crash
        self.watching = watching
        self.imports = imports
        self.files: int | None = None
        self.closing = False  # the final stop: keep the screen
        self._stop_signal = ""
        self._stopped = ""
        self.watched_files: Callable[[], int] = lambda: 0
        self.on_line: Callable[[str], None] = lambda text: None  # systemd's STATUS=, say
        self.sockets: Callable[[], Sequence[str]] = tuple
        self._mute = False  # the stream failed once: say nothing more
        self._newest = 0  # the generation of the newest child started

    def line(self, text: str, *, error: bool = False, tone: str = "") -> None:
        """Print one status line (errors even when quiet); ``tone`` is ok, note or error."""
        self.on_line(text)
        if self.quiet and not error:
            return
        tone = "error" if error else tone
        if self.color:
            code = _COLORS.get(tone)
            body = f"\x1b[{code}m{text}\x1b[0m" if code else text
            text = f"\x1b[2maioreload:\x1b[0m {body}"
        else:
            text = f"aioreload: {text}"
        self._write(text + "\n")

    def clear_screen(self) -> None:
        """Clear the terminal, when asked to and it is one."""
        if self.clear:
            self._write(_CLEAR)

    def _write(self, text: str) -> None:
        """Write and flush; a stream that fails once is never written to again.

        Status lines are a courtesy: a closed stderr (``aioreload ... 2>&1 | head -1``: a
        broken pipe) or a closed stream object (ValueError) must never stop supervision.
        """
        if self._mute:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self._mute = True

    def _summary(self) -> str:
        what = self.watching
        if what and self.files is not None:
            what += f" ({self.files:,} file{'' if self.files == 1 else 's'})"
        if self.imports:
            what = f"{what} and imported modules" if what else "imported modules"
        return f"watching {what}" if what else ""

    def on(self, event: SupervisorEvent) -> None:
        """Report one event."""
        kind = event.kind
        if kind is EventKind.STOPPING:
            self._stop_signal = event.message
            if not self.closing:
                self.clear_screen()
        elif kind is EventKind.STOPPED:
            sent = f" ({self._stop_signal})" if self._stop_signal else ""
            if event.killed:
                self._stopped = f"killed after {_ms(event.elapsed)}{sent.replace(')', ' ignored)')}"
            else:
                self._stopped = f"stopped in {_ms(event.elapsed)}{sent}"
            if event.generation < self._newest and not self.closing:  # replaced by a ready successor
                self.line(f"previous child [pid {event.pid}] {self._stopped}", tone="ok")
                self._stopped = ""
        elif kind is EventKind.STARTED:
            self._started(event)
        elif kind is EventKind.READY:
            watched = f" · watching {self.watched_files():,} imported files" if self.watched_files() else ""
            self.line(f"ready in {_ms(event.elapsed)}{watched}", tone="ok")
        elif kind is EventKind.EXITED:
            code = event.returncode
            failed = code not in (0, None)
            if event.message == "finished":
                then = ""
            elif failed and self.restart_on_crash:
                then = " · restarting"
            else:
                then = " · waiting for changes"
            self.line(f"{self.command} {_describe_exit(code)}{then}", error=failed, tone="note")
        elif kind is EventKind.SKIPPED:
            self.line("reload cancelled by before_reload", tone="note")
        elif kind is EventKind.SPARE_READY:
            if self.verbose:
                self.line(f"spare [pid {event.pid}] ready: {event.message} preloaded in {_ms(event.elapsed)}")
        elif kind is EventKind.SPAWN_FAILED or kind is EventKind.RELOAD_FAILED:
            self.line(f"error: {event.message} · waiting for changes", error=True)

    def _started(self, event: SupervisorEvent) -> None:
        self._newest = max(self._newest, event.generation)
        if event.reason is ReloadReason.FIRST_START:
            summary = self._summary()
            parts = [summary] if summary else []
            sockets = self.sockets()
            if sockets:
                parts.append(f"holding {', '.join(sockets)}")
            parts.append(f"started {self.command} [pid {event.pid}]")
            self.line(" · ".join(parts), tone="ok")
            return
        if not self._stopped:  # nothing was stopped first (the child had exited): clear now
            self.clear_screen()
        parts = []
        if event.changes:
            more = len(event.changes) - 1
            parts.append(
                f"changed {os.path.relpath(_named_change(event.changes))}" + (f" (+{more})" if more else "")
            )
        elif event.reason is ReloadReason.TRIGGER:
            parts.append("reload requested")
        elif event.reason is ReloadReason.CRASH:
            parts.append("restarting after a crash")
        if self._stopped:
            parts.append(self._stopped)
        source = " from spare" if event.message == "spare" else ""
        parts.append(f"started{source} in {_ms(event.elapsed)} [pid {event.pid}]")
        self.line(" · ".join(parts), tone="ok")
        self._stopped = ""


def _named_change(changes: Sequence[str]) -> str:
    """The changed path a status line names: the first that is still a file, else the first.

    Editors and ``sed -i`` write a temporary file and rename it over the real one; both
    paths are in the batch, and the one that no longer exists is not what the user edited.
    """
    # Bounded: a burst of a thousand deletions costs a handful of stat calls on the loop.
    for path in changes[:_NAME_LOOKS]:
        if os.path.isfile(path):
            return path
    return changes[0]


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.asynccontextmanager
async def _signal_stream() -> AsyncIterator[AsyncIterator[int]]:
    if sys.platform != "win32":
        with anyio.open_signal_receiver(*_STOP_SIGNALS, signal.SIGHUP, *job_control_signals()) as signals:
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


async def run_in_foreground(
    supervisor: Supervisor,
    status: Status,
    *,
    control: str | os.PathLike[str] | None = None,
    count: Callable[[threading.Event], int] | None = None,
    notifier: SystemdNotifier | None = None,
) -> int:
    """Run ``supervisor`` until it finishes or a stop signal arrives; return the exit code.

    Args:
        supervisor: A supervisor not yet entered.
        status: Reports its events.
        control: Serve ``aioreload reload`` for this working folder while running.
        count: Counts the watched files (in a worker thread) for the first status line.
        notifier: Tells systemd what happens (see ``_sdnotify``); taken from the environment
            when not given.
    """
    if notifier is None:
        notifier = SystemdNotifier.from_environ(os.environ)
    status.on_line = notifier.status
    with notifier:
        return await _run_in_foreground(supervisor, status, control, count, notifier)


async def _run_in_foreground(
    supervisor: Supervisor,
    status: Status,
    control: str | os.PathLike[str] | None,
    count: Callable[[threading.Event], int] | None,
    notifier: SystemdNotifier,
) -> int:
    received: list[int] = []
    early_reload: list[int] = []
    code = 0
    body = anyio.CancelScope()
    terminal = Terminal()
    status.watched_files = lambda: supervisor.watched_files
    status.sockets = lambda: supervisor.sockets
    stop_counting = threading.Event()
    counted = anyio.Event()
    async with _signal_stream() as signals:
        events = supervisor.events()
        async with anyio.create_task_group() as tg:

            async def count_files() -> None:
                assert count is not None
                try:
                    status.files = await anyio.to_thread.run_sync(
                        count, stop_counting, abandon_on_cancel=True
                    )
                finally:
                    counted.set()

            async def report() -> None:
                with events:
                    async for event in events:
                        if event.kind in (EventKind.STOPPED, EventKind.EXITED):
                            terminal.restore()
                        if event.reason is ReloadReason.FIRST_START and count is not None:
                            with anyio.move_on_after(_COUNT_WAIT):
                                await counted.wait()
                            stop_counting.set()  # too big to count quickly: not worth a core
                        status.on(event)
                        notifier.on(event)
                        if event.kind is EventKind.STARTED and early_reload:  # SIGHUP while starting
                            early_reload.clear()
                            with contextlib.suppress(SupervisorClosedError):
                                supervisor.request_reload()

            async def handle_signals() -> None:
                async for signum in signals:
                    if handle_job_control(signum, supervisor.send_signal, terminal):
                        continue  # Ctrl+Z, fg, bg
                    if signum not in _STOP_SIGNALS:  # SIGHUP
                        # It reloads, unless our terminal hung up (its window closed): then we
                        # stop, as any terminal program does, and not twice as hard when the
                        # hangup reaches us both from the kernel and from the shell.
                        if not terminal.hung_up():
                            if not received:
                                notifier.reload_requested()
                                try:
                                    supervisor.request_reload()
                                except SupervisorClosedError:  # not started yet (or ended): soon
                                    early_reload.append(signum)
                            continue
                        if received:
                            continue
                    if received:
                        supervisor.kill()  # a second Ctrl+C: stop waiting
                    else:
                        received.append(signum)
                        status.closing = True
                        notifier.stopping()
                        body.cancel()

            if count is not None:
                tg.start_soon(count_files)
            tg.start_soon(handle_signals)
            tg.start_soon(report)
            tg.start_soon(notifier.keep_alive)
            # Bound before the first child starts, so that once its status line is out,
            # `aioreload reload` finds the socket (requests wait in the backlog until served).
            server = await _bind_control(status, control)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if server is not None:
                        await stack.enter_async_context(server)
                    async with supervisor:
                        with body:
                            code = await _wait_serving(supervisor, server)
            except SpawnError as exc:
                status.line(f"error: {exc}", error=True)
                return 127 if isinstance(exc.__cause__, FileNotFoundError) else 126
            except ConfigError as exc:  # found on entering: a held socket's address is taken
                status.line(f"error: {exc}", error=True)
                return 2
            finally:
                stop_counting.set()
                tg.cancel_scope.cancel()
    if not received:
        return code
    last = supervisor.last_returncode
    if last is None:
        return 128 + received[0]
    return 128 - last if last < 0 else last


async def _bind_control(status: Status, folder: str | os.PathLike[str] | None) -> ControlServer | None:
    """The control socket for ``folder``, or ``None`` (not asked for, not possible: said why)."""
    from ._control import SUPPORTED, ControlError, ControlServer

    if folder is None or not SUPPORTED:  # no Unix sockets (Windows): nothing to serve, nothing to say
        return None
    try:
        return await ControlServer.bind(folder)
    except ControlError as exc:
        status.line(f"`aioreload reload` is off: {exc}", tone="note")
        return None


async def _wait_serving(supervisor: Supervisor, server: ControlServer | None) -> int:
    """Wait for the supervisor to finish, answering ``aioreload reload`` meanwhile."""
    if server is None:
        return await supervisor.wait()
    from ._control import ControlError

    async def reload() -> int:
        if not await supervisor.reload():
            raise ControlError("the new child could not start (see the supervisor's output)")
        return supervisor.pid or 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, reload)
        code = await supervisor.wait()
        tg.cancel_scope.cancel()
    return code
