"""The public face of the supervisor: its options, its state, and how to run it.

The work is done elsewhere: the reload loop in ``_loop``, one child's life in ``_childproc``,
the change sources behind ``_watch``. This class validates options, owns the task group the
loop runs in, and turns requests from callers (any thread included) into requests on the
stream the loop consumes.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import final

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup

from . import _validate
from ._bus import EventBus, EventStream
from ._childproc import wait_any
from ._filter import PathFilter, split_watch
from ._ipc import SUPPORTED as SPARE_SUPPORTED
from ._loop import LoopConfig, ReloadLoop
from ._process import default_stop_signal
from ._pycommand import parse as parse_python
from ._requests import BeforeReload, Kind, Request, RequestStream, Ticket
from ._spare import Launcher
from ._types import AioreloadError, ConfigError, ReloadReason, SupervisorClosedError, SupervisorState
from ._watch import Watcher

__all__ = ["Supervisor"]


@final
class Supervisor:
    """Runs a command as a child process and restarts it on file changes and on request.

    Use it as an async context manager inside any running event loop::

        async with aioreload.Supervisor(["python", "app.py"], watch=["."]) as sup:
            await sup.wait()          # until the program finishes for good

    or as a task that reports when it is up: ``await task_group.start(sup.run)``. Either
    returns only once every watch is armed and the first child has started (errors such as a
    missing command raise there), so an edit made from then on is never lost. Leaving the
    block, or cancelling the task, stops the child gracefully (``stop_signal`` to its process
    group, ``stop_timeout``, then SIGKILL) and returns; nothing keeps running.

    Args:
        command: The program and its arguments.
        watch: Folders, files and globs (``"conf/*.toml"``) whose changes reload the child;
            folders recursively. ``False`` or empty: reload only on request.
        ignore: Extra ignore patterns, in .gitignore's dialect (``**/logs/``, ``/build``, an
            absolute path under a watch root).
        extensions: When given, only files with these suffixes count (``[".py", ".toml"]``).
        watch_filter: Called with each changed file that passed the other rules; returning
            ``False`` ignores it.
        debounce: Quiet period in seconds that ends a burst of changes (longer for big
            batches). At least 0.05 s with watchfiles' engine (macOS, Windows).
        debounce_max: Cap in seconds on how long a stream of changes can delay a reload.
        poll: Poll the file system instead of using OS notifications (network file systems).
        stop_signal: Signal that asks the child to stop (default SIGINT; CTRL_BREAK on Windows).
        stop_timeout: Seconds to wait after ``stop_signal`` before killing the process group.
        before_reload: Sync or async hook run before the old child is stopped; returning
            ``False`` cancels that reload. It receives a :class:`ReloadRequest`.
        env: The child's environment (default: this process's), to which ``AIORELOAD_*`` is added.
        cwd: The child's working folder (default: this process's).
        watch_imports: Also watch the source files of every module a Python child imports
            (installed packages included). The child reports them when it imports
            ``aioreload``; :func:`aioreload.run` turns this on.
        restart_on_crash: Restart a child that exits with a non-zero code by itself, after
            ``crash_backoff`` seconds, doubling for each crash in a row up to
            ``crash_backoff_max``; a run that lasted ``crash_backoff_max`` or longer resets
            the delay. A change or trigger restarts it at once.
        crash_backoff: First restart delay in seconds.
        crash_backoff_max: Cap on the restart delay in seconds.
        gitignore: Also ignore what the ``.gitignore`` files under the watch roots ignore.
        sockets: Listening sockets to hold for the children (POSIX): addresses to bind
            (``"127.0.0.1:8000"``, ``"[::1]:8000"``, ``":8000"``, ``"unix:/run/app.sock"``) or
            sockets already listening (yours to close). Bound once, on entering, and handed
            to every child as descriptors 3, 4, ... with ``LISTEN_FDS``, ``LISTEN_PID`` and
            ``LISTEN_FDNAMES`` (``uvicorn --fd 3``; :func:`aioreload.sockets`), so
            connections wait in the backlog during a reload instead of being refused.
        overlap: With held sockets and a child that reported readiness (:func:`aioreload.ready`
            or ``READY=1`` on its ``NOTIFY_SOCKET``), start the new child while the old one
            serves and stop the old one once the new one is ready; a new child that exits or
            is not ready within ``ready_timeout`` is stopped and the old one keeps serving.
            ``False`` for programs that must never run twice at once.
        ready_timeout: Seconds an overlapping reload waits for the new child to be ready.
        spare: For a Python command (``python script.py``, ``python -m module``, a console
            script whose ``#!`` names Python), keep a warm spare: a fresh interpreter that has
            imported the standard-library and installed-package modules the running child
            imported, and becomes the next child in a few milliseconds. Never stale: only
            files outside the project and the watch are preloaded, and any change to them, to
            the installed packages or to the interpreter throws the spare away (the child then
            starts cold). The program cannot tell: ``sys.argv``, ``__main__``, ``sys.path[0]``,
            the environment and the working folder are a cold start's. ``False``: always cold.
        spare_exclude: Modules (and their submodules) a spare must not import early.

    Raises:
        ConfigError: an option is invalid (one line naming it and the fix).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        watch: Iterable[str | os.PathLike[str]] | bool = (),
        ignore: Iterable[str] = (),
        extensions: Iterable[str] = (),
        watch_filter: Callable[[str], bool] | None = None,
        debounce: float = 0.02,
        debounce_max: float = 1.0,
        poll: bool = False,
        stop_signal: int | str | None = None,
        stop_timeout: float = 5.0,
        before_reload: BeforeReload | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        watch_imports: bool = False,
        restart_on_crash: bool = False,
        crash_backoff: float = 0.5,
        crash_backoff_max: float = 30.0,
        gitignore: bool = False,
        sockets: Iterable[str | socket.socket] = (),
        overlap: bool = True,
        ready_timeout: float = 30.0,
        spare: bool = True,
        spare_exclude: Iterable[str] = (),
        _prepare: bool = False,
    ) -> None:
        self._command = _validate.command(command)
        held = _validate.sockets(sockets)
        ready_timeout = _validate.seconds("ready_timeout", ready_timeout, positive=True)
        extensions = _validate.extensions(extensions)
        self._stop_signal = (
            default_stop_signal() if stop_signal is None else _validate.stop_signal(stop_signal)
        )
        self._stop_timeout = _validate.seconds("stop_timeout", stop_timeout)
        debounce = _validate.seconds("debounce", debounce)
        debounce_max = _validate.seconds("debounce_max", debounce_max)
        crash_backoff = _validate.seconds("crash_backoff", crash_backoff)
        crash_backoff_max = _validate.seconds("crash_backoff_max", crash_backoff_max)
        cwd = None if cwd is None else os.fspath(cwd)
        base = Path(cwd) if cwd else Path.cwd()
        items: Iterable[str | os.PathLike[str]] = () if isinstance(watch, bool) else watch
        roots, include = split_watch(items, base)
        self._requests = RequestStream()
        self._bus = EventBus()
        watcher = None
        if roots:
            path_filter = PathFilter(
                ignore=ignore,
                extensions=extensions,
                roots=roots,
                gitignore=gitignore,
                include=include,
                watch_filter=watch_filter,
            )
            watcher = Watcher(
                roots,
                path_filter=path_filter,
                requests=self._requests,
                debounce=debounce,
                debounce_max=debounce_max,
                poll=poll,
            )
        elif watch_imports:  # no roots, but the child's imports are watched
            watcher = Watcher(
                [],
                path_filter=PathFilter(),
                requests=self._requests,
                debounce=debounce,
                debounce_max=debounce_max,
                poll=poll,
            )
        child_env = dict(os.environ if env is None else env)
        python = parse_python(self._command, child_env, cwd) if spare and SPARE_SUPPORTED else None
        if isinstance(spare_exclude, str):
            raise ConfigError(
                f"spare_exclude must be a list of module names, got the string {spare_exclude!r}"
            )
        config = LoopConfig(
            command=self._command,
            env=child_env,
            cwd=cwd,
            stop_signal=self._stop_signal,
            stop_timeout=self._stop_timeout,
            before_reload=before_reload,
            watch_imports=watch_imports,
            restart_on_crash=restart_on_crash,
            crash_backoff=crash_backoff,
            crash_backoff_max=crash_backoff_max,
            sockets=held,
            overlap=overlap,
            ready_timeout=ready_timeout,
            launcher=None if python is None else Launcher(python),
            spare_exclude=tuple(spare_exclude),
            prepare=_prepare,
        )
        self._loop = ReloadLoop(config, watcher, self._requests, self._bus)
        self._tg: anyio.abc.TaskGroup | None = None
        self._main_scope: anyio.CancelScope | None = None
        self._finished = anyio.Event()
        self._exit_code: int | None = None

    def __repr__(self) -> str:
        return (
            f"<Supervisor {self.state.value} command={' '.join(self._command)!r} "
            f"pid={self.pid} generation={self.generation}>"
        )

    # -- what it is --------------------------------------------------------------------------

    @property
    def command(self) -> tuple[str, ...]:
        """The program and its arguments."""
        return self._command

    @property
    def stop_signal(self) -> int:
        """The signal that asks the child to stop."""
        return self._stop_signal

    @property
    def stop_timeout(self) -> float:
        """Seconds between the stop signal and SIGKILL."""
        return self._stop_timeout

    @property
    def state(self) -> SupervisorState:
        """Where the supervisor is in its life."""
        return self._loop.state

    @property
    def pid(self) -> int | None:
        """The running child's process id, or ``None`` when no child runs."""
        child = self._loop.current
        return child.pid if child is not None and child.alive else None

    @property
    def generation(self) -> int:
        """How many children this supervisor has started."""
        return self._loop.generation

    @property
    def last_returncode(self) -> int | None:
        """Exit status of the most recent child that ended, if any."""
        return self._loop.last_returncode

    @property
    def watched_files(self) -> int:
        """How many imported-module files are being watched (see ``watch_imports``)."""
        watcher = self._loop.watcher
        return 0 if watcher is None else watcher.watched_files

    @property
    def watch_count(self) -> int:
        """How many OS watches (or polled folders) the supervisor holds now."""
        watcher = self._loop.watcher
        return 0 if watcher is None else watcher.watch_count

    @property
    def sockets(self) -> tuple[str, ...]:
        """The addresses of the held sockets, once entered (a port 0 shows the port chosen)."""
        return tuple(held.name for held in self._loop.held)

    @property
    def guardian_pid(self) -> int | None:
        """The process id of the watchdog that cleans up if this process is killed (POSIX)."""
        return self._loop.guardian_pid

    # -- asking it things --------------------------------------------------------------------

    def events(self) -> EventStream:
        """Subscribe to lifecycle events from now on (see :class:`EventKind`)."""
        return self._bus.subscribe()

    async def reload(self, *, wait_ready: bool = False) -> bool:
        """Restart the child and return once the new one has started (or is ready).

        Concurrent calls, triggers and file changes coalesce into as few reloads as possible.

        Args:
            wait_ready: Also wait until the new child reports readiness (or exits).

        Returns:
            ``True`` when a new child was started, ``False`` when ``before_reload`` cancelled it
            or the new child could not be spawned.

        Raises:
            SupervisorClosedError: the supervisor is not running, or closed before the reload.
        """
        self._check_open()
        ticket = Ticket()
        self._requests.put(Request(Kind.RELOAD, ReloadReason.TRIGGER, ticket=ticket))
        await ticket.done.wait()
        child = ticket.started
        if child is None:
            if ticket.closed:
                raise SupervisorClosedError("the supervisor closed before the reload happened")
            return False
        if wait_ready:
            await wait_any(child.ready, child.exited)
        return True

    def request_reload(self) -> None:
        """Ask for a reload and return at once. Safe from other threads and signal handlers.

        Raises:
            SupervisorClosedError: the supervisor is not running.
        """
        if self.state in (SupervisorState.NEW, SupervisorState.CLOSED) or not self._requests.put_threadsafe(
            Request(Kind.RELOAD, ReloadReason.TRIGGER)
        ):
            raise SupervisorClosedError("the supervisor is not running")

    def kill(self) -> None:
        """Kill the running child's process group at once, without waiting (a second Ctrl+C)."""
        self._loop.kill()

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the running child's whole process group (nothing if none runs)."""
        child = self._loop.current
        if child is not None:
            child.send_signal(signum)

    async def wait(self) -> int:
        """Wait until the supervisor finishes and return the exit code.

        The supervisor finishes by itself when a child started through :func:`aioreload.run`
        reports that its program ended for good; the code is that program's. Otherwise it
        runs until the ``async with`` block ends or is cancelled.
        """
        await self._finished.wait()
        if self._exit_code is not None:
            return self._exit_code
        return self.last_returncode or 0

    # -- running it --------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> int:
        """Run until finished or cancelled; ``await tg.start(sup.run)`` returns once it is up.

        Returns:
            The exit code, as :meth:`wait`.
        """
        async with self:
            task_status.started()
            return await self.wait()

    async def __aenter__(self) -> Supervisor:
        if self.state is not SupervisorState.NEW or self._tg is not None:
            raise AioreloadError("a Supervisor can be entered only once; create a new one")
        self._requests.bind()
        self._main_scope = anyio.CancelScope()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self._main)
        except BaseException as exc:
            try:
                await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseException as group:
                _raise_single(group)
                raise
            _raise_single(exc)
            raise
        return self

    async def _main(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            assert self._main_scope is not None
            with self._main_scope:
                self._exit_code = await self._loop.run(task_status=task_status)
        finally:
            self._requests.close()
            self._bus.close()
            self._finished.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        assert self._main_scope is not None
        self._main_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The body of `async with` runs inside our task group; give its own exception
            # back to it rather than a group the caller did not ask for.
            _raise_single(group)
            raise

    def _check_open(self) -> None:
        if self.state in (SupervisorState.NEW, SupervisorState.CLOSED):
            raise SupervisorClosedError("the supervisor is not running; use it inside `async with`")


def _raise_single(exc: BaseException) -> None:
    """Raise the one exception inside nested groups, as itself; return if there are several."""
    single = exc
    while isinstance(single, BaseExceptionGroup):
        if len(single.exceptions) != 1:
            return
        single = single.exceptions[0]
    if single is exc:
        return
    cause, context = single.__cause__, single.__context__
    try:
        raise single
    finally:
        single.__cause__, single.__context__ = cause, context
        del single
