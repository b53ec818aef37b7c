"""The supervisor: start → wait for (change | trigger | exit) → stop → start, for as long as it runs.

One task owns the child. Changes and triggers only *request* a reload; requests that arrive
while a stop or start is in progress gather in a single pending batch, so a burst becomes one
more reload, never a queue of them. Changes that arrive while the old child is stopping join
the reload in progress: the new child is spawned after them, so it sees them.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, final

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup
from anyio.streams.memory import MemoryObjectSendStream

from . import _ipc
from ._events import BeforeReload, EventStream, ReloadRequest, thread_safe_scheduler
from ._filter import PathFilter
from ._process import Child, Guardian, default_stop_signal, signal_name
from ._types import ConfigError, EventKind, ReloadReason, SpawnError, SupervisorClosedError, SupervisorEvent
from ._watch import Watcher

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)

# The child's environment variable may not exceed the kernel's per-string limit (128 KiB on Linux).
_MAX_CHANGES_ENV = 32 * 1024


@dataclass
class _Pending:
    reason: ReloadReason
    changes: set[str] = field(default_factory=set)
    seq: int = 0


@dataclass(eq=False)
class _Run:
    """One child and what the supervisor knows about it."""

    child: Child
    generation: int
    channel: socket.socket | None = None
    spawned_ns: int = 0
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    ready: anyio.Event = field(default_factory=anyio.Event)
    final_code: int | None = None
    exit_seen: bool = False
    stopping: bool = False


@final
class Supervisor:
    """Runs a command as a child process and restarts it on file changes and on request.

    Use it as an async context manager inside any running event loop::

        async with aioreload.Supervisor(["python", "app.py"], watch=["."]) as sup:
            await sup.wait()          # until the program finishes for good

    On entry the first child is started (errors such as a missing command raise here); one
    background task then owns the child. Leaving the block, or cancelling the task inside
    it, stops the child gracefully (``stop_signal`` to its process group, ``stop_timeout``,
    then SIGKILL) and returns; nothing keeps running.

    Args:
        command: The program and its arguments.
        watch: Folders and files whose changes reload the child (recursively for folders).
        ignore: Extra glob patterns of paths to ignore (names or paths relative to a watch root).
        extensions: When given, only files with these suffixes count (``[".py", ".toml"]``).
        debounce: Quiet period in seconds: a reload waits until no new change arrives for this
            long (longer for batches of many files). Where changes are polled for rather than
            read from inotify (macOS, Windows, ``poll``) it is at least 0.05 s.
        debounce_max: Cap in seconds on how long a stream of changes can delay a reload.
        poll: Poll the file system instead of using OS notifications (network file systems).
        stop_signal: Signal that asks the child to stop (default SIGINT; CTRL_BREAK on Windows).
        stop_timeout: Seconds to wait after ``stop_signal`` before killing the process group.
        before_reload: Sync or async hook run before the old child is stopped; returning
            ``False`` cancels that reload. It receives a :class:`ReloadRequest`.
        env: The child's environment (default: this process's), to which ``AIORELOAD_*`` is added.
        cwd: The child's working folder (default: this process's).
        watch_imports: Also watch the source files of every module a Python child imports
            (at start and as it goes), installed packages included. The child reports them
            when it imports ``aioreload``; :func:`aioreload.run` turns this on.
        restart_on_crash: Restart a child that exits with a non-zero code by itself, after
            ``crash_backoff`` seconds, doubling for each crash in a row up to
            ``crash_backoff_max``; a run that lasted ``crash_backoff_max`` or longer resets
            the delay. A change or trigger restarts it at once. Off by default: a crashed
            child waits for the next change.
        crash_backoff: First restart delay in seconds.
        crash_backoff_max: Cap on the restart delay in seconds.
        gitignore: Also ignore what the ``.gitignore`` files under the watch roots ignore.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        watch: Iterable[str | os.PathLike[str]] = (),
        ignore: Iterable[str] = (),
        extensions: Iterable[str] = (),
        debounce: float = 0.02,
        debounce_max: float = 1.0,
        poll: bool = False,
        stop_signal: int | None = None,
        stop_timeout: float = 5.0,
        before_reload: BeforeReload | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        watch_imports: bool = False,
        restart_on_crash: bool = False,
        crash_backoff: float = 0.5,
        crash_backoff_max: float = 30.0,
        gitignore: bool = False,
    ) -> None:
        if isinstance(command, str) or not command:
            raise ConfigError("command must be a non-empty list of strings, e.g. ['python', 'app.py']")
        if not all(isinstance(a, str) for a in command):
            raise ConfigError("command must be a list of strings")
        durations = {
            "debounce": debounce,
            "debounce_max": debounce_max,
            "stop_timeout": stop_timeout,
            "crash_backoff": crash_backoff,
            "crash_backoff_max": crash_backoff_max,
        }
        for name, value in durations.items():
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        self.command = tuple(command)
        self._cwd = None if cwd is None else os.fspath(cwd)
        base = Path(self._cwd) if self._cwd else Path.cwd()
        roots = []
        for item in watch:
            path = (base / os.fspath(item)).resolve()
            if not path.exists():
                raise ConfigError(
                    f"watch path does not exist: {os.fspath(item)!r} (create it or fix the path)"
                )
            roots.append(path)
        self.stop_signal = default_stop_signal() if stop_signal is None else int(stop_signal)
        self.stop_timeout = float(stop_timeout)
        self._before_reload = before_reload
        self._env = dict(os.environ if env is None else env)
        self._watch_imports = watch_imports
        self._restart_on_crash = restart_on_crash
        self._crash_backoff = float(crash_backoff)
        self._crash_backoff_max = float(crash_backoff_max)
        self._backoff = 0.0
        self._watcher = Watcher(
            roots,
            path_filter=PathFilter(ignore=ignore, extensions=extensions, roots=roots, gitignore=gitignore),
            debounce=debounce,
            debounce_max=debounce_max,
            poll=poll,
        )
        if before_reload is None:
            # With no hook to consult, the old child starts stopping at the first event of
            # a burst, while the debounce still gathers the rest: the stop hides in the wait.
            self._watcher.early = self._on_early
        self._early = False
        self._run: _Run | None = None
        self._generation = 0
        self._pending: _Pending | None = None
        self._seq = 0
        self._outcomes: dict[int, bool] = {}
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._finished = anyio.Event()
        self._subscribers: list[MemoryObjectSendStream[SupervisorEvent]] = []
        self._exit_code: int | None = None
        self._last_returncode: int | None = None
        self._state = "new"
        self._guardian: Guardian | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._inner: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._schedule: Callable[[Callable[[], object]], None] | None = None

    def __repr__(self) -> str:
        pid = self.pid
        return (
            f"<Supervisor {self._state} command={' '.join(self.command)!r} "
            f"pid={pid} generation={self._generation}>"
        )

    # -- public surface -------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running child's process id, or ``None`` between children."""
        run = self._run
        return run.child.pid if run is not None and run.child.returncode is None else None

    @property
    def generation(self) -> int:
        """How many children this supervisor has started."""
        return self._generation

    @property
    def state(self) -> str:
        """``new``, ``running``, ``stopping``, ``starting``, ``waiting`` (no child) or ``closed``."""
        return self._state

    @property
    def last_returncode(self) -> int | None:
        """Exit status of the most recent child that ended, if any."""
        return self._last_returncode

    @property
    def watched_files(self) -> int:
        """How many imported-module files are being watched (see ``watch_imports``)."""
        return self._watcher.armed_files

    @property
    def guardian_pid(self) -> int | None:
        """The process id of the watchdog that cleans up if this process is killed."""
        return None if self._guardian is None else self._guardian.pid

    def events(self) -> EventStream:
        """Subscribe to lifecycle events from now on (see :class:`EventKind`)."""
        send, receive = anyio.create_memory_object_stream[SupervisorEvent](float("inf"))
        if self._state == "closed":
            send.close()
        else:
            self._subscribers.append(send)
        return EventStream(receive)

    async def reload(self, *, wait_ready: bool = False) -> bool:
        """Restart the child and return once the new one has started (or is ready).

        Concurrent calls, triggers and file changes coalesce into as few reloads as possible.

        Args:
            wait_ready: Also wait until the new child reports readiness (or exits).

        Returns:
            ``True`` when a new child was started, ``False`` when ``before_reload`` cancelled it
            or the new child could not be spawned.

        Raises:
            SupervisorClosedError: the supervisor closed before the reload happened.
        """
        self._check_open()
        seq = self._request(ReloadReason.TRIGGER)
        while True:
            outcome = self._outcome(seq)
            if outcome is not None:
                break
            if self._state == "closed":
                raise SupervisorClosedError("the supervisor closed before the reload happened")
            await self._progress.wait()
        run = self._run
        if outcome and wait_ready and run is not None:
            async with anyio.create_task_group() as tg:

                async def _exit() -> None:
                    await run.child.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(_exit)
                await run.ready.wait()
                tg.cancel_scope.cancel()
        return outcome

    def request_reload(self) -> None:
        """Ask for a reload and return at once. Safe from other threads and signal handlers."""
        schedule = self._schedule
        if schedule is None or self._state == "closed":
            raise SupervisorClosedError("the supervisor is not running")
        schedule(lambda: self._request(ReloadReason.TRIGGER))

    async def wait(self) -> int:
        """Wait until the supervisor finishes and return the exit code.

        The supervisor finishes by itself when a child started through :func:`aioreload.run`
        reports that its program ended for good; the code is that program's. Otherwise it
        runs until the ``async with`` block ends or is cancelled.
        """
        await self._finished.wait()
        if self._exit_code is not None:
            return self._exit_code
        return self._last_returncode or 0

    async def run(self) -> int:
        """Enter, wait until finished and exit: ``tg.start_soon(sup.run)`` in a task group."""
        async with self:
            return await self.wait()

    def kill(self) -> None:
        """Kill the running child's process group at once, without waiting (a second Ctrl+C)."""
        run = self._run
        if run is not None and run.child.returncode is None:
            run.child.kill()

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the running child's whole process group (nothing if none runs)."""
        run = self._run
        if run is not None and run.child.returncode is None:
            run.child.send_signal(signum)

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        if self._state != "new":
            raise RuntimeError("a Supervisor can be entered only once")
        self._state = "starting"
        self._schedule = thread_safe_scheduler()
        self._guardian = await Guardian.start(self.stop_signal)
        try:
            first = await self._spawn(ReloadReason.FIRST_START, ())
        except BaseException:
            await self._guardian.aclose()
            self._close_subscribers()
            self._state = "closed"
            raise
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self._main, first)
        except BaseException as exc:
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._scope is not None:
            self._scope.cancel()
        assert self._tg is not None
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The body of `async with` runs inside our task group; give its own exception
            # back to it rather than a group the caller did not ask for.
            if len(group.exceptions) != 1:
                raise
            single = group.exceptions[0]
            cause, context = single.__cause__, single.__context__
            try:
                raise single
            finally:
                single.__cause__, single.__context__ = cause, context
                del single

    def _check_open(self) -> None:
        if self._state in ("new", "closed"):
            raise SupervisorClosedError("the supervisor is not running; use it inside `async with`")

    async def _main(self, first: _Run, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as tg:
                    self._inner = tg
                    tg.start_soon(self._watcher.run, self._on_changes)
                    tg.start_soon(self._watcher.run_files, self._on_changes)
                    self._adopt(first)
                    task_status.started()
                    try:
                        self._exit_code = await self._supervise()
                    finally:
                        self._watcher.stop()  # winds down while the child stops
                        with anyio.CancelScope(shield=True):
                            await self._stop_current()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_current()  # in case the task group itself failed
                assert self._guardian is not None
                await self._guardian.aclose()
            self._state = "closed"
            self._close_subscribers()
            self._finished.set()
            self._progress.set()

    async def _supervise(self) -> int:
        """Run children until one reports a final exit; return its code."""
        while True:
            batch = await self._next_batch()
            if batch is None:
                run = self._run
                assert run is not None
                assert run.final_code is not None
                return run.final_code
            await self._stop_current()
            # Everything requested while the old child was stopping joins this start.
            if self._pending is not None:
                extra = self._take()
                batch.changes |= extra.changes
                batch.seq = extra.seq
            self._state = "starting"
            try:
                new = await self._spawn(batch.reason, sorted(batch.changes))
            except SpawnError as exc:
                self._run = None
                self._state = "waiting"
                self._emit(EventKind.SPAWN_FAILED, reason=batch.reason, message=str(exc))
                self._settle(batch.seq, False)
                continue
            self._adopt(new)
            self._settle(batch.seq, True)

    async def _next_batch(self) -> _Pending | None:
        """Wait for the next approved reload; ``None`` when the program finished for good."""
        while True:
            run = self._run
            if run is not None and run.child.returncode is not None and not run.exit_seen:
                run.exit_seen = True
                code = run.child.returncode
                self._last_returncode = code
                self._state = "waiting"
                final = run.final_code is not None
                self._emit(EventKind.EXITED, run=run, returncode=code, message="finished" if final else "")
                if run.final_code is not None:
                    return None
                if self._restart_on_crash and code != 0:
                    self._schedule_crash_restart(run)
            if self._pending is not None:
                batch = self._take()
                if await self._approve(batch):
                    return batch
                self._emit(EventKind.SKIPPED, reason=batch.reason, changes=sorted(batch.changes))
                self._settle(batch.seq, False)
                continue
            if self._early:
                self._early = False
                await self._stop_current()
                continue
            await self._wake.wait()
            self._wake = anyio.Event()

    def _schedule_crash_restart(self, run: _Run) -> None:
        """Restart a crashed child after an exponential backoff (reset by a healthy run)."""
        lived = time.monotonic() - run.child.started
        if lived >= max(self._crash_backoff_max, self._crash_backoff):
            self._backoff = 0.0  # it ran well for a while: this is a new problem
        self._backoff = min(self._crash_backoff_max, max(self._crash_backoff, self._backoff * 2))
        delay = self._backoff
        logger.info("child crashed; restarting in %.1fs", delay)
        generation = self._generation

        async def restart_later() -> None:
            await anyio.sleep(delay)
            if self._generation == generation and self._pending is None:
                self._request(ReloadReason.CRASH)

        assert self._inner is not None
        self._inner.start_soon(restart_later)

    async def _approve(self, batch: _Pending) -> bool:
        hook = self._before_reload
        if hook is None:
            return True
        request = ReloadRequest(batch.reason, tuple(sorted(batch.changes)))
        try:
            result = hook(request)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            logger.exception("before_reload hook failed; reloading anyway")
            return True
        return result is not False

    # -- requests -------------------------------------------------------------------------

    def _request(self, reason: ReloadReason, changes: Iterable[str] = ()) -> int:
        self._seq += 1
        if self._pending is None:
            self._pending = _Pending(reason)
        self._pending.changes.update(changes)
        self._pending.seq = self._seq
        self._wake.set()
        return self._seq

    def _take(self) -> _Pending:
        batch, self._pending = self._pending, None
        assert batch is not None
        return batch

    def _settle(self, seq: int, outcome: bool) -> None:
        self._outcomes[seq] = outcome
        if len(self._outcomes) > 256:
            for key in sorted(self._outcomes)[:-128]:
                del self._outcomes[key]
        self._progress.set()
        self._progress = anyio.Event()

    def _outcome(self, seq: int) -> bool | None:
        settled = [key for key in self._outcomes if key >= seq]
        return self._outcomes[min(settled)] if settled else None

    def _on_early(self) -> None:
        self._early = True
        self._wake.set()

    def _on_changes(self, paths: frozenset[str]) -> None:
        self._emit(EventKind.CHANGED, changes=sorted(paths))
        self._request(ReloadReason.FILE_CHANGE, paths)

    # -- children -------------------------------------------------------------------------

    def _child_env(self, reason: ReloadReason, changes: Sequence[str], fd: int | None) -> dict[str, str]:
        env = dict(self._env)
        env[_ipc.ENV_REASON] = reason.value
        encoded = json.dumps(list(changes))
        while len(encoded) > _MAX_CHANGES_ENV and changes:
            changes = changes[: len(changes) // 2]
            encoded = json.dumps(list(changes))
        env[_ipc.ENV_CHANGES] = encoded
        env[_ipc.ENV_GENERATION] = str(self._generation)
        env[_ipc.ENV_SPAWNED] = str(time.time_ns())
        if self._watch_imports:
            env[_ipc.ENV_TRACK] = "1"
        else:
            env.pop(_ipc.ENV_TRACK, None)
        if fd is None:
            env.pop(_ipc.ENV_FD, None)
        else:
            env[_ipc.ENV_FD] = str(fd)
        return env

    async def _spawn(self, reason: ReloadReason, changes: Sequence[str]) -> _Run:
        self._generation += 1
        ours: socket.socket | None = None
        theirs: socket.socket | None = None
        if _ipc.SUPPORTED:
            ours, theirs = _ipc.make_pair()
        try:
            env = self._child_env(reason, changes, None if theirs is None else theirs.fileno())
            with anyio.CancelScope(shield=True):
                child = await Child.spawn(
                    self.command,
                    env=env,
                    cwd=self._cwd,
                    pass_fds=() if theirs is None else (theirs.fileno(),),
                    stop_signal=self.stop_signal,
                )
                assert self._guardian is not None
                await self._guardian.watch(child.pid)
        except BaseException:
            if ours is not None:
                ours.close()
            raise
        finally:
            if theirs is not None:
                theirs.close()
        run = _Run(child, self._generation, ours, int(env[_ipc.ENV_SPAWNED]))
        elapsed = time.monotonic() - child.started
        self._run = run
        self._state = "running"
        logger.info("started %s [pid %d] (%s)", " ".join(self.command), child.pid, reason.value)
        self._emit(EventKind.STARTED, run=run, reason=reason, changes=changes, elapsed=elapsed)
        return run

    def _adopt(self, run: _Run) -> None:
        """Start the tasks that follow one child: its exit and its channel."""
        assert self._inner is not None
        self._inner.start_soon(self._follow, run)

    async def _follow(self, run: _Run) -> None:
        try:
            with run.scope:
                async with anyio.create_task_group() as tg:
                    if run.channel is not None:
                        tg.start_soon(self._listen, run, run.channel)
                    await run.child.wait()
                    self._wake.set()
                    tg.cancel_scope.cancel()
        finally:
            if run.channel is not None:
                run.channel.close()

    async def _listen(self, run: _Run, sock: socket.socket) -> None:
        # A plain non-blocking socket we close ourselves (in _follow), so the descriptor is
        # gone the moment the supervisor returns, not a loop iteration later.
        sock.setblocking(False)
        buffer = b""
        while True:
            await anyio.wait_readable(sock)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message = _ipc.decode(line)
                if message is not None:
                    self._handle(run, message)

    def _handle(self, run: _Run, message: dict[str, Any]) -> None:
        op = message["op"]
        current = run is self._run and not run.stopping
        if op == "reload":
            if current:
                self._request(ReloadReason.TRIGGER)
        elif op == "ready":
            if not run.ready.is_set():
                run.ready.set()
                self._emit(EventKind.READY, run=run, elapsed=time.monotonic() - run.child.started)
        elif op == "files":
            paths = message.get("paths")
            if self._watch_imports and isinstance(paths, list):
                self._watcher.add_files((p for p in paths if isinstance(p, str)), run.spawned_ns)
        elif op == "exit":
            code = message.get("code")
            run.final_code = code if isinstance(code, int) else 1
        else:
            logger.debug("ignoring unknown message %r from pid %d", op, run.child.pid)

    async def _stop_current(self) -> None:
        """Stop the running child, if there is one (again, if an earlier stop was cancelled)."""
        run = self._run
        if run is not None and run.child.returncode is None:
            await self._stop(run)

    async def _stop(self, run: _Run) -> None:
        run.stopping = True
        self._state = "stopping"
        self._emit(EventKind.STOPPING, run=run, message=signal_name(self.stop_signal))
        began = time.monotonic()
        code, killed = await run.child.stop(self.stop_signal, self.stop_timeout)
        run.exit_seen = True
        run.scope.cancel()
        assert self._guardian is not None
        await self._guardian.watch(0)
        self._last_returncode = code
        self._state = "waiting"
        if killed:
            logger.warning(
                "child [pid %d] ignored %s for %.1fs; killed",
                run.child.pid,
                signal_name(self.stop_signal),
                self.stop_timeout,
            )
        self._emit(
            EventKind.STOPPED, run=run, returncode=code, elapsed=time.monotonic() - began, killed=killed
        )

    # -- events ---------------------------------------------------------------------------

    def _emit(
        self,
        kind: EventKind,
        *,
        run: _Run | None = None,
        reason: ReloadReason | None = None,
        changes: Sequence[str] = (),
        returncode: int | None = None,
        elapsed: float | None = None,
        killed: bool = False,
        message: str = "",
    ) -> None:
        event = SupervisorEvent(
            kind,
            run.generation if run is not None else self._generation,
            pid=run.child.pid if run is not None else None,
            reason=reason,
            changes=tuple(changes),
            returncode=returncode,
            elapsed=elapsed,
            killed=killed,
            message=message,
        )
        logger.debug("%s", event)
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                send.close()
                self._subscribers.remove(send)

    def _close_subscribers(self) -> None:
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()
