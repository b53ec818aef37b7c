"""Shared vocabulary: reload reasons, lifecycle events and the exception tree.

Exceptions::

    AioreloadError                 base class of everything aioreload raises
    ├── ConfigError                an option, watch path or config key is invalid
    ├── SpawnError                 the child command could not be started
    ├── NotSupervisedError         child-side API used outside a supervisor
    └── SupervisorClosedError      the supervisor ended before the request completed

This module is imported by the child-side API, so it must stay stdlib-only and cheap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import final

__all__ = [
    "AioreloadError",
    "ConfigError",
    "EventKind",
    "NotSupervisedError",
    "ReloadReason",
    "SpawnError",
    "SupervisorClosedError",
    "SupervisorEvent",
    "SupervisorState",
]


class AioreloadError(Exception):
    """Base class of every error aioreload raises."""


class ConfigError(AioreloadError, ValueError):
    """An option, watch path or configuration key is invalid."""


class SpawnError(AioreloadError, OSError):
    """The child command could not be started (missing program, no permission...)."""


class NotSupervisedError(AioreloadError, RuntimeError):
    """A child-side function was called in a process no supervisor started."""


class SupervisorClosedError(AioreloadError, RuntimeError):
    """The supervisor stopped before a pending request could complete."""


@final
class ReloadReason(str, enum.Enum):
    """Why a child was started. The value travels to the child in ``AIORELOAD_REASON``."""

    FIRST_START = "start"
    """The supervisor started its first child."""
    FILE_CHANGE = "change"
    """A watched file changed."""
    TRIGGER = "trigger"
    """Someone asked: ``reload()``, ``request_reload()``, ``trigger_reload()`` or SIGHUP."""
    CRASH = "crash"
    """The previous child exited on its own and restart-on-crash is on."""

    def __str__(self) -> str:
        return self.value


@final
class SupervisorState(str, enum.Enum):
    """Where a supervisor is in its life (``Supervisor.state``)."""

    NEW = "new"
    """Created, not entered yet."""
    STARTING = "starting"
    """Arming the watches or spawning a child."""
    RUNNING = "running"
    """A child is running."""
    STOPPING = "stopping"
    """The child is being stopped for a reload."""
    WAITING = "waiting"
    """No child runs (it exited or could not start); waiting for a change or a trigger."""
    CLOSED = "closed"
    """Finished; nothing runs."""

    def __str__(self) -> str:
        return self.value


@final
class EventKind(str, enum.Enum):
    """The lifecycle transitions a supervisor reports through :meth:`Supervisor.events`."""

    CHANGED = "changed"
    """Watched files changed (``changes`` holds the paths); a reload follows unless vetoed."""
    STARTED = "started"
    """A child was spawned (``pid``, ``reason``, ``changes``, ``elapsed`` = spawn time)."""
    READY = "ready"
    """The child reported readiness (``elapsed`` = seconds since its spawn)."""
    STOPPING = "stopping"
    """The stop signal was sent to the child's process group."""
    STOPPED = "stopped"
    """The supervisor stopped the child (``returncode``, ``elapsed`` = stop time, ``killed``)."""
    EXITED = "exited"
    """The child ended on its own (``returncode``). Its program finished for good when
    ``message`` is ``"finished"`` (the supervisor then ends); otherwise it waits for a change."""
    SKIPPED = "skipped"
    """``before_reload`` returned ``False``: the reload was cancelled, the child keeps running."""
    SPAWN_FAILED = "spawn-failed"
    """A restart could not spawn the command (``message``); the supervisor waits for a change."""
    SPARE_READY = "spare-ready"
    """The warm spare has preloaded its modules (``elapsed``; ``message`` says how many, and its
    memory) and waits to become the next child."""
    RELOAD_FAILED = "reload-failed"
    """An overlapping reload's new child exited, or was not ready in time (``message`` says
    which; ``generation``, ``pid`` and ``returncode`` are its own). It was stopped and the
    previous child keeps serving; the next change or trigger tries again."""

    def __str__(self) -> str:
        return self.value


@final
@dataclass(frozen=True)
class SupervisorEvent:
    """One lifecycle transition of a supervisor.

    Attributes:
        kind: What happened.
        generation: Counts children started by this supervisor, from 1.
        pid: The child's process id, when there is a child.
        reason: Why the reload or start happened.
        changes: Changed paths behind the reload, sorted.
        returncode: The child's exit status (``-N`` for signal N on POSIX).
        elapsed: Seconds the transition took (see :class:`EventKind`).
        killed: ``True`` when the stop had to escalate to SIGKILL.
        message: Human-readable detail for errors.
    """

    kind: EventKind
    generation: int
    pid: int | None = None
    reason: ReloadReason | None = None
    changes: tuple[str, ...] = field(default=())
    returncode: int | None = None
    elapsed: float | None = None
    killed: bool = False
    message: str = ""
