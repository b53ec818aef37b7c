"""The API a supervised program uses to talk to its supervisor. Standard library only.

Importing this module (or ``aioreload``) in the child must stay cheap: it sits on every
reload's critical path, so nothing here imports asyncio, anyio or watchfiles.

Example::

    import aioreload

    async def on_update_command() -> None:
        if await tests_pass():
            await aioreload.trigger_reload()
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import final

from . import _ipc
from ._types import NotSupervisedError, ReloadReason

__all__ = [
    "ReloadInfo",
    "is_supervised",
    "last_reload",
    "ready",
    "report_ready",
    "request_reload",
    "sockets",
    "trigger_reload",
]

_lock = threading.Lock()
_channel: _ipc.ChildChannel | None = None
_opened = False
_sockets: list[socket.socket] | None = None

_LISTEN_FDS_START = 3  # the socket-activation protocol's first descriptor (sd_listen_fds)


def _get_channel() -> _ipc.ChildChannel | None:
    global _channel, _opened
    with _lock:
        if not _opened:
            _opened = True
            _channel = _ipc.ChildChannel.from_environ()
            if _channel is not None and os.environ.get(_ipc.ENV_TRACK) == "1":
                from . import _modules

                _modules.install(_channel)
        return _channel


def _send(op: str, **fields: object) -> None:
    channel = _get_channel()
    if channel is None:
        raise NotSupervisedError(
            f"this process was not started by an aioreload supervisor, so {op!r} has no one to "
            "tell; run it under `aioreload -- ...` or `aioreload.run(main)`, or check "
            "aioreload.is_supervised() first"
        )
    try:
        channel.send(op, **fields)
    except OSError as exc:
        raise NotSupervisedError(f"the aioreload supervisor is gone ({exc.strerror or exc})") from exc


def _prepared() -> None:
    """Where a program that knows its own module has imported it (``run``, ``_target``, ``_serve``).

    Told to prepare (the supervisor keeps the old child running until the new code imports),
    say so and wait for the word to go; a supervisor that went away meanwhile ends us.
    """
    if os.environ.pop(_ipc.ENV_PREPARE, None) != "1":
        return
    channel = _get_channel()
    if channel is None:
        return
    try:
        channel.send("prepared")
    except OSError:
        raise SystemExit(0) from None
    while True:
        message = channel.receive()
        if message is None:
            raise SystemExit(0)
        if message["op"] == "go":
            return


def is_supervised() -> bool:
    """Whether this process was started by an aioreload supervisor that can hear it."""
    return _get_channel() is not None


def request_reload() -> None:
    """Ask the supervisor to restart this program. Returns at once; thread-safe.

    The supervisor then stops this process gracefully (its stop signal) and starts a new one.
    Several requests before the stop coalesce into one reload.

    Raises:
        NotSupervisedError: no supervisor started this process, or it is gone.
    """
    _send("reload")


async def trigger_reload() -> None:
    """Ask the supervisor to restart this program (the coroutine form of :func:`request_reload`).

    The request is a few bytes on a local socket, so it never blocks the event loop for long.

    Raises:
        NotSupervisedError: no supervisor started this process, or it is gone.
    """
    _send("reload")


def report_ready() -> None:
    """Tell the supervisor this program is serving. Returns at once; thread-safe.

    Does nothing when not supervised, so a program can call it unconditionally.
    """
    if is_supervised():
        _send("ready")
        spare = sys.modules.get("aioreload._sparechild")  # started through the spare's bootstrap
        if spare is not None:
            spare.report_modules()  # what it imported to get here: the next spare preloads it


async def ready() -> None:
    """Tell the supervisor this program is serving (the coroutine form of :func:`report_ready`)."""
    report_ready()


@final
@dataclass(frozen=True)
class ReloadInfo:
    """Why this process was started.

    Attributes:
        reason: First start, file change, trigger or crash restart.
        changes: Changed paths behind the reload (may be cut short for very large changes).
        generation: 1 for the supervisor's first child, then counting up.
    """

    reason: ReloadReason
    changes: tuple[str, ...] = field(default=())
    generation: int = 0


def last_reload() -> ReloadInfo | None:
    """Why the supervisor started this process, or ``None`` when not supervised."""
    reason = os.environ.get(_ipc.ENV_REASON)
    if reason is None:
        return None
    try:
        parsed = ReloadReason(reason)
    except ValueError:
        return None
    try:
        changes = tuple(str(p) for p in json.loads(os.environ.get(_ipc.ENV_CHANGES, "[]")))
    except ValueError:
        changes = ()
    generation = os.environ.get(_ipc.ENV_GENERATION, "0")
    return ReloadInfo(parsed, changes, int(generation) if generation.isdigit() else 0)


def sockets() -> list[socket.socket]:
    """The listening sockets handed to this process, in order (``--socket``, socket activation).

    They come as descriptors 3, 4, ... named by ``LISTEN_FDS`` and ``LISTEN_PID``, the protocol
    systemd uses, so the same program works under aioreload and under a ``.socket`` unit. The
    same objects are returned on every call; an empty list when none were handed to this
    process (``LISTEN_PID`` names another process, or is missing).

    Example::

        import asyncio, aioreload

        async def main() -> None:
            (listener,) = aioreload.sockets()
            server = await asyncio.start_server(handle, sock=listener)
            await aioreload.ready()
            await server.serve_forever()
    """
    global _sockets
    with _lock:
        if _sockets is None:
            _sockets = _inherited_sockets()
        return list(_sockets)


def _inherited_sockets() -> list[socket.socket]:
    count = os.environ.get("LISTEN_FDS", "")
    if not count.isdigit() or os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    found = []
    for fd in range(_LISTEN_FDS_START, _LISTEN_FDS_START + int(count)):
        try:
            sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
        except OSError:
            continue  # not open, or not a socket: the variables lie
        os.set_inheritable(fd, False)  # our own children must not serve on it behind our back
        found.append(sock)
    return found
