"""One child's life: spawned with its private channel, followed until it exits, stopped on request.

Several can exist at once (the serving child and its successor); each owns its process group
(``_process.Child``) and its end of the channel, and closes both. It never decides anything:
what its program says is handed to the owner's callback, and its exit is put on the request
stream for the loop to act on.
"""

from __future__ import annotations

import json
import logging
import marshal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

import anyio

from . import _ipc, _notify, _sockets
from ._notify import NotifyListener
from ._process import Child, Guardian
from ._requests import Kind, Request, RequestStream
from ._types import ReloadReason

if sys.platform != "win32":
    import fcntl

__all__ = ["ChildProcess", "OnMessage", "wait_any"]

logger = logging.getLogger(__name__)

# The child's environment variable may not exceed the kernel's per-string limit (128 KiB on Linux).
_MAX_CHANGES_ENV = 32 * 1024

OnMessage = Callable[["ChildProcess", str, Mapping[str, Any]], None]
"""Receives ``reload``, ``ready`` and ``files`` messages from a child's program."""


async def wait_any(*events: anyio.Event) -> None:
    """Return once any of ``events`` is set (a child ready or exited, prepared or exited...)."""
    async with anyio.create_task_group() as tg:

        async def until(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(until, event)


def child_env(
    base: Mapping[str, str],
    *,
    reason: ReloadReason,
    changes: Sequence[str],
    generation: int,
    spawned_ns: int,
    track_imports: bool,
    fd: int | None,
    held: Sequence[_sockets.HeldSocket] = (),
    notify: str | None = None,
    prepare: bool = False,
) -> dict[str, str]:
    """The environment of a new child: ``base`` plus what aioreload tells it.

    The socket-activation variables describe ``held`` (none when empty); ``NOTIFY_SOCKET``
    is the child's private one, never the supervisor's own.
    """
    env = _sockets.listen_env(base, held)
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):  # systemd's, for the supervisor alone
        env.pop(name, None)
    if notify is None:
        env.pop(_notify.ENV, None)
    else:
        env[_notify.ENV] = notify
    env[_ipc.ENV_REASON] = reason.value
    encoded = json.dumps(list(changes))
    while len(encoded) > _MAX_CHANGES_ENV and changes:
        changes = changes[: len(changes) // 2]
        encoded = json.dumps(list(changes))
    env[_ipc.ENV_CHANGES] = encoded
    env[_ipc.ENV_GENERATION] = str(generation)
    env[_ipc.ENV_SPAWNED] = str(spawned_ns)
    if track_imports:
        env[_ipc.ENV_TRACK] = "1"
    else:
        env.pop(_ipc.ENV_TRACK, None)
    if fd is None:
        env.pop(_ipc.ENV_FD, None)
    else:
        env[_ipc.ENV_FD] = str(fd)
    if prepare:
        env[_ipc.ENV_PREPARE] = "1"
    else:
        env.pop(_ipc.ENV_PREPARE, None)
    return env


@final
class ChildProcess:
    """A running child program and what its supervisor knows about it.

    Attributes:
        generation: Counts children started by the supervisor, from 1.
        reason: Why it was started.
        changes: The changed paths behind its start.
        ready: Set when its program reported readiness.
        prepared: Set when its program imported its own module and waits for ``go``.
        exited: Set once it has exited and its channel is drained.
        final_code: Set when its program said it finished for good (``aioreload.run``).
        stopping: The supervisor is stopping it (its exit is no surprise).
    """

    def __init__(
        self,
        process: Child,
        *,
        generation: int,
        reason: ReloadReason,
        changes: Sequence[str],
        channel: socket.socket | None,
        spawned_ns: int,
        notify: NotifyListener | None = None,
    ) -> None:
        self._process = process
        self.generation = generation
        self.reason = reason
        self.changes = tuple(changes)
        self._channel = channel
        self._notify = notify
        self.status = ""
        """The last ``STATUS=`` its program sent on its notify socket."""
        self.launched = process.started
        """When its program was told to run (monotonic): a spare is spawned long before."""
        self.from_spare = False
        self.launch_elapsed = 0.0
        self.spawned_ns = spawned_ns
        self.ready = anyio.Event()
        self.prepared = anyio.Event()
        self.exited = anyio.Event()
        self.final_code: int | None = None
        self.stopping = False
        self._buffer = b""

    def __repr__(self) -> str:
        state = "exited" if self.exited.is_set() else "stopping" if self.stopping else "running"
        return f"<ChildProcess {state} pid={self.pid} generation={self.generation}>"

    @classmethod
    async def spawn(
        cls,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        stop_signal: int,
        generation: int,
        reason: ReloadReason,
        changes: Sequence[str],
        track_imports: bool,
        guardian: Guardian,
        held: Sequence[_sockets.HeldSocket] = (),
        notify_path: str | None = None,
        prepare: bool = False,
    ) -> ChildProcess:
        """Start ``command`` with a fresh channel; the guardian learns its process group.

        ``held`` sockets become its descriptors 3, 4, ...; a notify socket is bound at
        ``notify_path`` for it alone.

        Raises:
            SpawnError: the program is missing or cannot be executed.
        """
        ours: socket.socket | None = None
        theirs: socket.socket | None = None
        notify: NotifyListener | None = None
        spawned_ns = time.time_ns()
        try:
            notify = None if notify_path is None else NotifyListener.bind(notify_path)
            if _ipc.SUPPORTED:
                ours, theirs = _ipc.make_pair()
                if held and theirs.fileno() < _sockets.FIRST_FD + len(held):
                    # Its number must survive the moves to 3, 4, ... in the child.
                    moved = socket.socket(fileno=fcntl.fcntl(theirs, fcntl.F_DUPFD_CLOEXEC, 16))
                    theirs.close()
                    theirs = moved
            full_env = child_env(
                env,
                reason=reason,
                changes=changes,
                generation=generation,
                spawned_ns=spawned_ns,
                track_imports=track_imports,
                fd=None if theirs is None else theirs.fileno(),
                held=held,
                notify=None if notify is None else notify.path,
                prepare=prepare,
            )
            with anyio.CancelScope(shield=True):  # a spawned child is always adopted
                process = await Child.spawn(
                    command,
                    env=full_env,
                    cwd=cwd,
                    pass_fds=() if theirs is None else (theirs.fileno(),),
                    listen_fds=[h.socket.fileno() for h in held],
                    stop_signal=stop_signal,
                )
                await guardian.add(process.pid)
        except BaseException:
            if ours is not None:
                ours.close()
            if notify is not None:
                notify.close()
            raise
        finally:
            if theirs is not None:
                theirs.close()
        return cls(
            process,
            generation=generation,
            reason=reason,
            changes=changes,
            channel=ours,
            spawned_ns=spawned_ns,
            notify=notify,
        )

    # -- what it is ------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """Its process id (also its process group id on POSIX)."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """Its exit status once reaped (``-N`` for signal N on POSIX), else ``None``."""
        return self._process.returncode

    @property
    def started(self) -> float:
        """When it was spawned, on the monotonic clock."""
        return self._process.started

    @property
    def alive(self) -> bool:
        """Not reaped yet."""
        return self._process.returncode is None

    # -- its life ----------------------------------------------------------------------------

    async def follow(self, requests: RequestStream, on_message: OnMessage) -> None:
        """Read its messages until it exits, then report the exit on ``requests``.

        The channel is closed here, synchronously, so no descriptor outlives the child's
        follower (and so the supervisor).
        """
        try:
            async with anyio.create_task_group() as tg:
                if self._channel is not None:
                    tg.start_soon(self._listen, self._channel, on_message)
                if self._notify is not None:
                    tg.start_soon(self._listen_notify, self._notify, on_message)
                await self._process.wait()
                tg.cancel_scope.cancel()
            if self._channel is not None:
                self._read_available(self._channel, on_message)  # what it said just before exiting
            if self._notify is not None:
                self._read_notify(self._notify, on_message)
        finally:
            if self._channel is not None:
                self._channel.close()
            if self._notify is not None:
                self._notify.close()
            self.exited.set()
        requests.put(Request(Kind.EXITED, origin=self))

    async def _listen_notify(self, notify: NotifyListener, on_message: OnMessage) -> None:
        while True:
            await anyio.wait_readable(notify.socket)
            self._read_notify(notify, on_message)

    def _read_notify(self, notify: NotifyListener, on_message: OnMessage) -> None:
        for fields in notify.messages():
            if "STATUS" in fields:
                self.status = fields["STATUS"]
                logger.debug("pid %d status: %s", self.pid, self.status)
            if fields.get("READY") == "1":
                self._handle({"op": "ready"}, on_message)

    async def _listen(self, sock: socket.socket, on_message: OnMessage) -> None:
        sock.setblocking(False)
        while True:
            await anyio.wait_readable(sock)
            if not self._read_available(sock, on_message):
                return

    def _read_available(self, sock: socket.socket, on_message: OnMessage) -> bool:
        """Handle every complete message readable now; ``False`` at end of stream."""
        sock.setblocking(False)
        buffer = self._buffer
        open_ = True
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                open_ = False
                break
            if not data:
                open_ = False
                break
            buffer += data
        *lines, self._buffer = buffer.split(b"\n")
        for line in lines:
            message = _ipc.decode(line)
            if message is not None:
                self._handle(message, on_message)
        return open_

    def _handle(self, message: Mapping[str, Any], on_message: OnMessage) -> None:
        op = message["op"]
        if op == "exit":
            code = message.get("code")
            self.final_code = code if isinstance(code, int) else 1
        elif op == "ready":
            if not self.ready.is_set():
                self.ready.set()
                on_message(self, op, message)
        elif op == "prepared":
            self.prepared.set()
        elif op in ("reload", "files", "modules", "warm"):
            on_message(self, op, message)
        else:
            logger.debug("ignoring unknown message %r from pid %d", op, self.pid)

    async def send(self, op: str, **fields: Any) -> None:
        """Send one message to its program (a spare, or one told to prepare).

        Raises:
            OSError: it is gone.
        """
        await self._send_bytes(_ipc.encode(op, **fields))

    async def send_frame(self, message: Mapping[str, Any]) -> None:
        """Send one message to a spare's bootstrap: a length, then ``marshal`` version 4 of it.

        Raises:
            OSError: it is gone.
        """
        payload = marshal.dumps(dict(message), 4)
        await self._send_bytes(len(payload).to_bytes(4, "big") + payload)

    async def _send_bytes(self, data: bytes) -> None:
        if self._channel is None:
            raise OSError("no channel to this child")
        view = memoryview(data)
        self._channel.setblocking(False)
        while view:
            try:
                view = view[self._channel.send(view) :]
            except BlockingIOError:
                await anyio.wait_writable(self._channel)

    async def stop(self, signum: int, timeout: float) -> tuple[int, bool]:
        """Stop its process group gracefully (``signum``, ``timeout``, then SIGKILL).

        Returns:
            Its exit status and whether SIGKILL was needed.
        """
        self.stopping = True
        return await self._process.stop(signum, timeout)

    async def clean_up(self, signum: int, timeout: float) -> None:
        """After it exited by itself: stop what it left running in its process group."""
        await self._process.stop(signum, timeout)

    def kill(self) -> None:
        """Kill its whole process group now."""
        self._process.kill()

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to its whole process group."""
        if self.alive:
            self._process.send_signal(signum)
