"""aioreload: restart a program when its code changes or when it asks, from inside asyncio.

The supervisor side (:class:`Supervisor`, :func:`run`'s supervising half) needs anyio and
watchfiles; the child side (:func:`trigger_reload`, :func:`ready`...) needs only the standard
library. The supervisor names load lazily (PEP 562) so that a child importing ``aioreload``
pays for neither.
"""

from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING, Any

from ._run import run
from ._types import (
    AioreloadError,
    ConfigError,
    EventKind,
    NotSupervisedError,
    ReloadReason,
    SpawnError,
    SupervisorClosedError,
    SupervisorEvent,
    SupervisorState,
)
from .child import (
    ReloadInfo,
    is_supervised,
    last_reload,
    ready,
    report_ready,
    request_reload,
    sockets,
    trigger_reload,
)

if TYPE_CHECKING:
    from ._bus import EventStream
    from ._requests import ReloadRequest
    from ._supervisor import Supervisor

__version__ = "0.1.0"

__all__ = [
    "AioreloadError",
    "ConfigError",
    "EventKind",
    "EventStream",
    "NotSupervisedError",
    "ReloadInfo",
    "ReloadReason",
    "ReloadRequest",
    "SpawnError",
    "Supervisor",
    "SupervisorClosedError",
    "SupervisorEvent",
    "SupervisorState",
    "__version__",
    "is_supervised",
    "last_reload",
    "ready",
    "report_ready",
    "request_reload",
    "run",
    "sockets",
    "trigger_reload",
]

_LAZY = {"EventStream": "_bus", "ReloadRequest": "_requests", "Supervisor": "_supervisor"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aioreload' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"aioreload.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


# A child of aioreload.run() starts reporting its imports as soon as aioreload is imported.
if _os.environ.get("AIORELOAD_TRACK") == "1":
    is_supervised()
