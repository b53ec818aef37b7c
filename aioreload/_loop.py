"""The reload loop: take a request, drain what else is pending, ask, stop, spawn.

Everything that may lead to a reload is a producer on one :class:`RequestStream` (file
changes, triggers from any thread, the child's messages, crash restarts, child exits); this
loop is its only consumer, so there is exactly one place where children are stopped and
started. A reload, step by step:

1. take the first request and drain everything pending with it;
2. with a ``before_reload`` hook, wait for the burst of changes to settle and ask the hook;
   without one, go on at once: the old child's stop then overlaps the debounce;
3. stop the old child (signal, timeout, SIGKILL of the group);
4. wait until the watcher has settled (quiet period over, no scan running), drain again:
   whatever arrived while the old child was stopping joins this reload;
5. spawn the new child and settle every ticket gathered.

With held sockets and a child that reported readiness, a reload overlaps instead
(blue-green): settle, start the new child while the old one serves, wait until it is ready,
make it the current child, and only then stop the old one (in the background: it finishes
its in-flight requests while the new one already answers). A new child that exits or is not
ready within ``ready_timeout`` is stopped and the old one keeps serving, so the socket is
never without a serving child. Requests that arrive meanwhile wait for the next turn.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, final

import anyio
import anyio.abc

from . import _ipc
from ._backoff import Backoff
from ._bus import EventBus
from ._childproc import ChildProcess, child_env, wait_any
from ._notify import PrivateFolder
from ._process import Guardian, signal_name
from ._requests import BeforeReload, Kind, ReloadRequest, Request, RequestStream, Ticket
from ._sockets import Address, HeldSocket, bind, name_of
from ._spare import MAX_LOST, SPARE_DELAY, Launcher, Preload, Warm, is_stale, rss_bytes
from ._types import EventKind, ReloadReason, SpawnError, SupervisorEvent, SupervisorState
from ._watch import Watcher

__all__ = ["LoopConfig", "ReloadLoop"]

logger = logging.getLogger(__name__)

# What a spare learns when it becomes a child (the rest of its environment is already right).
_STARTED_VARS = frozenset((_ipc.ENV_REASON, _ipc.ENV_CHANGES, _ipc.ENV_GENERATION))


@final
@dataclass(frozen=True)
class LoopConfig:
    """What the loop needs to know to start and stop children (validated by the Supervisor)."""

    command: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None
    stop_signal: int
    stop_timeout: float
    before_reload: BeforeReload | None
    watch_imports: bool
    restart_on_crash: bool
    crash_backoff: float
    crash_backoff_max: float
    sockets: tuple[Address | socket.socket, ...] = ()
    overlap: bool = True
    ready_timeout: float = 30.0
    launcher: Launcher | None = None
    """Start Python children through the spare's bootstrap, and keep a warm spare."""
    spare_exclude: tuple[str, ...] = ()
    prepare: bool = False
    """The program says when it imported its own module (``run``, ``MODULE:FUNCTION``, ``serve``):
    a reload keeps the old child until the new code has imported."""


@dataclass
class _Batch:
    """The requests one reload answers."""

    reason: ReloadReason | None = None
    changes: set[str] = field(default_factory=set)
    tickets: list[Ticket] = field(default_factory=list)

    def settle(self, started: ChildProcess | None, *, closed: bool = False) -> None:
        for ticket in self.tickets:
            ticket.settle(started, closed=closed)
        self.tickets.clear()


@final
class ReloadLoop:
    """Owns the children of one supervisor and the loop that replaces them."""

    def __init__(self, config: LoopConfig, watcher: Watcher | None, requests: RequestStream, bus: EventBus):
        self.config = config
        self.watcher = watcher
        self.requests = requests
        self.bus = bus
        self.state = SupervisorState.NEW
        self.current: ChildProcess | None = None
        self.generation = 0
        self.last_returncode: int | None = None
        self._backoff = Backoff(config.crash_backoff, config.crash_backoff_max)
        self._tg: anyio.abc.TaskGroup | None = None
        self._guardian: Guardian | None = None
        self._children: set[ChildProcess] = set()  # every child whose group may still be alive
        self.held: tuple[HeldSocket, ...] = ()
        self._retired: anyio.Event | None = None  # set once the child a successor replaced is gone
        self._spare: ChildProcess | None = None
        self._warm: Warm | None = None  # what the spare loaded, once it said so
        self._preload = Preload(config.spare_exclude, self._watched)
        self._preloading = 0
        self._spare_lost = 0  # spares that died before they were warm, in a row
        self._spare_settled = anyio.Event()  # the spare is warm, or gone
        self._spare_spawning = False
        self._preload_began = 0.0
        self._private = PrivateFolder()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> int:
        """Arm the watches, start the first child, report started, then reload until finished.

        Returns the exit code of a program that finished for good; cancelling stops the child.
        """
        self.state = SupervisorState.STARTING
        bound: list[HeldSocket] = []
        try:
            bound = self._hold_sockets()
            self._guardian = await Guardian.start(self.config.stop_signal)
        except BaseException:
            for held in bound:
                held.close()
            self.state = SupervisorState.CLOSED
            raise
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.watcher is not None:
                    await tg.start(self.watcher.run)  # armed before the first child exists
                self.current = await self._spawn(ReloadReason.FIRST_START, ())
                task_status.started()
                try:
                    code = await self._consume()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._stop_all()
                tg.cancel_scope.cancel()
            return code
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_all()  # in case the task group itself failed
                await self._guardian.aclose()
                self._private.close()
                for held in bound:
                    held.close()
            self.state = SupervisorState.CLOSED

    def _hold_sockets(self) -> list[HeldSocket]:
        """Bind the sockets to hold (raises ``ConfigError``); returns those we bound (ours to close)."""
        bound: list[HeldSocket] = []
        held = []
        try:
            for item in self.config.sockets:
                if isinstance(item, Address):
                    bound.append(bind(item))
                    held.append(bound[-1])
                else:
                    held.append(HeldSocket(item, name_of(item)))
        except BaseException:
            for one in bound:
                one.close()
            raise
        self.held = tuple(held)
        return bound

    # -- consuming requests ------------------------------------------------------------------

    async def _consume(self) -> int:
        while True:
            batch = _Batch()
            try:
                final = self._absorb(batch, [await self.requests.take(), *self.requests.drain()])
                if final is None and batch.reason is not None:
                    final = await self._reload(batch)
                if final is not None:
                    batch.settle(None, closed=True)
                    return final
            finally:  # cancelled or failed mid-reload: no caller of reload() is left waiting
                batch.settle(None, closed=True)

    def _absorb(self, batch: _Batch, requests: Iterable[Request]) -> int | None:
        """Fold ``requests`` into ``batch``; the exit code when the program finished for good."""
        final: int | None = None
        for request in requests:
            origin = request.origin
            if request.kind is Kind.EXITED:
                assert origin is not None
                code = self._exited(origin)
                final = code if final is None else final
                continue
            if origin is not None and (origin is not self.current or origin.stopping):
                if request.ticket is not None:  # a stale child's trigger or crash timer
                    request.ticket.settle(None)
                continue
            if batch.reason is None:
                batch.reason = request.reason
            batch.changes |= request.changes
            if request.ticket is not None:  # kept even after a final exit: settled with the batch
                batch.tickets.append(request.ticket)
        return final

    def _exited(self, child: ChildProcess) -> int | None:
        """A child's exit came in: report it unless we stopped it; the code if it finished."""
        if child is self._spare:  # killed, or its preload crashed: the next child starts cold
            logger.info("spare [pid %d] exited (%s)", child.pid, child.returncode)
            self._spare = self._warm = None
            self._spare_settled.set()
            self._spare_lost += 1
            assert self._tg is not None
            self._tg.start_soon(self._clean_up, child)
            self._spare_for(self.current)
            return None
        if child is not self.current or child.stopping:
            return None
        code = child.returncode
        self.last_returncode = code
        self.state = SupervisorState.WAITING
        finished = child.final_code is not None
        self._emit(EventKind.EXITED, child, returncode=code, message="finished" if finished else "")
        if child.final_code is not None:
            return child.final_code
        assert self._tg is not None
        self._tg.start_soon(self._clean_up, child)
        if self.config.restart_on_crash and code != 0:
            delay = self._backoff.next(lived=time.monotonic() - child.started)
            logger.info("child crashed; restarting in %.1fs", delay)
            self._tg.start_soon(self._restart_later, child, delay)
        return None

    async def _restart_later(self, child: ChildProcess, delay: float) -> None:
        await anyio.sleep(delay)
        self.requests.put(Request(Kind.RELOAD, ReloadReason.CRASH, origin=child))

    async def _reload(self, batch: _Batch) -> int | None:
        """Replace the current child; the exit code instead when its program finished meanwhile."""
        assert batch.reason is not None
        hook = self.config.before_reload
        if hook is not None:
            final = await self._settle(batch)
            if final is not None:
                return final
            if not await self._approve(hook, batch):
                self._emit(EventKind.SKIPPED, None, reason=batch.reason, changes=sorted(batch.changes))
                batch.settle(None)
                return None
        settled = hook is not None
        if self._can_overlap() or self._can_prepare():
            if not settled:
                settled = True
                final = await self._settle(batch)
                if final is not None:
                    return final
            # Asked again: the child may have exited while the burst settled.
            if self._can_overlap():
                await self._overlap(batch)
                return None
            if self._can_prepare():
                return await self._prepared_reload(batch)
        final = await self._stop_current()  # without a hook this overlaps the debounce
        if final is not None:
            return final
        if not settled:
            final = await self._settle(batch)
            if final is not None:
                return final
        try:
            self.current = await self._spawn(batch.reason, sorted(batch.changes))
        except SpawnError as exc:
            self.current = None
            self.state = SupervisorState.WAITING
            self._emit(EventKind.SPAWN_FAILED, None, reason=batch.reason, message=str(exc))
            batch.settle(None)
            return None
        batch.settle(self.current)
        return None

    def _can_prepare(self) -> bool:
        """Whether the new code may import while the current child still runs (see ``prepare``)."""
        child = self.current
        return self.config.prepare and child is not None and child.alive and not child.stopping

    async def _prepared_reload(self, batch: _Batch) -> int | None:
        """Import the new code beside the running child; replace the child only if it imported."""
        assert batch.reason is not None
        old = self.current
        for attempt in (1, 2):
            try:
                candidate = await self._spawn(batch.reason, sorted(batch.changes), prepare=True)
            except SpawnError as exc:
                self._emit(EventKind.SPAWN_FAILED, None, reason=batch.reason, message=str(exc))
                batch.settle(None)
                return None
            self.state = SupervisorState.RUNNING  # the old one still runs
            with anyio.move_on_after(self.config.ready_timeout):
                await wait_any(candidate.prepared, candidate.exited)
            if candidate.prepared.is_set():
                break
            await self._stop_quietly(candidate)
            code = candidate.returncode
            if candidate.from_spare and code is not None and code < 0 and attempt == 1:
                logger.info(
                    "spare [pid %d] died of signal %d as it started; starting cold", candidate.pid, -code
                )
                continue  # killed from outside (`pkill -f app.py` finds spares too): not the code's fault
            if not candidate.exited.is_set():
                why = f"the new code did not import within {self.config.ready_timeout:g} s"
            elif code is not None and code < 0:
                why = f"the new child died of {signal_name(-code)} before its code imported"
            else:
                why = f"the new code did not import (the new child exited with code {code})"
            running = f"[pid {old.pid}]" if old is not None and old.alive else "nothing (it exited meanwhile)"
            self._emit(
                EventKind.RELOAD_FAILED, candidate, returncode=code, message=f"{why}; still running {running}"
            )
            batch.settle(None)
            self._spare_for(old)  # the failed one used it up
            return None
        final = await self._stop_current()
        if final is not None:
            await self._stop_quietly(candidate)
            return final
        try:
            await candidate.send("go")
        except OSError:
            logger.debug("child %d was gone before it could go", candidate.pid)
        self.current = candidate
        self.state = SupervisorState.RUNNING
        self._announce(candidate)
        batch.settle(candidate)
        return None

    def _can_overlap(self) -> bool:
        """Whether the next child may start while the current one serves (see the docstring)."""
        child = self.current
        return (
            self.config.overlap
            and bool(self.held)
            and child is not None
            and child.alive
            and not child.stopping
            and child.ready.is_set()
        )

    async def _overlap(self, batch: _Batch) -> None:
        """Start the next child beside the current one; swap once it is ready, else keep the old."""
        assert batch.reason is not None
        assert self._tg is not None
        if self._retired is not None:  # never more than two children: the one serving, the next
            await self._retired.wait()
        old = self.current
        try:
            candidate = await self._spawn(batch.reason, sorted(batch.changes))
        except SpawnError as exc:
            self._emit(EventKind.SPAWN_FAILED, None, reason=batch.reason, message=str(exc))
            batch.settle(None)
            return
        self.state = SupervisorState.RUNNING  # the old one still serves
        problem = await self._until_ready(candidate)
        if problem is None:
            self.current = candidate
            batch.settle(candidate)
            if old is not None:
                self._retired = anyio.Event()
                self._tg.start_soon(self._retire, old, self._retired)
            return
        if candidate.alive:
            candidate.stopping = True
            await candidate.stop(self.config.stop_signal, self.config.stop_timeout)
        else:
            await self._clean_up(candidate)
        await candidate.exited.wait()
        await self._forget(candidate)
        serving = f"[pid {old.pid}]" if old is not None and old.alive else "nothing (it exited meanwhile)"
        self._emit(
            EventKind.RELOAD_FAILED,
            candidate,
            returncode=candidate.returncode,
            message=f"{problem}; still serving {serving}",
        )
        batch.settle(None)
        self._spare_for(old)  # the failed one used it up

    async def _until_ready(self, child: ChildProcess) -> str | None:
        """Wait until ``child`` is ready: ``None``, or why it will not be."""
        with anyio.move_on_after(self.config.ready_timeout):
            await wait_any(child.ready, child.exited)
        if child.ready.is_set():
            return None
        if not child.alive:
            await child.exited.wait()
            code = child.returncode
            how = f"died of signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            return f"the new child {how} before it was ready"
        return f"the new child was not ready after {self.config.ready_timeout:g} s"

    async def _retire(self, child: ChildProcess, retired: anyio.Event) -> None:
        """Stop a child that a ready successor replaced (it finishes its in-flight work)."""
        self._emit(EventKind.STOPPING, child, message=signal_name(self.config.stop_signal))
        began = time.monotonic()
        code, killed = await self._stop_quietly(child)
        retired.set()
        elapsed = time.monotonic() - began
        self._emit(EventKind.STOPPED, child, returncode=code, elapsed=elapsed, killed=killed)

    async def _clean_up(self, child: ChildProcess) -> None:
        """After ``child`` exited by itself: stop what it left in its group, then forget it."""
        await child.clean_up(self.config.stop_signal, self.config.stop_timeout)
        await self._forget(child)

    async def _forget(self, child: ChildProcess) -> None:
        """Its group is gone: the watchdog no longer needs to know it."""
        self._children.discard(child)
        assert self._guardian is not None
        await self._guardian.discard(child.pid)

    async def _stop_all(self) -> None:
        """Stop every child: the current one (with its exit code logic), and any other left."""
        await self._stop_current()
        others = [child for child in self._children if child is not self.current]
        if others:
            async with anyio.create_task_group() as tg:
                for child in others:
                    child.stopping = True
                    tg.start_soon(child.stop, self.config.stop_signal, self.config.stop_timeout)
            self._children.difference_update(others)

    async def _settle(self, batch: _Batch) -> int | None:
        """Wait for the burst to end, then gather every request that arrived meanwhile."""
        if self.watcher is not None:
            await self.watcher.settled()
        final = self._absorb(batch, self.requests.drain())
        if final is None and batch.changes:
            self._emit(EventKind.CHANGED, None, changes=sorted(batch.changes))
        return final

    async def _approve(self, hook: BeforeReload, batch: _Batch) -> bool:
        assert batch.reason is not None
        request = ReloadRequest(batch.reason, tuple(sorted(batch.changes)))
        try:
            result: Any = hook(request)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            logger.exception("before_reload hook failed; reloading anyway")
            return True
        return result is not False

    # -- children ----------------------------------------------------------------------------

    async def _spawn(
        self, reason: ReloadReason, changes: Sequence[str], *, prepare: bool = False
    ) -> ChildProcess:
        """Start the next child: from the warm spare when there is a fresh one, else cold.

        With ``prepare`` its program imports its own module and waits for ``go``; it is not
        announced (STARTED) then: :meth:`_prepared_reload` does that once it runs.
        """
        assert self._tg is not None
        self.state = SupervisorState.STARTING
        self.generation += 1
        began = time.monotonic()
        launcher = self.config.launcher
        child = None if launcher is None else await self._take_spare()
        from_spare = child is not None
        if child is not None and not await self._launch(child, reason, changes, prepare):
            logger.info("spare [pid %d] was gone when it was to start; starting cold", child.pid)
            self._discard(child)
            child, from_spare = None, False
        if child is None:
            command = self.config.command if launcher is None else launcher.argv
            child = await self._start_process(command, reason, changes, prepare=prepare and launcher is None)
            if not await self._launch(child, reason, changes, prepare):  # its exit is on its way
                logger.debug("child %d was gone before it could start", child.pid)
        child.launched = time.monotonic()
        child.from_spare = from_spare
        child.launch_elapsed = child.launched - began if from_spare else child.launched - child.started
        self.state = SupervisorState.RUNNING
        if not prepare:
            self._announce(child)
        return child

    async def _launch(
        self, child: ChildProcess, reason: ReloadReason, changes: Sequence[str], prepare: bool
    ) -> bool:
        """Make ``child`` this generation's; through the bootstrap, tell it to start. ``False``: gone."""
        child.generation, child.reason, child.changes = self.generation, reason, tuple(changes)
        launcher = self.config.launcher
        if launcher is None:
            return True
        env = self._child_env(reason, changes, child)
        try:
            await child.send_frame(launcher.start(env, prepare=prepare))
        except OSError:
            return False
        return True

    async def _start_process(
        self, command: Sequence[str], reason: ReloadReason, changes: Sequence[str], *, prepare: bool = False
    ) -> ChildProcess:
        """Spawn a process (a child, a cold one through the bootstrap, or a spare) and follow it."""
        assert self._guardian is not None
        assert self._tg is not None
        config = self.config
        child = await ChildProcess.spawn(
            command,
            env=config.env,
            cwd=config.cwd,
            stop_signal=config.stop_signal,
            generation=self.generation,
            reason=reason,
            changes=changes,
            track_imports=config.watch_imports,
            guardian=self._guardian,
            held=self.held,
            notify_path=self._private.next_path(),
            prepare=prepare,
        )
        self._children.add(child)
        self._tg.start_soon(child.follow, self.requests, self._on_message)
        return child

    def _child_env(self, reason: ReloadReason, changes: Sequence[str], child: ChildProcess) -> dict[str, str]:
        """The variables a spare takes on when it becomes ``child`` (its own reason, generation...)."""
        env = child_env(
            {},
            reason=reason,
            changes=changes,
            generation=self.generation,
            spawned_ns=child.spawned_ns,
            track_imports=self.config.watch_imports,
            fd=None,
        )
        return {key: value for key, value in env.items() if key in _STARTED_VARS}

    def _announce(self, child: ChildProcess) -> None:
        """The child runs its program: say so, and get its successor's spare ready."""
        assert self._tg is not None
        logger.info(
            "started %s [pid %d] (%s%s)",
            " ".join(self.config.command),
            child.pid,
            child.reason.value,
            ", from the spare" if child.from_spare else "",
        )
        self._emit(
            EventKind.STARTED,
            child,
            reason=child.reason,
            changes=child.changes,
            elapsed=child.launch_elapsed,
            message="spare" if child.from_spare else "",
        )
        self._spare_for(child)

    def _spare_for(self, child: ChildProcess | None) -> None:
        """Get a spare ready to replace ``child`` (if spares are on)."""
        if child is not None and self.config.launcher is not None:
            assert self._tg is not None
            self._tg.start_soon(self._prepare_spare, child)

    # -- the warm spare ----------------------------------------------------------------------

    async def _take_spare(self) -> ChildProcess | None:
        """The spare, once warm, if nothing it loaded changed since; else ``None`` (start cold).

        A spare still preloading is waited for: what it has left to import is a part of what
        a cold start would import, and only a warm spare can be checked.
        """
        spare = self._spare
        if spare is None:
            return None
        if self._warm is None:
            with anyio.move_on_after(self.config.ready_timeout):
                await wait_any(self._spare_settled, spare.exited)
        spare, warm = self._spare, self._warm
        self._spare = self._warm = None
        if spare is None:  # it died meanwhile
            return None
        reason = "it was not warm in time" if warm is None else None
        if warm is not None:
            reason = await anyio.to_thread.run_sync(is_stale, warm)
        if reason is None and spare.alive:
            return spare
        logger.info("spare [pid %d] not used: %s; starting cold", spare.pid, reason or "it exited")
        self._discard(spare)
        return None

    def _discard(self, spare: ChildProcess) -> None:
        assert self._tg is not None
        spare.stopping = True
        self._tg.start_soon(self._stop_quietly, spare)

    async def _stop_quietly(self, child: ChildProcess) -> tuple[int, bool]:
        """Stop a child that is not the current one, wait until it is gone, forget it.

        Returns:
            Its exit status, and whether SIGKILL was needed.
        """
        result = await child.stop(self.config.stop_signal, self.config.stop_timeout)
        await child.exited.wait()
        await self._forget(child)
        return result

    async def _prepare_spare(self, after: ChildProcess) -> None:
        """Once ``after`` is ready (or has run a while), start the spare that will replace it."""
        launcher = self.config.launcher
        assert launcher is not None
        with anyio.move_on_after(SPARE_DELAY):  # not before: it must not slow the child's start
            await after.ready.wait()
        if (
            not after.alive
            or after.stopping
            or self._spare is not None
            or self._spare_spawning
            or self._spare_lost >= MAX_LOST
            or not self._preload.names
        ):
            return
        names = list(self._preload.names)
        self._spare_settled = anyio.Event()
        self._spare_spawning = True  # one at a time: several tasks may want a spare at once
        try:
            spare = await self._start_process(launcher.argv, ReloadReason.FIRST_START, ())
        except (SpawnError, OSError) as exc:  # a spare is a convenience: never the end of us
            logger.info("could not start a spare: %s", exc)
            self._spare_lost += 1
            self._spare_settled.set()
            return
        finally:
            self._spare_spawning = False
        spare.generation = 0
        self._spare, self._warm = spare, None
        self._preloading = len(names)
        self._preload_began = time.monotonic()
        try:
            await spare.send_frame({"op": "preload", "modules": names})
        except OSError:
            logger.debug("spare [pid %d] died before its preload list", spare.pid)

    def _spare_warm(self, child: ChildProcess, message: Mapping[str, Any]) -> None:
        if child is not self._spare:
            return
        warm = Warm.from_message(message, self._preloading)
        self._spare_settled.set()
        if warm is None:  # a project module shadows a library one: cold starts from now on
            logger.info("spare [pid %d] loaded code from outside the libraries; spares are off", child.pid)
            self._spare = None
            self._spare_lost = MAX_LOST
            self._discard(child)
            return
        warm.elapsed = time.monotonic() - self._preload_began
        self._warm = warm
        self._spare_lost = 0
        rss = rss_bytes(child.pid)
        memory = f", {rss / 2**20:.0f} MiB" if rss is not None else ""
        if warm.failed:
            logger.debug("spare [pid %d] could not import: %s", child.pid, ", ".join(warm.failed))
        self._emit(
            EventKind.SPARE_READY, child, elapsed=warm.elapsed, message=f"{warm.preloaded} modules{memory}"
        )

    async def _learn(self, modules: object) -> None:
        """A child's import report: what the next spare preloads (filtered in a worker thread)."""
        added = await anyio.to_thread.run_sync(self._preload.learn, modules)
        if added:
            logger.debug("spare: %d more modules to preload (%d in all)", added, len(self._preload.names))
            if self._spare is None:  # the report comes just after "ready": its spare is due now
                self._spare_for(self.current)

    def _watched(self, path: str) -> bool:
        """Whether the watcher reports changes to ``path``: never preload such a file."""
        watcher = self.watcher
        if watcher is None or not watcher.roots:
            return False
        inside = any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in watcher.roots)
        return inside and watcher.filter(path)

    def _on_message(self, child: ChildProcess, op: str, message: Mapping[str, Any]) -> None:
        assert self._tg is not None
        if op == "reload":
            self.requests.put(Request(Kind.RELOAD, ReloadReason.TRIGGER, origin=child))
        elif op == "ready":
            self._emit(EventKind.READY, child, elapsed=time.monotonic() - child.launched)
        elif op == "files" and self.watcher is not None and self.config.watch_imports:
            files = message.get("files")
            if isinstance(files, dict):
                self.watcher.watch_files(
                    {path: mtime for path, mtime in files.items() if isinstance(mtime, int)}
                )
        elif op == "modules" and self.config.launcher is not None:
            self._tg.start_soon(self._learn, message.get("modules"))
        elif op == "warm":
            self._spare_warm(child, message)

    async def _stop_current(self) -> int | None:
        """Stop the current child if it runs (again, if an earlier stop was cancelled).

        Returns its program's exit code when it said it finished for good before the stop
        reached it (``aioreload.run``: a program that wrote a watched file, then returned).
        """
        child = self.current
        if child is None:
            return None
        if not child.alive:  # it exited by itself: what it left in its group goes too
            await child.clean_up(self.config.stop_signal, self.config.stop_timeout)
            await self._forget(child)
            await child.exited.wait()  # its follower has read what it said before exiting
            if child.final_code is not None and not child.stopping:
                child.stopping = True  # reported here: its exit notice is no news any more
                self.last_returncode = child.returncode
                self._emit(EventKind.EXITED, child, returncode=child.returncode, message="finished")
                return child.final_code
            return None
        self.state = SupervisorState.STOPPING
        signame = signal_name(self.config.stop_signal)
        self._emit(EventKind.STOPPING, child, message=signame)
        began = time.monotonic()
        code, killed = await child.stop(self.config.stop_signal, self.config.stop_timeout)
        await self._forget(child)
        self.last_returncode = code
        self.state = SupervisorState.WAITING
        elapsed = time.monotonic() - began
        self._emit(EventKind.STOPPED, child, returncode=code, elapsed=elapsed, killed=killed)
        await child.exited.wait()  # its follower has read what it said before exiting
        if child.final_code is not None:
            self._emit(EventKind.EXITED, child, returncode=code, message="finished")
            return child.final_code
        return None

    @property
    def guardian_pid(self) -> int | None:
        """The watchdog's process id, while it runs."""
        return None if self._guardian is None else self._guardian.pid

    def kill(self) -> None:
        """Kill the current child's process group now."""
        if self.current is not None and self.current.alive:
            self.current.kill()

    def _emit(
        self,
        kind: EventKind,
        child: ChildProcess | None,
        *,
        reason: ReloadReason | None = None,
        changes: Sequence[str] = (),
        returncode: int | None = None,
        elapsed: float | None = None,
        killed: bool = False,
        message: str = "",
    ) -> None:
        self.bus.emit(
            SupervisorEvent(
                kind,
                child.generation if child is not None else self.generation,
                pid=child.pid if child is not None else None,
                reason=reason,
                changes=tuple(changes),
                returncode=returncode,
                elapsed=elapsed,
                killed=killed,
                message=message,
            )
        )
