"""The seam between the watcher and what notices changes (as hupper's ``IFileMonitor``).

Three sources implement it: inotify read from the event loop (Linux, ``_inotify``), a
stat-based poller (``_poll``: ``poll=True``, network file systems, and the fallback when the OS
refuses watches), and watchfiles' engine (``_native``: FSEvents on macOS,
ReadDirectoryChangesW on Windows). The watcher owns one source at a time; falling back is
"close one source, open another". A source never calls the supervisor: it only hands changed
paths to ``emit``, which puts them on the request stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import anyio.abc

__all__ = ["ChangeSource", "Emit", "WatchLimitError"]

Emit = Callable[[frozenset[str]], None]
"""Receives changed paths that passed the filter; called on the event loop's thread."""


class WatchLimitError(OSError):
    """The OS refused another watch or notification instance (a per-user limit)."""


class ChangeSource(Protocol):
    """What the watcher needs from a change source."""

    async def run(self, emit: Emit, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Arm every watch, call ``task_status.started()``, then report changes until cancelled.

        Scans and walks run in a worker thread; the event loop is never blocked. Every OS
        resource is released when this returns or is cancelled.

        Raises:
            WatchLimitError: the OS refused watches, at start or later (the watcher then opens
                another source).
        """
        ...

    async def settled(self) -> None:
        """Return once no scan or rescan is in progress; what it found has been emitted."""
        ...

    def watch_files(self, files: Mapping[str, int]) -> None:
        """Also watch these files (path → the ``st_mtime_ns`` the child loaded; -1: unknown).

        Their folders are armed first; then each file whose modification time differs from the
        given one is emitted as changed, so an edit made before the watch was in place is not
        lost. May be called before :meth:`run` has armed.
        """
        ...

    @property
    def watch_count(self) -> int:
        """How many OS watches (or polled folders) this source holds now."""
        ...
